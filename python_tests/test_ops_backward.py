"""The op's fused backward on its own: ``coupling_backward`` / ``coupling_backward_packed``.

A memory-saving backward calls it at an input it has rebuilt, instead of running the op again
under autograd: its gradients must be the ones autograd gives through the op on the same backend
(bitwise: the same backward kernel, or PyTorch's autograd for the reference), for the forward
and the inverse, packed and unpacked, with and without actnorm, at odd / prime sizes, with
strided subnet outputs and an empty batch. The triton backend's case runs in
``triton_interp_cases.py``; the cuda cases need a GPU.
"""

from __future__ import annotations

import pytest
import torch

import flowkern
from flowkern.ops import coupling_backward, coupling_backward_packed

from .helpers import TOL

HAS_CPU = flowkern.backends.available("cpu")["cpu"] is None
HAS_CUDA = flowkern.backends.available("cuda")["cuda"] is None
BACKENDS = ["reference"] + (["cpu"] if HAS_CPU else []) + (["cuda"] if HAS_CUDA else [])
DEVICE = {"reference": "cpu", "cpu": "cpu", "cuda": "cuda"}
SHAPES = [  # B, C, spatial, split, passive, h layout
    (7, 11, (), 5, "first", "contiguous"),       # odd / prime sizes, vectors
    (3, 7, (5, 3), 3, "second", "contiguous"),   # images
    (5, 6, (67,), 3, "first", "channels_last"),  # prime S, a strided h (a channels-last subnet's output)
    (0, 4, (), 2, "first", "contiguous"),        # empty batch
]


def _case(B, C, spatial, split, passive, dtype, actnorm, h_layout, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    c_act = C - split if passive == "first" else split

    def rand(*shape, scale=1.0, shift=0.0):
        return (shift + scale * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype).to(device)

    x = rand(B, C, *spatial)
    h = rand(B, *spatial, 2 * c_act).movedim(-1, 1) if h_layout == "channels_last" else rand(B, 2 * c_act, *spatial)
    a, b = (rand(C, scale=0.2, shift=1.0), rand(C, scale=0.1)) if actnorm else (None, None)
    grad_out = rand(B, C, *spatial)
    grad_logdet = rand(B).to(torch.float64 if dtype == torch.float64 else torch.float32)
    return x, h, a, b, grad_out, grad_logdet, c_act


def _autograd(packed, inverse, backend, x, h, a, b, grad_out, grad_logdet, c_act, kw):
    """The grads autograd gives through the op: the spec of coupling_backward."""
    leaves = [v.detach().requires_grad_(True) for v in (x, h, a, b) if v is not None]
    xl, hl, *ab = leaves
    ab = ab or [None, None]
    if packed:
        fn = flowkern.coupling_inverse_packed if inverse else flowkern.coupling_forward_packed
        out, ld = fn(xl, hl, *ab, backend=backend, **kw)[:2]
    else:
        fn = flowkern.coupling_inverse if inverse else flowkern.coupling_forward
        out, ld = fn(xl, hl[:, :c_act], hl[:, c_act:], *ab, backend=backend, **kw)[:2]
    return torch.autograd.grad((out, ld), leaves, (grad_out, grad_logdet.to(ld.dtype)))


def _fused(packed, inverse, backend, x, h, a, b, grad_out, grad_logdet, c_act, kw):
    if packed:
        got = coupling_backward_packed(grad_out, grad_logdet, x, h, a, b, inverse=inverse, backend=backend, **kw)
    else:
        g_x, g_s, g_t, g_a, g_b = coupling_backward(grad_out, grad_logdet, x, h[:, :c_act], h[:, c_act:], a, b,
                                                    inverse=inverse, backend=backend, **kw)
        got = (g_x, torch.cat((g_s, g_t), 1), g_a, g_b)
    if a is None:
        assert got[-2:] == (None, None)
        got = got[:-2]
    return got


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("packed", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("actnorm", [True, False])
@pytest.mark.parametrize("B,C,spatial,split,passive,h_layout", SHAPES)
def test_backward_equals_autograd_through_the_op(backend, inverse, packed, dtype, actnorm, B, C, spatial, split,
                                                 passive, h_layout):
    args = _case(B, C, spatial, split, passive, dtype, actnorm, h_layout, DEVICE[backend])
    kw = dict(split=split, passive=passive, scale="sigmoid", clamp=1.5, eps=1e-3)
    got = _fused(packed, inverse, backend, *args, kw)
    want = _autograd(packed, inverse, backend, *args, kw)
    assert len(got) == len(want)
    for name, u, v in zip(("x", "h", "a", "b"), got, want):
        assert u.shape == v.shape and u.dtype == v.dtype, name
        assert torch.equal(u, v), f"grad of {name}: max |diff| {(u - v).abs().max().item():.3g}"


@pytest.mark.skipif(not HAS_CPU, reason="C++ CPU extension not built")
@pytest.mark.parametrize("scale", ["exp", "tanh", "atan", "sigmoid"])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_cpu_backward_matches_the_reference(scale, inverse, dtype):
    args = _case(6, 9, (4,), 4, "first", dtype, True, "contiguous", "cpu", seed=3)
    kw = dict(split=4, scale=scale, clamp=1.5, eps=1e-3 if scale == "sigmoid" else 0.0)
    got = _fused(True, inverse, "cpu", *args, kw)
    want = _fused(True, inverse, "reference", *args, kw)
    atol, rtol = TOL[dtype]
    for name, u, v in zip(("x", "h", "a", "b"), got, want):
        scale_tol = args[0][0].numel() if name in ("a", "b") else 1  # a, b sum over batch and positions
        torch.testing.assert_close(u, v, atol=atol * scale_tol, rtol=rtol, msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mutate,exc,match", [
    (lambda k: dict(k, grad_out=k["grad_out"][:, :3]), ValueError, "grad_y must have shape"),
    (lambda k: dict(k, grad_out=k["grad_out"].double()), TypeError, "grad_y must have the dtype"),
    (lambda k: dict(k, grad_logdet=k["grad_logdet"][:2]), ValueError, r"grad_logdet must have shape \(3,\)"),
    (lambda k: dict(k, grad_logdet=k["grad_logdet"].long()), TypeError, "grad_logdet must be floating"),
    (lambda k: dict(k, h=k["h"][:, :3]), ValueError, "h must have shape"),
    (lambda k: dict(k, a=None), ValueError, "a and b must both be given"),
])
def test_bad_arguments_raise_naming_the_argument(backend, mutate, exc, match):
    x, h, a, b, grad_out, grad_logdet, _ = _case(3, 5, (4,), 2, "first", torch.float32, True, "contiguous",
                                                 DEVICE[backend])
    k = mutate(dict(grad_out=grad_out, grad_logdet=grad_logdet, inp=x, h=h, a=a, b=b))
    with pytest.raises(exc, match=match):
        coupling_backward_packed(k["grad_out"], k["grad_logdet"], k["inp"], k["h"], k["a"], k["b"], split=2,
                                 backend=backend)


def test_the_inverse_names_grad_x():
    x, h, a, b, grad_out, grad_logdet, c_act = _case(3, 5, (), 2, "first", torch.float32, False, "contiguous", "cpu")
    with pytest.raises(ValueError, match="grad_x must have shape"):
        coupling_backward(grad_out[:1], grad_logdet, x, h[:, :c_act], h[:, c_act:], split=2, inverse=True)
