"""Memory-saving multi-scale flows: gradients equal to the standard mode (float64, conditional
too), bytes saved for backward equal to the latents (constant in depth and in the number of
levels), torch.autocast (bf16, CPU) and torch.compile."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from flowkern.check import saved_bytes
from flowkern.nn import MLPEmbedder, MultiScaleFlow, build_glow, build_realnvp


D64 = torch.float64


def _perturb(model: nn.Module, scale: float = 0.05, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _grads(flow, x, c):
    flow.zero_grad()
    xl = x.detach().clone().requires_grad_(True)
    cl = c.detach().clone().requires_grad_(True) if c is not None and c.is_floating_point() else c
    loss = flow.nll_loss(xl, cl)
    loss.backward()
    extra = [xl.grad] + ([cl.grad] if cl is not None and cl.is_floating_point() else [])
    return loss.detach(), extra, [p.grad.clone() for p in flow.parameters()]


def _compare(flow, x, c=None):
    flow.memory_saving = False
    loss_s, in_s, par_s = _grads(flow, x, c)
    flow.memory_saving = True
    loss_m, in_m, par_m = _grads(flow, x, c)
    torch.testing.assert_close(loss_m, loss_s, rtol=0, atol=1e-12)
    for a, b in zip(in_m + par_m, in_s + par_s):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert sum(g.abs().sum() > 0 for g in par_s) == len(par_s)


@pytest.mark.parametrize("kind", ["glow", "glow_classes", "glow_vector_embedder", "realnvp", "realnvp_vector"])
def test_memory_saving_gradients_equal_standard(kind):
    torch.manual_seed(0)
    shape = (2, 4, 4)
    if kind.startswith("glow"):
        flow = build_glow(shape, levels=2, depth=2, hidden=8, num_classes=3 if kind == "glow_classes" else 0,
                          cond_channels=3 if kind == "glow_vector_embedder" else 0)
        if kind == "glow_vector_embedder":  # an embedder whose output needs grad: grad_c flows back through it
            flow.embedder = MLPEmbedder(5, 3, hidden=8)
    else:
        flow = build_realnvp(shape, levels=2, hidden=8, n_checker=2, n_channel=2, n_final=2,
                             cond_channels=2 if kind == "realnvp_vector" else 0)
    flow.double()
    x = torch.rand(6, *shape, dtype=D64)
    c = {"glow_classes": torch.arange(6) % 3, "glow_vector_embedder": torch.randn(6, 5, dtype=D64),
         "realnvp_vector": torch.randn(6, 2, dtype=D64)}.get(kind)
    flow(x, c)  # actnorm init
    _perturb(flow)
    _compare(flow, x, c)


def test_memory_saving_first_call_initialises_like_standard():
    torch.manual_seed(1)
    a = build_glow((2, 4, 4), levels=2, depth=2, hidden=8)
    b = copy.deepcopy(a)
    b.memory_saving = True
    x = torch.rand(16, 2, 4, 4)
    la, lb = a.nll_loss(x), b.nll_loss(x)
    la.backward()
    lb.backward()
    torch.testing.assert_close(lb, la)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pb, pa, msg=n)
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-4, atol=1e-5, msg=n)


def test_inverse_and_inference_ignore_memory_saving():
    flow = build_glow((2, 4, 4), levels=2, depth=1, hidden=8, memory_saving=True)
    x = torch.rand(4, 2, 4, 4)
    flow(x)
    with torch.no_grad():
        latents, _ = flow(x)
    assert all(z.grad_fn is None for z in latents)
    torch.testing.assert_close(flow.inverse(latents)[0], x, rtol=1e-5, atol=1e-5)


def _latent_bytes(flow: MultiScaleFlow, batch: int) -> int:
    return sum(batch * torch.Size(s).numel() * 4 for s in flow.latent_shapes())


@pytest.mark.parametrize("conditional", [False, True])
def test_saved_bytes_are_the_latents_constant_in_depth_and_levels(conditional):
    B, shape = 2, (3, 16, 16)
    x = torch.rand(B, *shape)
    c = torch.arange(B) % 2 if conditional else None
    got = {}
    for mode in (False, True):
        for levels, depth in ((2, 1), (2, 2), (2, 4), (3, 1), (4, 1)):
            torch.manual_seed(0)
            flow = build_glow(shape, levels=levels, depth=depth, hidden=4, num_classes=2 if conditional else 0,
                              memory_saving=mode)
            flow(x, c)
            got[mode, levels, depth] = saved_bytes(lambda: flow.nll_loss(x, c))
            if mode:  # exactly the latents and the (one-hot) condition
                cond_bytes = B * 2 * 4 if conditional else 0
                assert got[mode, levels, depth] == _latent_bytes(flow, B) + cond_bytes == B * x[0].numel() * 4 + cond_bytes
    ms = {v for (m, _, _), v in got.items() if m}
    assert len(ms) == 1, got
    assert got[False, 2, 1] < got[False, 2, 2] < got[False, 2, 4]
    assert got[False, 2, 4] > 40 * got[True, 2, 4]


def test_saved_bytes_realnvp_memory_saving_is_the_latents():
    x = torch.rand(2, 3, 8, 8)
    flow = build_realnvp((3, 8, 8), levels=2, hidden=8, memory_saving=True)
    flow(x)
    assert saved_bytes(lambda: flow.nll_loss(x)) == x.numel() * 4


@pytest.mark.parametrize("memory_saving", [False, True])
@pytest.mark.parametrize("classes", [0, 3])
def test_autocast_bf16_cpu(memory_saving, classes):
    torch.manual_seed(0)
    flow = build_glow((3, 8, 8), levels=2, depth=2, hidden=16, num_classes=classes, memory_saving=memory_saving)
    x = torch.rand(8, 3, 8, 8)
    c = torch.arange(8) % 3 if classes else None
    flow(x, c)
    _perturb(flow, 0.02)
    want = flow.nll_loss(x, c)
    lat32, _ = flow(x, c)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latents, logdet = flow(x, c)
        loss = flow.nll_loss(x, c)
    assert logdet.dtype == torch.float32 and all(z.dtype == torch.float32 for z in latents)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, want, rtol=0.02, atol=0.05)
    for z, z32 in zip(latents, lat32):
        torch.testing.assert_close(z, z32, rtol=0.1, atol=0.1)
    flow.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = flow.nll_loss(x, c)
    loss.backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():  # the main path stays invertible
        back = flow.inverse(lat32, c)[0]
    torch.testing.assert_close(back, x, rtol=0.05, atol=0.05)


def test_autocast_memory_saving_grads_track_standard():
    torch.manual_seed(2)
    flow = build_glow((3, 8, 8), levels=2, depth=2, hidden=16)
    x = torch.rand(8, 3, 8, 8)
    flow(x)
    _perturb(flow, 0.02)
    grads = {}
    for mode in (False, True):
        flow.memory_saving = mode
        flow.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            flow.nll_loss(x).backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in flow.parameters()])
    cos = torch.nn.functional.cosine_similarity(grads[True], grads[False], dim=0)
    assert cos > 0.99, cos


def test_torch_compile_standard_and_memory_saving_match_eager():
    """Traced by dynamo and AOT autograd (backend aot_eager: inductor's code generation would take
    minutes on the test machine; bench_image.py times the inductor build)."""
    torch.manual_seed(7)
    flow = build_glow((2, 4, 4), levels=2, depth=1, hidden=8, num_classes=2)
    x, c = torch.rand(8, 2, 4, 4), torch.arange(8) % 2
    flow(x, c)
    _perturb(flow, 0.02)
    want = flow.nll_loss(x, c)
    want.backward()
    want_grads = [p.grad.clone() for p in flow.parameters()]
    for mode in (False, True):
        flow.memory_saving = mode
        flow.zero_grad()
        torch._dynamo.reset()
        got = torch.compile(lambda v, cc: flow.nll_loss(v, cc), backend="aot_eager")(x, c)
        got.backward()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for g, p in zip(want_grads, flow.parameters()):
            torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("chunk", [1, 2, 4])
def test_chunked_memory_saving_gives_the_same_gradients(chunk):
    """memory_saving_chunk runs the forward and backward on batch chunks: same loss and grads
    (conditional, with a condition that needs grad), same saved bytes; the first (init) call sees
    the whole batch."""
    torch.manual_seed(3)
    flow = build_glow((2, 4, 4), levels=2, depth=2, hidden=8, cond_channels=3).double()
    flow.embedder = MLPEmbedder(5, 3, hidden=8).double()
    x, c = torch.rand(5, 2, 4, 4, dtype=D64), torch.randn(5, 5, dtype=D64)
    fresh = copy.deepcopy(flow)
    fresh.memory_saving, fresh.memory_saving_chunk = True, chunk
    fresh(x, c)  # init on all 5 samples despite the chunking
    flow(x, c)
    for a, b in zip(fresh.state_dict().values(), flow.state_dict().values()):
        torch.testing.assert_close(a, b)
    _perturb(flow)
    flow.memory_saving = True
    loss_m, in_m, par_m = _grads(flow, x, c)
    flow.memory_saving_chunk = chunk
    loss_c, in_c, par_c = _grads(flow, x, c)
    torch.testing.assert_close(loss_c, loss_m, rtol=0, atol=1e-12)
    for a, b in zip(in_c + par_c, in_m + par_m):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    xf, cf = x.float(), c.float()
    flow.float()
    chunked = saved_bytes(lambda: flow.nll_loss(xf, cf))
    flow.memory_saving_chunk = None
    assert chunked == saved_bytes(lambda: flow.nll_loss(xf, cf))
