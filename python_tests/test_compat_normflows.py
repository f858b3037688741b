"""flowkern.compat.normflows against normflows 1.7.3 itself: same numbers, gradients and state-dict keys."""

from __future__ import annotations

import copy

import normflows as nf
import pytest
import torch
from torch import nn

import flowkern.compat.normflows as K
from flowkern.compat import convert

from .compat_support import assert_same, assert_same_grads, conv_net, mlp

SHAPES = {"vector": (7,), "image": (3, 4, 6)}


def _param_map(c_in: int, c_out: int, image: bool) -> nn.Module:
    torch.manual_seed(0)
    return conv_net(c_in, c_out) if image else mlp(c_in, c_out)


def _coupling_block(shape, mode: str, scale_map: str):
    C = shape[0]
    image = len(shape) > 1
    if "checkerboard" in mode:
        c_in, c_out = (C, 2 * C) if image else (C // 2, C)
    elif mode == "channel":  # z1 = first chunk, ceil(C/2) channels
        c_in, c_out = (C + 1) // 2, 2 * (C // 2)
    else:
        c_in, c_out = C // 2, 2 * ((C + 1) // 2)
    pm = _param_map(c_in, c_out, image)
    return nf.flows.AffineCouplingBlock(pm, True, scale_map, mode), \
        K.AffineCouplingBlock(copy.deepcopy(pm), True, scale_map, mode)


def _check_flow(peer, ours, x, atol=2e-5):
    assert list(peer.state_dict()) == list(ours.state_dict())
    zp, ldp = peer(x)
    zo, ldo = ours(x)
    assert (zp - x).abs().max() > 1e-2
    assert_same((zp, ldp), (zo, ldo), atol=atol, rtol=atol)
    assert_same(peer.inverse(zp), ours.inverse(zo), atol=atol, rtol=atol)
    torch.testing.assert_close(ours.inverse(zo)[0], x, atol=1e-5, rtol=1e-5)
    assert_same_grads(peer, ours, peer, ours, [x])
    assert_same_grads(peer, ours, peer.inverse, ours.inverse, [zp.detach()])


@pytest.mark.parametrize("scale_map", ["exp", "sigmoid", "sigmoid_inv"])
@pytest.mark.parametrize("mode", ["channel", "channel_inv", "checkerboard", "checkerboard_inv"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_affine_coupling_block_matches(shape, mode, scale_map):
    shape = SHAPES[shape]
    if "checkerboard" in mode and len(shape) == 1:
        shape = (8,)  # checkerboard needs an even last dimension
    peer, ours = _coupling_block(shape, mode, scale_map)
    _check_flow(peer, ours, torch.randn(5, *shape, generator=torch.Generator().manual_seed(1)))


def test_affine_coupling_pair_and_additive():
    pm = _param_map(3, 8, False)
    peer, ours = nf.flows.AffineCoupling(pm, True, "exp"), K.AffineCoupling(copy.deepcopy(pm), True, "exp")
    z = [torch.randn(4, 3), torch.randn(4, 4)]
    assert_same(peer(z), ours(z))
    assert_same(peer.inverse(z), ours.inverse(z))
    add = _param_map(3, 4, False)
    assert_same(nf.flows.AffineCoupling(add, False)(z), K.AffineCoupling(copy.deepcopy(add), False)(z))


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_masked_affine_flow_matches(shape):
    n = torch.Size(shape).numel()
    b = (torch.arange(n) % 3 == 0).float().reshape(shape)
    torch.manual_seed(0)
    s = nn.Sequential(nn.Flatten(), mlp(n, n), nn.Tanh(), nn.Unflatten(1, shape))
    t = nn.Sequential(nn.Flatten(), mlp(n, n), nn.Unflatten(1, shape))
    peer = nf.flows.MaskedAffineFlow(b, t, s)
    ours = K.MaskedAffineFlow(b, copy.deepcopy(t), copy.deepcopy(s))
    _check_flow(peer, ours, torch.randn(5, *shape))
    assert ours.fusable


MASKS = {
    "all-zeros": lambda n: torch.zeros(n),
    "all-ones": lambda n: torch.ones(n),
    "core-test": lambda n: torch.tensor([float(j) if j % 2 == 1 else 0.0 for j in range(n)]),  # 0, 1, 0, 3, ...
    "fractional": lambda n: torch.linspace(0, 1, n),
    "negative": lambda n: torch.where(torch.arange(n) % 2 == 0, -1.0, 1.0),
    "binary-int": lambda n: (torch.arange(n) % 3 == 0).long(),
}


@pytest.mark.parametrize("shape", [(7,), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("mask", list(MASKS))
def test_masked_affine_flow_any_mask_gives_normflows_numbers(mask, shape):
    """Every mask normflows accepts: the fused op for binary splits, normflows' formula otherwise."""
    n = torch.Size(shape).numel()
    b = MASKS[mask](n).reshape(shape)
    torch.manual_seed(0)
    s = nn.Sequential(nn.Flatten(), mlp(n, n), nn.Tanh(), nn.Unflatten(1, shape))
    t = nn.Sequential(nn.Flatten(), mlp(n, n), nn.Unflatten(1, shape))
    peer = nf.flows.MaskedAffineFlow(b, t, s)
    ours = K.MaskedAffineFlow(b, copy.deepcopy(t), copy.deepcopy(s))
    assert ours.fusable == (mask == "binary-int")
    assert list(peer.state_dict()) == list(ours.state_dict())
    z = torch.randn(4, *shape, generator=torch.Generator().manual_seed(2))
    assert_same(peer(z), ours(z))
    assert_same(peer.inverse(z), ours.inverse(z))
    assert_same_grads(peer, ours, peer, ours, [z])
    assert_same_grads(peer, ours, peer.inverse, ours.inverse, [z])
    if mask == "all-ones":  # the identity, with a zero log-det
        torch.testing.assert_close(ours(z)[0], z)
        assert ours(z)[1].abs().max() == 0


def test_masked_affine_flow_without_nets_and_after_loading_another_mask():
    b = (torch.arange(5) % 2).float()
    peer, ours = nf.flows.MaskedAffineFlow(b), K.MaskedAffineFlow(b)
    z = torch.randn(3, 5)
    assert_same(peer(z), ours(z))
    # loading a general mask into a fused layer switches it to the general formula
    other = K.MaskedAffineFlow(torch.tensor([0.0, 2.0, 0.0, 1.0, 3.0]), mlp(5, 5), mlp(5, 5))
    peer2 = nf.flows.MaskedAffineFlow(torch.tensor([0.0, 2.0, 0.0, 1.0, 3.0]), copy.deepcopy(other.t),
                                      copy.deepcopy(other.s))
    fused = K.MaskedAffineFlow(b, copy.deepcopy(other.t), copy.deepcopy(other.s))
    assert fused.fusable
    fused.load_state_dict(other.state_dict())
    assert not fused.fusable
    assert_same(peer2(z), fused(z))


def test_masked_affine_flow_nonfinite_coefficients_become_nan_like_normflows():
    class Inf(nn.Module):
        def forward(self, x):
            return torch.where(x > 0, torch.inf, 0.0)

    b = torch.tensor([0.0, 2.0, 0.0])
    z = torch.tensor([[1.0, 1.0, -1.0]])
    yp, _ = nf.flows.MaskedAffineFlow(b, Inf())(z)
    yo, _ = K.MaskedAffineFlow(b, Inf())(z)
    torch.testing.assert_close(yo, yp, equal_nan=True)
    assert torch.isnan(yo).any()


def test_reverse_alpha_div_matches_normflows():
    peer = _glow_model()
    x = torch.randn(16, 6)
    peer.log_prob(x)  # actnorm init
    target = copy.deepcopy(peer)  # a target near q, so the importance weights are finite
    with torch.no_grad():
        for p in target.parameters():
            p.add_(0.05 * torch.randn_like(p))
    peer.p = target
    ours = convert(peer)
    for kwargs in ({}, {"alpha": 0.5}, {"alpha": 2.0}, {"alpha": 0.7, "dreg": True}):
        torch.manual_seed(5)
        lp = peer.reverse_alpha_div(9, **kwargs)
        torch.manual_seed(5)
        lo = ours.reverse_alpha_div(9, **kwargs)
        assert torch.isfinite(lp)
        torch.testing.assert_close(lo, lp, atol=1e-4, rtol=1e-4)


def test_actnorm_permute_and_1x1conv_match():
    x = 1 + 2 * torch.randn(6, 4, 3, 3)
    for make in (lambda m: m.ActNorm((4, 1, 1)), lambda m: m.Permute(4), lambda m: m.Permute(5, mode="swap"),
                 lambda m: m.Invertible1x1Conv(4), lambda m: m.Invertible1x1Conv(4, use_lu=True)):
        torch.manual_seed(3)
        peer = make(nf.flows)
        torch.manual_seed(3)
        ours = make(K)
        assert list(peer.state_dict()) == list(ours.state_dict())
        inp = torch.randn(6, 5, 3, 3) if getattr(ours, "num_channels", 4) == 5 else x
        assert_same(peer(inp), ours(inp))
        assert_same(peer.inverse(inp), ours.inverse(inp))


def _glow_model(dim: int = 6, n_blocks: int = 3):
    torch.manual_seed(0)
    flows = []
    for i in range(n_blocks):
        flows.append(nf.flows.ActNorm(dim))
        flows.append(nf.flows.AffineCouplingBlock(mlp(dim // 2, dim), True, ["exp", "sigmoid"][i % 2]))
        flows.append(nf.flows.Permute(dim))
    flows.append(nf.flows.MaskedAffineFlow((torch.arange(dim) % 2).float(), mlp(dim, dim), mlp(dim, dim)))
    return nf.NormalizingFlow(nf.distributions.DiagGaussian(dim, trainable=False), flows)


def test_normalizing_flow_converted_end_to_end():
    peer = _glow_model()
    x = 0.5 + 2 * torch.randn(32, 6, generator=torch.Generator().manual_seed(1))
    peer.log_prob(x)  # data-dependent ActNorm init (inverse direction)
    ours = convert(peer)
    assert isinstance(ours, K.NormalizingFlow) and isinstance(ours.flows[1], K.AffineCouplingBlock)
    assert ours._foldable(0, 1)  # the ActNorm runs inside the coupling op
    assert list(peer.state_dict()) == list(ours.state_dict())
    assert_same(peer.log_prob(x), ours.log_prob(x), atol=5e-5, rtol=5e-5)
    assert_same(peer.forward_and_log_det(x), ours.forward_and_log_det(x), atol=5e-5, rtol=5e-5)
    assert_same_grads(peer, ours, peer.log_prob, ours.log_prob, [x])
    # round trip: this model is ill-conditioned (1/sigmoid scales), so bound it by the peer's own error
    peer_err = (peer.forward(peer.inverse(x)) - x).abs().max()
    assert (ours.forward(ours.inverse(x)) - x).abs().max() <= max(2 * peer_err, 1e-4)


def test_compile_converted_normalizing_flow():
    peer = _glow_model(n_blocks=2)
    x = torch.randn(8, 6)
    peer.log_prob(x)
    ours = convert(peer)
    compiled = torch.compile(ours.log_prob, fullgraph=True, backend="aot_eager")
    assert_same(peer.log_prob(x), compiled(x), atol=5e-5, rtol=5e-5)


EDGE_CASES = {
    "block-1-channel": lambda L: (L.AffineCouplingBlock(mlp(1, 0)), torch.randn(3, 1)),
    "block-2-channels": lambda L: (L.AffineCouplingBlock(mlp(1, 2)), torch.randn(3, 2)),
    "block-3-channel_inv": lambda L: (L.AffineCouplingBlock(mlp(1, 4), split_mode="channel_inv"), torch.randn(3, 3)),
    "block-unknown-mode": lambda L: (L.AffineCouplingBlock(mlp(2, 4), split_mode="foo"), torch.randn(3, 4)),
    "block-unknown-scale-map": lambda L: (L.AffineCouplingBlock(mlp(2, 4), scale_map="foo"), torch.randn(3, 4)),
    "block-checkerboard-odd-width": lambda L: (L.AffineCouplingBlock(conv_net(2, 4), split_mode="checkerboard"),
                                               torch.randn(3, 2, 3, 5)),
    "block-checkerboard-vector": lambda L: (L.AffineCouplingBlock(mlp(3, 6), split_mode="checkerboard_inv"),
                                            torch.randn(3, 6)),
    "block-additive-channel-odd": lambda L: (L.AffineCouplingBlock(mlp(3, 2), scale=False), torch.randn(3, 5)),
    "block-additive-checkerboard": lambda L: (L.AffineCouplingBlock(mlp(3, 3), scale=False,
                                                                    split_mode="checkerboard"), torch.randn(3, 6)),
    "block-1d-sequence": lambda L: (L.AffineCouplingBlock(nn.Conv1d(2, 2, 1)), torch.randn(3, 3, 5)),
    "actnorm-1-channel": lambda L: (L.ActNorm((1,)), torch.randn(4, 1)),
    "actnorm-per-element": lambda L: (L.ActNorm((3, 2, 2)), torch.randn(4, 3, 2, 2)),
    "affine-const-shift-only": lambda L: (L.AffineConstFlow((3,), scale=False), torch.randn(4, 3)),
    "permute-1": lambda L: (L.Permute(1), torch.randn(4, 1)),
    "permute-swap-odd": lambda L: (L.Permute(5, mode="swap"), torch.randn(4, 5)),
    "permute-unknown-mode": lambda L: (L.Permute(5, mode="foo"), torch.randn(4, 5)),
    "conv1x1-1-channel": lambda L: (L.Invertible1x1Conv(1), torch.randn(4, 1, 2, 2)),
    "split-unknown-mode": lambda L: (L.Split("foo"), torch.randn(4, 4)),
    "masked-no-nets": lambda L: (L.MaskedAffineFlow(torch.tensor([1.0, 0.0])), torch.randn(4, 2)),
    "masked-float64": lambda L: (L.MaskedAffineFlow(torch.tensor([1.0, 0.0, 1.0]).double(), mlp(3, 3).double(),
                                                    mlp(3, 3).double()), torch.randn(4, 3).double()),
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_edge_inputs_give_normflows_numbers_or_its_error(case):
    """Odd and single channels, every split mode, unknown modes: normflows' numbers where it
    gives numbers, and an exception of normflows' type (when calling, as there) where it fails."""
    outcomes = []
    for lib in (nf.flows, K):
        torch.manual_seed(0)
        flow, x = EDGE_CASES[case](lib)
        try:
            y, log_det = flow(x)
            outcomes.append((y, log_det, *flow.inverse(y)))
        except Exception as exc:  # noqa: BLE001 - comparing with the peer's exception
            outcomes.append(exc)
    peer, ours = outcomes
    if isinstance(peer, Exception):
        assert isinstance(ours, type(peer)), (peer, ours)
    else:
        assert not isinstance(ours, Exception), ours
        assert_same(peer, ours)
