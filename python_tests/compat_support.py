"""Shared helpers of the compat tests: peer-vs-flowkern comparison."""

from __future__ import annotations

import torch
from torch import nn

# float32 comparisons of whole peer blocks/models (several ops, different but equivalent
# rounding orders): a few ulps of the values involved.
ATOL, RTOL = 2e-5, 2e-5


def mlp(c_in: int, c_out: int, hidden: int = 16) -> nn.Module:
    """Subnet with a non-zero last layer (the blocks are not the identity at init)."""
    net = nn.Sequential(nn.Linear(c_in, hidden), nn.Tanh(), nn.Linear(hidden, c_out))
    nn.init.normal_(net[2].weight, std=0.4)
    nn.init.normal_(net[2].bias, std=0.2)
    return net


def conv_net(c_in: int, c_out: int, hidden: int = 8) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.Tanh(), nn.Conv2d(hidden, c_out, 1))
    nn.init.normal_(net[2].weight, std=0.4)
    nn.init.normal_(net[2].bias, std=0.2)
    return net


def flat(out) -> list[torch.Tensor]:
    """Tensors of a (possibly nested) output, floats only."""
    if torch.is_tensor(out):
        return [out] if out.is_floating_point() else []
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in flat(o)]
    if isinstance(out, float):
        return [torch.tensor(out)]
    return []


def assert_same(peer_out, our_out, atol: float = ATOL, rtol: float = RTOL) -> None:
    ps, os_ = flat(peer_out), flat(our_out)
    assert len(ps) == len(os_), (len(ps), len(os_))
    for p, o in zip(ps, os_):
        torch.testing.assert_close(o.to(p.dtype).expand_as(p) if o.dim() == 0 else o, p, atol=atol, rtol=rtol)


def assert_same_grads(peer: nn.Module, ours: nn.Module, peer_fn, our_fn, inputs: list[torch.Tensor],
                      atol: float = 1e-4, rtol: float = 1e-4, seed: int = 0) -> None:
    """Backprop the same random projection of all outputs through both; compare input and
    parameter gradients (matched by parameter name, which must be identical)."""
    assert [n for n, _ in peer.named_parameters()] == [n for n, _ in ours.named_parameters()]
    grads = []
    for fn, module in ((peer_fn, peer), (our_fn, ours)):
        module.zero_grad()
        xs = [x.detach().clone().requires_grad_(True) for x in inputs]
        outs = flat(fn(*xs))
        g = torch.Generator().manual_seed(seed)
        loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs if o.requires_grad)
        loss.backward()
        grads.append([x.grad for x in xs] + [p.grad for p in module.parameters() if p.requires_grad])
    for gp, go in zip(*grads):
        if gp is None:
            assert go is None or go.abs().max() == 0
            continue
        torch.testing.assert_close(go, gp, atol=atol, rtol=rtol)


def nd_net(rank: int):
    """Subnet constructor for data of ``rank`` spatial dims (0: vectors, 1-3: Conv1d-3d), with a
    non-zero last layer; channel counts of 0 give a module returning zeros of the right shape
    (a layer on 0 channels cannot be built, while the peers' degenerate splits ask for one)."""
    if rank == 0:
        make = mlp
    else:
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[rank]

        def make(c_in: int, c_out: int) -> nn.Module:
            net = nn.Sequential(conv(c_in, 8, 3, padding=1), nn.Tanh(), conv(8, c_out, 1))
            nn.init.normal_(net[2].weight, std=0.4)
            nn.init.normal_(net[2].bias, std=0.2)
            return net

    def build(c_in: int, c_out: int) -> nn.Module:
        if c_in == 0 or c_out == 0:
            return _Zeros(c_out)
        return make(c_in, c_out)

    return build


class _Zeros(nn.Module):
    """(B, c_out, *S) zeros for a (B, c_in, *S) input: a subnet on or to zero channels."""

    def __init__(self, c_out: int):
        super().__init__()
        self.c_out = c_out

    def forward(self, x):
        return x.new_zeros(x.shape[0], self.c_out, *x.shape[2:])
