"""Triton backend vs the reference, run under TRITON_INTERPRET=1 on CPU.

Not collected by the normal suite (the name has no ``test_`` prefix): the interpreter must
be switched on before triton is first imported, so ``test_ops_triton.py`` runs this file
in a fresh ``pytest`` subprocess with the variable set.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("run by test_ops_triton.py with TRITON_INTERPRET=1", allow_module_level=True)

import flowkern
from flowkern.ops import CouplingConfig, coupling_forward_ref, coupling_inverse_ref

from .helpers import SCALES, TOL, make_case, upcast

EXTRA = {"exp": {}, "tanh": {"clamp": 1.7}, "atan": {"clamp": 2.0, "atan_k": 0.6},
         "sigmoid": {"eps": 1e-3}}
# (B, C, spatial, split): vectors, odd / prime sizes, 2-d spatial, several tiles + masked tails
SHAPES = [(3, 7, (), 3), (5, 11, (13,), 4), (2, 5, (3, 7), 2), (600, 7, (), 5), (2, 3, (1300,), 1)]


def _opts(kw, scale, **extra):
    return dict(kw, scale=scale, **{**EXTRA[scale], **extra})


def _cfg(opts):
    return CouplingConfig(opts["split"], opts["passive"], opts["scale"], **{
        k: opts[k] for k in ("clamp", "atan_k", "eps") if k in opts})


def test_triton_was_imported_with_the_interpreter():
    import triton  # noqa: F401  (the point: it is importable here, interpreter on)

    assert "triton" in sys.modules and flowkern.backends.available("cpu")["triton"] is None


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("passive", ["first", "second"])
def test_forward_inverse_match_reference(shape, scale, passive):
    B, C, spatial, split = shape
    layout = ("halves", "interleaved", "contiguous")[(len(spatial) + C) % 3]
    x, s_raw, t, a, b, kw = make_case(B, C, spatial, split, passive, layout=layout,
                                      actnorm=C != 5)
    opts = _opts(kw, scale)
    cfg = _cfg(opts)
    y, logdet, err = flowkern.coupling_forward(x, s_raw, t, a, b, check=True, backend="triton",
                                               **opts)
    y_ref, ld_ref, _ = coupling_forward_ref(*upcast(x, s_raw, t, a, b), cfg, check=True)
    atol, rtol = TOL[torch.float32]
    torch.testing.assert_close(y, y_ref.float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(logdet, ld_ref.float(), atol=atol * x[0].numel(), rtol=rtol)
    assert err.shape == (B,) and err.dtype == torch.float32 and float(err.max()) < 1e-4
    x2, ld_inv = flowkern.coupling_inverse(y, s_raw, t, a, b, backend="triton", **opts)
    x_ref, ld_inv_ref = coupling_inverse_ref(*upcast(y, s_raw, t, a, b), cfg)
    torch.testing.assert_close(x2, x_ref.float(), atol=atol, rtol=rtol)
    torch.testing.assert_close(ld_inv, ld_inv_ref.float(), atol=atol * x[0].numel(), rtol=rtol)
    torch.testing.assert_close(x2, x, atol=1e-4, rtol=1e-4)


def test_check_error_detects_a_lossy_round_trip():
    # exp scale with very negative s_raw: z e^s vanishes next to t in y, so x is lost.
    x, s_raw, t, a, b, kw = make_case(2, 6, (4,), actnorm=False)
    s_small = s_raw.detach() - 30.0
    _, _, err = flowkern.coupling_forward(x, s_small, t, check=True, backend="triton",
                                          scale="exp", **kw)
    _, _, err_ref = coupling_forward_ref(x, s_small, t, None, None,
                                         CouplingConfig(kw["split"], kw["passive"], "exp"), check=True)
    assert float(err.min()) > 0.1 and float(err_ref.min()) > 0.1
    _, _, err_ok = flowkern.coupling_forward(x, s_raw, t, check=True, backend="triton",
                                             scale="exp", **kw)
    assert float(err_ok.max()) < 1e-5


def _loss(out, logdet, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    wl = torch.randn(logdet.shape, generator=g, dtype=torch.float64).to(logdet.dtype)
    return (out * w).sum() + (logdet * wl).sum()


def _grads(direction, backend, x, s_raw, t, a, b, opts):
    leaves = [v for v in (x, s_raw, t, a, b) if v is not None]
    if backend == "reference":
        cfg = _cfg(opts)
        fn = coupling_forward_ref if direction == "fwd" else coupling_inverse_ref
        out, logdet = fn(x, s_raw, t, a, b, cfg)[:2]
    else:
        fn = flowkern.coupling_forward if direction == "fwd" else flowkern.coupling_inverse
        out, logdet = fn(x, s_raw, t, a, b, backend=backend, **opts)[:2]
    return torch.autograd.grad(_loss(out, logdet, 7), leaves)


@pytest.mark.parametrize("direction", ["fwd", "inv"])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("passive", ["first", "second"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_backward_matches_reference_autograd(direction, scale, passive, dtype):
    x, s_raw, t, a, b, kw = make_case(3, 7, (5,), 3, passive, dtype=dtype, layout="contiguous")
    opts = _opts(kw, scale)

    def leaves():
        return [None if v is None else v.detach().clone().requires_grad_(True)
                for v in (x, s_raw, t, a, b)]

    got = _grads(direction, "triton", *leaves(), opts)
    want = _grads(direction, "reference", *[None if v is None else v.double() for v in leaves()],
                  opts)
    atol, rtol = (1e-10, 1e-10) if dtype == torch.float64 else (1e-4, 1e-4)
    for name, g, w in zip(("x", "s_raw", "t", "a", "b"), got, want):
        assert g.dtype == dtype, name
        torch.testing.assert_close(g.double(), w, atol=atol, rtol=rtol, msg=name)


@pytest.mark.parametrize("direction", ["fwd", "inv"])
@pytest.mark.parametrize("scale", SCALES)
def test_gradcheck_float64_strided_views(direction, scale):
    x, s_raw, t, a, b, kw = make_case(2, 5, (2,), 2, "second" if scale == "atan" else "first",
                                      dtype=torch.float64, layout="interleaved", requires_grad=True)
    opts = _opts(kw, scale)
    fn = flowkern.coupling_forward if direction == "fwd" else flowkern.coupling_inverse
    h = s_raw._base  # grads flow into the subnet output the views share

    def f(x_, h_, a_, b_):
        return fn(x_, h_[:, 0::2], h_[:, 1::2], a_, b_, backend="triton", **opts)[:2]

    assert torch.autograd.gradcheck(f, (x, h, a, b), fast_mode=True)


def test_gradcheck_without_actnorm_vectors():
    x, s_raw, t, _, _, kw = make_case(3, 5, (), 2, "second", dtype=torch.float64,
                                      layout="contiguous", actnorm=False, requires_grad=True)
    opts = _opts(kw, "tanh")

    def f(x_, s_, t_):
        return flowkern.coupling_forward(x_, s_, t_, backend="triton", **opts)[:2]

    assert torch.autograd.gradcheck(f, (x, s_raw, t), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
def test_low_precision_storage(dtype, scale):
    x, s_raw, t, a, b, kw = make_case(4, 9, (6,), 4, dtype=dtype, layout="halves",
                                      requires_grad=True)
    opts = _opts(kw, scale)
    cfg = _cfg(opts)
    y, logdet, err = flowkern.coupling_forward(x, s_raw, t, a, b, check=True, backend="triton",
                                               **opts)
    assert y.dtype == dtype and logdet.dtype == torch.float32 and err.dtype == torch.float32
    y_ref, ld_ref = coupling_forward_ref(*upcast(x, s_raw, t, a, b), cfg)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(y.double(), y_ref, atol=atol, rtol=rtol)
    torch.testing.assert_close(logdet.double(), ld_ref, atol=1e-4, rtol=1e-5)  # fp32 accumulation
    assert float(err.detach().max()) < 4 * atol * float(y_ref.abs().max())
    leaves = [x, s_raw._base, a, b]
    got = torch.autograd.grad(_loss(y, logdet, 3), leaves)
    ref_leaves = [v.detach().double().requires_grad_(True) for v in leaves]
    h = ref_leaves[1]
    c_act = h.shape[1] // 2
    y64, ld64 = coupling_forward_ref(ref_leaves[0], h[:, :c_act], h[:, c_act:], *ref_leaves[2:], cfg)
    want = torch.autograd.grad(_loss(y64, ld64, 3), ref_leaves)
    for name, g, w in zip(("x", "h", "a", "b"), got, want):
        assert g.dtype == dtype, name
        scale_ = max(1.0, float(w.abs().max()))
        torch.testing.assert_close(g.double() / scale_, w / scale_, atol=4 * atol, rtol=0, msg=name)


@pytest.mark.parametrize("direction", ["fwd", "inv"])
def test_bf16_stores_round_to_nearest_even(direction):
    # exp scale with s_raw = 0 and no actnorm: y = x + t and x = y - t, one fp32 rounding each, so
    # the bf16 result must be torch's round-to-nearest-even cast bit for bit (the interpreter's own
    # fp32 -> bf16 cast truncates; sums of bf16 values often land on exact ties)
    x, _, t, _, _, kw = make_case(4, 6, (33,), dtype=torch.bfloat16, layout="contiguous",
                                  actnorm=False)
    s0 = torch.zeros_like(t)
    cfg = CouplingConfig(kw["split"], kw["passive"], "exp")
    fn, ref = ((flowkern.coupling_forward, coupling_forward_ref) if direction == "fwd"
               else (flowkern.coupling_inverse, coupling_inverse_ref))
    got = fn(x, s0, t, backend="triton", scale="exp", **kw)[0]
    exact = ref(*upcast(x, s0, t, dtype=torch.float32), None, None, cfg)[0]
    want = exact.to(torch.bfloat16)
    assert (want.float() != exact).sum() > 100  # most of the outputs need rounding
    assert got.dtype == torch.bfloat16 and torch.equal(got, want), (got - want).abs().max()


def test_extreme_inputs_stay_finite():
    x, s_raw, t, a, b, kw = make_case(2, 4, (3,), dtype=torch.float32, layout="contiguous")
    s_big = torch.linspace(-200, 200, s_raw.numel()).reshape(s_raw.shape)
    for scale in ("tanh", "atan", "sigmoid"):
        opts = dict(kw, scale=scale)
        y, logdet = flowkern.coupling_forward(x, s_big, t, a, b, backend="triton", **opts)
        y_ref, ld_ref = coupling_forward_ref(x, s_big, t, a, b, _cfg(dict(opts)))
        assert torch.isfinite(y).all() and torch.isfinite(logdet).all(), scale
        torch.testing.assert_close(y, y_ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logdet, ld_ref, atol=1e-3, rtol=1e-5)
