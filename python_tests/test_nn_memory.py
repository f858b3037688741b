"""Memory-saving flows: gradients equal to the standard mode, saved bytes constant in depth."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import flowkern
from flowkern.check import saved_bytes
from flowkern.nn import (
    ActNorm,
    ActNormCoupling,
    ConditionalAffineCoupling,
    ConditionalFlow,
    Flow,
    InvConv1x1,
    MLPEmbedder,
    Reverse,
    build_flow,
)


def _grads(model: nn.Module, *inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    model.zero_grad()
    leaves = [v.detach().clone().requires_grad_(True) for v in inputs]
    loss = model.nll_loss(*leaves)
    loss.backward()
    return loss.detach(), [v.grad for v in leaves], [p.grad.clone() for p in model.parameters()]


def _compare(model: nn.Module, *inputs: torch.Tensor) -> None:
    model.memory_saving = False
    loss_s, in_s, par_s = _grads(model, *inputs)
    model.memory_saving = True
    loss_m, in_m, par_m = _grads(model, *inputs)
    torch.testing.assert_close(loss_m, loss_s, rtol=0, atol=1e-12)
    for a, b in zip(in_m + par_m, in_s + par_s):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert all(g.abs().sum() > 0 for g in par_s)


def test_gradients_equal_standard_build_flow():
    torch.manual_seed(0)
    flow = build_flow(7, 3, 16, depth=1).double()
    x = torch.randn(9, 7, dtype=torch.float64) * 2
    flow(x)  # actnorm init
    _compare(flow, x)


def test_gradients_equal_standard_conditional_with_embedder():
    torch.manual_seed(1)
    flow = build_flow(6, 2, 16, depth=1, embedder=MLPEmbedder(5, 3, hidden=8)).double()
    x, c = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, 5, dtype=torch.float64)
    flow(x, c)
    _compare(flow, x, c)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_gradients_equal_standard_mixed_image_layers(backend):
    """auto: cpu, whose couplings call the op's backward directly; reference: the re-run path."""
    if backend == "reference":
        with flowkern.backends.use("reference"):
            return test_gradients_equal_standard_mixed_image_layers("auto")
    torch.manual_seed(2)
    conv = lambda i, o: nn.Sequential(nn.Conv2d(i, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, o, 3, padding=1))  # noqa
    blocks = [
        ActNorm(4),
        ActNormCoupling(4, conv(2, 4), scale="atan"),
        InvConv1x1(4),
        ConditionalAffineCoupling(4, 2, conv(4, 4), passive="second", scale="exp"),
        Reverse(4),
        ActNormCoupling(4, conv(2, 4), scale="sigmoid", eps=1e-4),
    ]
    flow = ConditionalFlow(blocks).double()
    x, c = torch.randn(3, 4, 3, 5, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    flow(x, c)
    _compare(flow, x, c)


def test_first_forward_initialises_actnorm_identically():
    torch.manual_seed(3)
    a = build_flow(5, 2, 16, depth=1)
    b = copy.deepcopy(a)
    b.memory_saving = True
    x = torch.randn(32, 5) * 3 + 1
    la, lb = a.nll_loss(x), b.nll_loss(x)
    la.backward()
    lb.backward()
    torch.testing.assert_close(lb, la)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa)
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_optimizer_steps_match():
    torch.manual_seed(4)
    a = build_flow(4, 2, 16, depth=1).double()
    x = torch.randn(16, 4, dtype=torch.float64)
    a(x)
    b = copy.deepcopy(a)
    b.memory_saving = True
    for model in (a, b):
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(3):
            opt.zero_grad()
            model.nll_loss(x).backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("conditional", [False, True])
def test_saved_bytes_constant_in_depth(conditional):
    x, c = torch.randn(64, 8), torch.randn(64, 3)
    got = {}
    for mode in (False, True):
        for depth in (2, 4, 8):
            torch.manual_seed(0)
            flow = build_flow(8, depth, 32, depth=1, cond_channels=3 if conditional else 0, memory_saving=mode)
            flow(x, c if conditional else None)
            got[mode, depth] = saved_bytes(lambda: flow.nll_loss(x, c if conditional else None))
    assert got[True, 2] == got[True, 4] == got[True, 8]
    assert got[False, 2] < got[False, 4] < got[False, 8]
    assert got[True, 8] * 20 < got[False, 8]


def test_inference_and_inverse_ignore_memory_saving():
    torch.manual_seed(5)
    flow = build_flow(4, 2, 8, depth=1, memory_saving=True)
    x = torch.randn(8, 4)
    with torch.no_grad():
        z, ld = flow(x)
    assert z.grad_fn is None
    x2, _ = flow.inverse(z)
    torch.testing.assert_close(x2, x, rtol=1e-5, atol=1e-5)


def test_empty_flow_is_identity():
    flow = Flow([], memory_saving=True)
    x = torch.randn(3, 2, requires_grad=True)
    z, ld = flow(x)
    assert torch.equal(z, x) and torch.equal(ld, torch.zeros(3))


def test_memory_saving_flow_under_torch_compile_matches_eager():
    """torch.compile (not fullgraph: the O(1)-memory autograd Function stays a graph break) gives
    the eager loss and grads."""
    torch.manual_seed(7)
    flow = build_flow(6, 2, 16, depth=1, memory_saving=True)
    x = torch.randn(32, 6) * 2 - 1
    flow.nll_loss(x)  # data-dependent init
    torch._dynamo.reset()
    got = torch.compile(lambda v: flow.nll_loss(v))(x)
    got.backward()
    grads = [p.grad.clone() for p in flow.parameters()]
    flow.zero_grad()
    want = flow.nll_loss(x)
    want.backward()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    for g, p in zip(grads, flow.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-5, atol=1e-6)


def test_trainable_parameters_match_parameters_order():
    """The fast walk the memory-saving step uses returns ``parameters()``'s trainable ones, in
    its order, each once: frozen ones left out, shared submodules and None slots handled."""
    from flowkern.nn.base import trainable_parameters

    torch.manual_seed(8)
    flow = build_flow(6, 3, 16, depth=1, embedder=MLPEmbedder(5, 3, hidden=8))
    shared = nn.Linear(3, 3)
    holder = nn.Module()
    holder.first, holder.empty, holder.again, holder.flow = shared, None, shared, flow
    next(iter(flow.parameters())).requires_grad_(False)
    want = [p for p in holder.parameters() if p.requires_grad]
    got = trainable_parameters(holder)
    assert len(got) == len(want) and all(a is b for a, b in zip(got, want))
    blocks = list(flow.blocks)
    want_blocks = list(dict.fromkeys(p for b in blocks for p in b.parameters() if p.requires_grad))
    got_blocks = trainable_parameters(*blocks)
    assert len(got_blocks) == len(want_blocks) and all(a is b for a, b in zip(got_blocks, want_blocks))


def test_param_grads_sum_in_place_without_touching_autograds_tensors():
    from flowkern.nn.base import ParamGrads

    p = nn.Parameter(torch.zeros(3))
    g1, g2, g3 = torch.ones(3), torch.full((3,), 2.0), torch.full((3,), 4.0)
    grads = ParamGrads()
    grads.add(p, None)
    assert id(p) not in grads
    grads.add(p, g1)
    assert grads[id(p)] is g1
    grads.add(p, g2)  # the first sum allocates: g1 (autograd's tensor) is left as it was
    summed = grads[id(p)]
    assert summed is not g1 and torch.equal(g1, torch.ones(3))
    grads.add(p, g3)  # later sums go into the buffer ParamGrads owns
    assert grads[id(p)] is summed
    assert torch.equal(summed, torch.full((3,), 7.0))
    assert torch.equal(g2, torch.full((3,), 2.0)) and torch.equal(g3, torch.full((3,), 4.0))
    h = nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))  # a wider grad is not added in place
    grads.add(h, torch.ones(2, dtype=torch.bfloat16))
    grads.add(h, torch.ones(2, dtype=torch.bfloat16))
    grads.add(h, torch.ones(2, dtype=torch.float32))
    assert grads[id(h)].dtype == torch.float32 and torch.equal(grads[id(h)], torch.full((2,), 3.0))
