"""The packed form of the op: h = [s_raw | t] along channels (coupling_{forward,inverse}_packed).

Its values and gradients must equal the unpacked op on the views h[:, :C_a], h[:, C_a:] (the
compiled backends bitwise: they run the same kernel, only grad_h is written in one buffer);
every backend without a packed kernel falls back to those views. The cuda cases need a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

import flowkern

from .helpers import TOL

HAS_CPU = flowkern.backends.available("cpu")["cpu"] is None
HAS_CUDA = flowkern.backends.available("cuda")["cuda"] is None
BACKENDS = ["reference"] + (["cpu"] if HAS_CPU else []) + (["cuda"] if HAS_CUDA else [])
DEVICE = {"reference": "cpu", "cpu": "cpu", "cuda": "cuda"}


def _inputs(B, C, spatial, split, passive, dtype, actnorm=True, h_layout="contiguous", seed=0, device="cpu"):
    leaves = _cpu_inputs(B, C, spatial, split, passive, dtype, actnorm, h_layout, seed)
    if device == "cpu":
        return leaves
    *tensors, c_act = leaves
    return (*(None if v is None else v.detach().to(device).requires_grad_() for v in tensors), c_act)


def _cpu_inputs(B, C, spatial, split, passive, dtype, actnorm, h_layout, seed):
    g = torch.Generator().manual_seed(seed)
    c_act = C - split if passive == "first" else split
    x = torch.randn((B, C, *spatial), generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    if h_layout == "channels_last":  # a strided h: the op reads it in place
        h = torch.randn((B, *spatial, 2 * c_act), generator=g, dtype=torch.float64).to(dtype)
        h = h.movedim(-1, 1).requires_grad_()
    else:
        h = torch.randn((B, 2 * c_act, *spatial), generator=g, dtype=torch.float64).to(dtype).requires_grad_()
    if not actnorm:
        return x, h, None, None, c_act
    a = (0.5 + torch.rand(C, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    b = (0.1 * torch.randn(C, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    return x, h, a, b, c_act


def _outputs_and_grads(packed, inverse, backend, x, h, a, b, c_act, kw):
    leaves = [v for v in (x, h, a, b) if v is not None]
    if packed:
        fn = flowkern.coupling_inverse_packed if inverse else flowkern.coupling_forward_packed
        out, ld = fn(x, h, a, b, backend=backend, **kw)
    else:
        fn = flowkern.coupling_inverse if inverse else flowkern.coupling_forward
        out, ld = fn(x, h[:, :c_act], h[:, c_act:], a, b, backend=backend, **kw)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    wl = torch.randn(ld.shape, generator=g, dtype=torch.float64).to(ld.dtype)
    return [out.detach(), ld.detach(), *torch.autograd.grad((out * w).sum() + (ld * wl).sum(), leaves)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,C,spatial,split,passive,h_layout", [
    (7, 11, (), 5, "first", "contiguous"),       # odd / prime sizes, vectors
    (3, 7, (5, 3), 3, "second", "contiguous"),   # S = 15 (folded kernels)
    (5, 6, (67,), 3, "first", "channels_last"),  # prime S, strided h
    (2, 5, (70,), 2, "second", "contiguous"),    # S >= 64 (rows along S)
    (0, 4, (), 2, "first", "contiguous"),        # empty batch
])
def test_packed_equals_unpacked_views(backend, inverse, dtype, B, C, spatial, split, passive, h_layout):
    x, h, a, b, c_act = _inputs(B, C, spatial, split, passive, dtype, h_layout=h_layout, device=DEVICE[backend])
    kw = dict(split=split, passive=passive, scale="tanh", clamp=2.0)
    got = _outputs_and_grads(True, inverse, backend, x, h, a, b, c_act, kw)
    want = _outputs_and_grads(False, inverse, backend, x, h, a, b, c_act, kw)
    for u, v in zip(got, want):
        if backend != "reference":
            assert torch.equal(u, v)
        else:
            torch.testing.assert_close(u, v, atol=TOL[dtype][0], rtol=TOL[dtype][1])


@pytest.mark.skipif(not HAS_CPU, reason="C++ CPU extension not built")
@pytest.mark.parametrize("scale", ["exp", "tanh", "atan", "sigmoid"])
@pytest.mark.parametrize("inverse", [False, True])
def test_packed_cpu_matches_reference(scale, inverse):
    x, h, a, b, c_act = _inputs(6, 9, (4,), 4, "first", torch.float32)
    kw = dict(split=4, scale=scale, clamp=1.5, eps=1e-3 if scale == "sigmoid" else 0.0)
    got = _outputs_and_grads(True, inverse, "cpu", x, h, a, b, c_act, kw)
    want = _outputs_and_grads(True, inverse, "reference", x, h, a, b, c_act, kw)
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v, atol=TOL[torch.float32][0], rtol=TOL[torch.float32][1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse,actnorm", [(False, True), (True, True), (False, False)])
def test_packed_gradcheck_fp64(backend, inverse, actnorm):
    x, h, a, b, _ = _inputs(3, 5, (2,), 2, "second", torch.float64, actnorm=actnorm, device=DEVICE[backend])
    fn = flowkern.coupling_inverse_packed if inverse else flowkern.coupling_forward_packed
    leaves = tuple(v for v in (x, h, a, b) if v is not None)

    def f(*v):
        return fn(*v, *((None, None) if not actnorm else ()), split=2, passive="second", scale="atan",
                  clamp=1.7, backend=backend)

    assert torch.autograd.gradcheck(f, leaves)


@pytest.mark.skipif(not HAS_CPU, reason="C++ CPU extension not built")
def test_opcheck_packed_ops():
    for dtype, spatial, actnorm in [(torch.float32, (), True), (torch.float64, (3, 2), False)]:
        x, h, a, b, _ = _inputs(3, 5, spatial, 2, "first", dtype, actnorm=actnorm)
        x, h = x.detach(), h.detach()
        a, b = (None, None) if a is None else (a.detach(), b.detach())
        cfg = (2, "first", "tanh", 1.0, 2 / math.pi, 0.0)
        g = torch.randn_like(x)
        gl = torch.randn(3, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        ops = torch.ops.flowkern
        for inverse in (False, True):
            torch.library.opcheck(ops.coupling.packed, (x, h, a, b, *cfg, inverse, not inverse))
            torch.library.opcheck(ops.coupling_backward.packed, (g, gl, x, h, a, b, *cfg, inverse))
            torch.library.opcheck(ops.coupling.packed, (x.clone().requires_grad_(), h, a, b, *cfg, inverse, False))


@pytest.mark.skipif(not HAS_CPU, reason="C++ CPU extension not built")
def test_packed_under_torch_compile_fullgraph():
    x, h, a, b, _ = _inputs(4, 6, (), 3, "first", torch.float32)

    def f(x, h, a, b):
        y, ld = flowkern.coupling_forward_packed(x, h, a, b, split=3)
        return (y * y).sum() + ld.sum()

    want = torch.autograd.grad(f(x, h, a, b), (x, h, a, b))
    got = torch.autograd.grad(torch.compile(f, fullgraph=True)(x, h, a, b), (x, h, a, b))
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad,exc,match", [
    (lambda x, h: (x, h[:, :3]), ValueError, r"h must have shape \(4, 6\)"),
    (lambda x, h: (x, h.double()), TypeError, "h must have the dtype of x"),
    (lambda x, h: (x, h.unsqueeze(-1)), ValueError, "h must have shape"),
    (lambda x, h: (x, [1.0]), TypeError, "h must be a torch.Tensor"),
    (lambda x, h: (x[:, :1], h), ValueError, "split"),
])
def test_packed_bad_input_names_h(backend, bad, exc, match):
    x, h = torch.randn(4, 6, device=DEVICE[backend]), torch.randn(4, 6, device=DEVICE[backend])
    x, h = bad(x, h)
    with pytest.raises(exc, match=match):
        flowkern.coupling_forward_packed(x, h, split=3, backend=backend)
    with pytest.raises(exc, match=match.replace("of x", "of y")):
        flowkern.coupling_inverse_packed(x, h, split=3, backend=backend)


@pytest.mark.skipif(not HAS_CPU, reason="C++ CPU extension not built")
def test_packed_cpp_checks_name_h():
    x, h = torch.randn(4, 6), torch.randn(4, 5)
    with pytest.raises(ValueError, match="h must have shape"):
        torch.ops.flowkern.coupling.packed(x, h, None, None, 3, "first", "tanh", 1.0, 0.6, 0.0, False, False)
    with pytest.raises(TypeError, match="h must have the dtype of y"):
        torch.ops.flowkern.coupling.packed(x, h.double(), None, None, 3, "first", "tanh", 1.0, 0.6, 0.0, True, False)
