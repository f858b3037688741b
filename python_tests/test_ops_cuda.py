"""The CUDA backend: registration checks that run anywhere, reference comparison on a GPU."""

from __future__ import annotations

import importlib

import pytest
import torch

import flowkern
from flowkern.backends import BackendUnavailableError, compiled
from flowkern.ops import CouplingConfig, coupling_forward_ref, coupling_inverse_ref

from .helpers import SCALES, TOL, make_case, upcast

OPS = ("coupling", "coupling.packed", "coupling_backward", "coupling_backward.packed")
HAS_EXT = compiled.CPP_REASON is None and torch.version.cuda is not None
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
EXTRA = {"exp": {}, "tanh": {"clamp": 1.7}, "atan": {"clamp": 2.0, "atan_k": 0.6},
         "sigmoid": {"eps": 1e-3}}


@pytest.mark.skipif(not HAS_EXT, reason=f"compiled extension unavailable: {compiled.CPP_REASON}")
def test_cuda_extension_imports_and_registers_every_op():
    importlib.import_module("flowkern._C_cuda")
    for op in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"flowkern::{op}", "CUDA"), op


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_forcing_cuda_without_gpu_raises_with_the_reason():
    x, s_raw, t, a, b, kw = make_case()
    with pytest.raises(BackendUnavailableError, match="CUDA tensors only"):
        flowkern.coupling_forward(x, s_raw, t, a, b, backend="cuda", **kw)
    reason = flowkern.backends.available("cuda")["cuda"]
    assert reason is not None and ("GPU" in reason or "unavailable" in reason)


# ---- on a GPU: the same cases as the CPU backend's tests ----------------------------------
def _opts(kw, scale):
    return dict(kw, scale=scale, **EXTRA[scale])


def _cfg(opts):
    return CouplingConfig(opts["split"], opts["passive"], opts["scale"],
                          **{k: opts[k] for k in ("clamp", "atan_k", "eps") if k in opts})


@needs_gpu
@pytest.mark.parametrize("shape", [(3, 7, (), 3), (5, 11, (13,), 4), (2, 5, (3, 7), 2),
                                   (600, 8, (), 4), (2, 16, (1300,), 8)], ids=str)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("passive", ["first", "second"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16],
                         ids=str)
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_forward_inverse_match_reference(shape, scale, passive, dtype, backend):
    """The CUDA kernels and the Triton kernels on CUDA tensors, against the fp64 reference."""
    B, C, spatial, split = shape
    layout = ("halves", "interleaved", "contiguous")[(len(spatial) + C) % 3]
    x, s_raw, t, a, b, kw = make_case(B, C, spatial, split, passive, dtype=dtype, layout=layout,
                                      device="cuda")
    opts = _opts(kw, scale)
    cfg = _cfg(opts)
    y, logdet, err = flowkern.coupling_forward(x, s_raw, t, a, b, check=True, backend=backend, **opts)
    y_ref, ld_ref = coupling_forward_ref(*upcast(x, s_raw, t, a, b), cfg)
    atol, rtol = TOL[dtype] if dtype != torch.float64 else (1e-9, 1e-9)
    torch.testing.assert_close(y.double(), y_ref, atol=atol, rtol=rtol)
    ld_tol = 1e-9 if dtype == torch.float64 else 2e-5 * x[0].numel()
    torch.testing.assert_close(logdet.double(), ld_ref, atol=ld_tol, rtol=1e-5)
    assert err.shape == (B,) and float(err.max()) < 8 * atol * max(1.0, float(y_ref.abs().max()))
    x2, ld_inv = flowkern.coupling_inverse(y, s_raw, t, a, b, backend=backend, **opts)
    x_ref, ld_inv_ref = coupling_inverse_ref(*upcast(y, s_raw, t, a, b), cfg)
    torch.testing.assert_close(x2.double(), x_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(ld_inv.double(), ld_inv_ref, atol=ld_tol, rtol=1e-5)


def _loss(out, logdet):
    g = torch.Generator().manual_seed(11)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out)
    wl = torch.randn(logdet.shape, generator=g, dtype=torch.float64).to(logdet)
    return (out * w).sum() + (logdet * wl).sum()


@needs_gpu
@pytest.mark.parametrize("direction", ["fwd", "inv"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("passive", ["first", "second"])
@pytest.mark.parametrize("spatial", [(), (5,), (2, 9)], ids=str)
@pytest.mark.parametrize("actnorm", [True, False])
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_backward_matches_reference_autograd(direction, scale, passive, spatial, actnorm, backend):
    x, s_raw, t, a, b, kw = make_case(6, 9, spatial, 4, passive, dtype=torch.float64,
                                      layout="interleaved", actnorm=actnorm, device="cuda")
    opts = _opts(kw, scale)
    h = s_raw._base

    def grads(backend):
        leaves = [v.detach().clone().requires_grad_(True) for v in (x, h, a, b) if v is not None]
        xx, hh = leaves[0], leaves[1]
        ab = leaves[2:] if actnorm else [None, None]
        args = (xx, hh[:, 0::2], hh[:, 1::2], *ab)
        if backend == "reference":
            fn = coupling_forward_ref if direction == "fwd" else coupling_inverse_ref
            out, logdet = fn(*args, _cfg(opts))[:2]
        else:
            fn = flowkern.coupling_forward if direction == "fwd" else flowkern.coupling_inverse
            out, logdet = fn(*args, backend=backend, **opts)[:2]
        return torch.autograd.grad(_loss(out, logdet), leaves)

    for g, w in zip(grads(backend), grads("reference")):
        torch.testing.assert_close(g, w, atol=1e-9, rtol=1e-9)


@needs_gpu
@pytest.mark.parametrize("direction", ["fwd", "inv"])
def test_gradcheck_float64(direction):
    x, s_raw, t, a, b, kw = make_case(3, 6, (4,), 2, dtype=torch.float64, layout="contiguous",
                                      requires_grad=True, device="cuda")
    opts = _opts(kw, "atan")
    fn = flowkern.coupling_forward if direction == "fwd" else flowkern.coupling_inverse

    def f(*args):
        return fn(*args, backend="cuda", **opts)[:2]

    assert torch.autograd.gradcheck(f, (x, s_raw, t, a, b))


@needs_gpu
def test_results_are_deterministic():
    x, s_raw, t, a, b, kw = make_case(4096, 96, (), dtype=torch.float32, requires_grad=True,
                                      device="cuda")

    def run():
        y, logdet = flowkern.coupling_forward(x, s_raw, t, a, b, backend="cuda", **kw)
        return (logdet, *torch.autograd.grad(_loss(y, logdet), (x, a, b)))

    for u, v in zip(run(), run()):
        assert torch.equal(u, v)


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck_on_cuda(dtype):
    """Schema, fake kernel, autograd registration and dispatch of every compiled overload (and of
    the Triton op) on CUDA tensors."""
    from flowkern.backends.triton.ops import coupling_backward_triton, coupling_triton

    x, s_raw, t, a, b, kw = make_case(3, 7, (5,), 3, dtype=dtype, layout="interleaved", device="cuda")
    h = torch.cat([s_raw, t], 1)
    cfg = (kw["split"], kw["passive"], "atan", 1.5, 0.6, 0.0)
    g = torch.randn_like(x)
    gl = torch.randn(3, dtype=torch.float64 if dtype == torch.float64 else torch.float32, device="cuda")
    ops = torch.ops.flowkern
    for inverse in (False, True):
        torch.library.opcheck(ops.coupling.default, (x, s_raw, t, a, b, *cfg, inverse, not inverse))
        torch.library.opcheck(ops.coupling.packed, (x, h, a, b, *cfg, inverse, not inverse))
        torch.library.opcheck(ops.coupling_backward.default, (g, gl, x, s_raw, t, a, b, *cfg, inverse))
        torch.library.opcheck(ops.coupling_backward.packed, (g, gl, x, h, a, b, *cfg, inverse))
        torch.library.opcheck(coupling_triton, (x, s_raw, t, a, b, *cfg, inverse, not inverse))
        torch.library.opcheck(coupling_backward_triton, (g, gl, x, s_raw, t, a, b, *cfg, inverse))
        xg = x.clone().requires_grad_(True)
        torch.library.opcheck(ops.coupling.default, (xg, s_raw, t, a, b, *cfg, inverse, False))
