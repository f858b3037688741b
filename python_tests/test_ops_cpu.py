"""The C++ CPU backend (csrc/cpu) against the reference op (the spec) and first principles."""

from __future__ import annotations

import math
import os
import subprocess

import pytest
import torch

import flowkern

from .helpers import TOL, flash_rule_ok, make_case

pytestmark = pytest.mark.skipif(
    flowkern.backends.available("cpu")["cpu"] is not None, reason="C++ CPU extension not built"
)

# (scale, eps): every scale function, sigmoid also with eps > 0
SCALE_EPS = [("exp", 0.0), ("tanh", 0.0), ("atan", 0.0), ("sigmoid", 0.0), ("sigmoid", 1e-3)]
# (C, spatial): vectors; S = 35 < 64 (flattened kernels); prime S = 67 (rows along S); 3-d
SHAPES = [(7, ()), (13, (5, 7)), (7, (67,)), (6, (3,))]
LAYOUTS = ["halves", "interleaved", "contiguous"]


def _op_kw(kw, scale, eps):
    return dict(kw, scale=scale, eps=eps, clamp=1.3)


def _run(direction, backend, x, s_raw, t, a, b, kw, check=False):
    if direction == "fwd":
        return flowkern.coupling_forward(x, s_raw, t, a, b, backend=backend, check=check, **kw)
    return flowkern.coupling_inverse(x, s_raw, t, a, b, backend=backend, **kw)


def _grads(direction, backend, case, kw):
    """Outputs and grads of all leaves for loss = <w, out> + <wl, logdet>."""
    x, s_raw, t, a, b, _ = case
    leaves = [v for v in (x, s_raw._base if s_raw._base is not None else s_raw, t, a, b)
              if v is not None and v.is_leaf]
    leaves = list({id(v): v for v in leaves}.values())
    out, logdet = _run(direction, backend, x, s_raw, t, a, b, kw)[:2]
    g = torch.Generator().manual_seed(1)
    w = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.dtype)
    wl = torch.randn(logdet.shape, generator=g, dtype=torch.float64).to(logdet.dtype)
    grads = torch.autograd.grad((out * w).sum() + (logdet * wl).sum(), leaves)
    return [out.detach(), logdet.detach(), *grads]


@pytest.mark.parametrize("scale,eps", SCALE_EPS)
@pytest.mark.parametrize("passive", ["first", "second"])
@pytest.mark.parametrize("C,spatial", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("actnorm", [True, False])
def test_matches_reference_fp64_fp32(scale, eps, passive, C, spatial, layout, actnorm):
    for dtype in (torch.float64, torch.float32):
        atol, rtol = TOL[dtype]
        case = make_case(B=3, C=C, spatial=spatial, passive=passive, dtype=dtype, layout=layout,
                         actnorm=actnorm, requires_grad=True)
        kw = _op_kw(case[5], scale, eps)
        for direction in ("fwd", "inv"):
            got = _grads(direction, "cpu", case, kw)
            want = _grads(direction, "reference", case, kw)
            for i, (g, w) in enumerate(zip(got, want)):
                torch.testing.assert_close(g, w, atol=atol, rtol=rtol, msg=lambda m: f"{direction}[{i}] {m}")
                assert g.is_contiguous()
        x, s_raw, t, a, b, _ = (v.detach() if isinstance(v, torch.Tensor) else v for v in case)
        y, logdet, err = flowkern.coupling_forward(x, s_raw, t, a, b, check=True, backend="cpu", **kw)
        assert err.shape == (3,) and err.dtype == logdet.dtype
        assert err.max() <= (1e-12 if dtype == torch.float64 else 1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("scale", ["tanh", "sigmoid", "exp"])
@pytest.mark.parametrize("C,spatial,layout", [(13, (), "interleaved"), (7, (67,), "halves"),
                                             (6, (5, 7), "contiguous")])
def test_low_precision_flash_rule(dtype, scale, C, spatial, layout):
    """Error vs the fp64-exact result is at most 2x that of the reference run in the same dtype."""
    case = make_case(B=4, C=C, spatial=spatial, dtype=dtype, layout=layout, requires_grad=True)
    exact_case = make_case(B=4, C=C, spatial=spatial, dtype=torch.float64, layout=layout, requires_grad=True)
    kw = _op_kw(case[5], scale, 0.0)
    for direction in ("fwd", "inv"):
        got = _grads(direction, "cpu", case, kw)
        ref = _grads(direction, "reference", case, kw)
        exact = _grads(direction, "reference", exact_case, kw)
        for i, (g, r, e) in enumerate(zip(got, ref, exact)):
            assert g.dtype == r.dtype
            floor = 1e-3 * e.abs().max().item()  # a few ulps of the largest value
            assert flash_rule_ok(g, r, e, floor=floor), f"{direction}[{i}]"


@pytest.mark.parametrize("scale,eps", SCALE_EPS)
@pytest.mark.parametrize("passive,spatial,layout", [("first", (), "interleaved"), ("second", (2, 3), "halves"),
                                                    ("first", (3,), "contiguous")])
def test_gradcheck_fp64(scale, eps, passive, spatial, layout):
    x, s_raw, t, a, b, kw = make_case(B=2, C=5, spatial=spatial, passive=passive, dtype=torch.float64,
                                      layout="contiguous", requires_grad=True)
    kw = _op_kw(kw, scale, eps)
    for direction in ("fwd", "inv"):
        assert torch.autograd.gradcheck(
            lambda *v: _run(direction, "cpu", *v, kw), (x, s_raw, t, a, b), eps=1e-6, atol=1e-8)
    # strided views of one subnet output, gradient through both
    x, s_raw, t, a, b, kw2 = make_case(B=2, C=5, spatial=spatial, passive=passive, dtype=torch.float64,
                                       layout=layout, requires_grad=True)
    h = s_raw._base

    def through_views(x, h, a, b):
        c = s_raw.shape[1]
        s, tt = (h[:, :c], h[:, c:]) if layout == "halves" else (h[:, 0::2], h[:, 1::2])
        return _run("fwd", "cpu", x, s, tt, a, b, kw)

    if h is not None:
        assert torch.autograd.gradcheck(through_views, (x, h, a, b), eps=1e-6, atol=1e-8)


@pytest.mark.parametrize("scale", ["tanh", "sigmoid"])
@pytest.mark.parametrize("spatial", [(), (3,), (2, 2)])
def test_logdet_is_slogdet_of_jacobian(scale, spatial):
    x, s_raw, t, a, b, kw = make_case(B=2, C=5, spatial=spatial, passive="second", dtype=torch.float64)
    kw = _op_kw(kw, scale, 0.0)
    _, logdet = flowkern.coupling_forward(x, s_raw, t, a, b, backend="cpu", **kw)
    for i in range(2):
        J = torch.autograd.functional.jacobian(
            lambda v: flowkern.coupling_forward(v[None], s_raw[i:i + 1], t[i:i + 1], a, b, backend="cpu",
                                                **kw)[0][0], x[i])
        n = x[i].numel()
        torch.testing.assert_close(logdet[i], torch.linalg.slogdet(J.reshape(n, n))[1], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_check_err_is_the_round_trip_error(dtype):
    """err is max |coupling_inverse(y) - x| (up to FMA contraction), and large when y is lossy."""
    x, s_raw, t, a, b, kw = make_case(B=4, C=9, spatial=(70,), dtype=dtype, layout="interleaved")
    y, _, err = flowkern.coupling_forward(x, s_raw, t, a, b, check=True, backend="cpu", **kw)
    x2, _ = flowkern.coupling_inverse(y, s_raw, t, a, b, backend="cpu", **kw)
    ulp = torch.finfo(dtype).eps * x.abs().max().item()
    torch.testing.assert_close(err, (x2 - x).abs().flatten(1).amax(1).to(err.dtype), rtol=0, atol=8 * ulp)
    assert err.max() < 1e3 * torch.finfo(dtype).eps
    # a shift t of 1e6 swamps x's low digits in y: the round trip loses them
    big_t = t + 1e6 * (torch.arange(4, dtype=dtype) % 2)[:, None, None]
    _, _, err_big = flowkern.coupling_forward(x, s_raw, big_t, a, b, check=True, backend="cpu", **kw)
    _, _, err_ref = flowkern.coupling_forward(x, s_raw, big_t, a, b, check=True, backend="reference", **kw)
    lossy = err_big[1::2]
    assert (lossy > 1e3 * err_big[0::2].max()).all() and (lossy > 1e4 * torch.finfo(dtype).eps).all()
    assert ((lossy / err_ref[1::2]) > 0.1).all() and ((lossy / err_ref[1::2]) < 10).all()
    # a tampered y no longer inverts to x
    y_bad = y.clone()
    y_bad[2, kw["split"] + 1, 5] += 0.5
    x_bad, _ = flowkern.coupling_inverse(y_bad, s_raw, t, a, b, backend="cpu", **kw)
    assert (x_bad - x).abs().flatten(1).amax(1)[2] > 0.1


@pytest.mark.parametrize("spatial", [(), (5, 7), (67,)])
def test_nan_inf_propagate(spatial):
    x, s_raw, t, a, b, kw = make_case(B=3, C=6, spatial=spatial, layout="contiguous")
    x[0, 0].view(-1)[0] = float("nan")         # passive
    x[1, 4].view(-1)[0] = float("inf")         # active
    s_raw[2, 1].view(-1)[0] = float("nan")     # -> y and logdet of sample 2
    for scale in ("exp", "tanh", "sigmoid"):
        got = flowkern.coupling_forward(x, s_raw, t, a, b, scale=scale, check=True, backend="cpu", **kw)
        want = flowkern.coupling_forward(x, s_raw, t, a, b, scale=scale, check=True, backend="reference", **kw)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, equal_nan=True, atol=2e-5, rtol=2e-5)
        assert got[1][2].isnan() and got[1][:2].isfinite().all()
        assert got[2].isnan().any()


def _direct_args(dtype=torch.float32):
    x, s_raw, t, a, b, kw = make_case(B=2, C=6, spatial=(3,), dtype=dtype)
    return [x, s_raw, t, a, b, kw["split"], "first", "tanh", 1.0, 2 / math.pi, 0.0]


@pytest.mark.parametrize("mutate,exc,name", [
    (lambda v: v.__setitem__(1, v[1].double()), TypeError, "s_raw"),
    (lambda v: v.__setitem__(2, v[2][:, :2]), ValueError, "t"),
    (lambda v: v.__setitem__(0, v[0].int()), TypeError, "x"),
    (lambda v: v.__setitem__(5, 6), ValueError, "split"),
    (lambda v: v.__setitem__(4, None), ValueError, "a and b"),
    (lambda v: v.__setitem__(3, v[3][:5]), ValueError, "a must have shape"),
    (lambda v: v.__setitem__(7, "cosh"), ValueError, "scale"),
    (lambda v: v.__setitem__(6, "middle"), ValueError, "passive"),
    (lambda v: v.__setitem__(8, -1.0), ValueError, "clamp"),
])
def test_bad_inputs_raise_naming_the_argument(mutate, exc, name):
    args = _direct_args()
    mutate(args)
    with pytest.raises(exc, match=name):  # the C++ checks
        torch.ops.flowkern.coupling(*args, False, False)
    with pytest.raises(exc, match="y" if name == "x" else name):
        torch.ops.flowkern.coupling(*args, True, False)
    x, s_raw, t, a, b, split, passive, scale, clamp = args[:9]  # the Python API: the same rules
    with pytest.raises(exc, match=name):
        flowkern.coupling_forward(x, s_raw, t, a, b, split=split, passive=passive, scale=scale, clamp=clamp,
                                  backend="cpu")


def test_check_is_for_the_forward_only():
    with pytest.raises(ValueError, match="check"):
        torch.ops.flowkern.coupling(*_direct_args(), True, True)


def test_bad_grads_raise():
    args = _direct_args()
    x = args[0]
    gl = torch.zeros(2)
    with pytest.raises(ValueError, match="grad_y"):
        torch.ops.flowkern.coupling_backward(x[:, :3], gl, *args, False)
    with pytest.raises(TypeError, match="grad_x"):
        torch.ops.flowkern.coupling_backward(x.double(), gl, *args, True)
    with pytest.raises(ValueError, match="grad_logdet"):
        torch.ops.flowkern.coupling_backward(x, torch.zeros(3), *args, False)


@pytest.mark.parametrize("B,C,spatial,layout", [(64, 16, (1024,), "interleaved"), (6000, 20, (), "halves"),
                                                (300, 10, (9,), "halves"), (2, 4, (40000,), "contiguous")])
def test_deterministic_across_thread_counts(B, C, spatial, layout):
    case = make_case(B=B, C=C, spatial=spatial, layout=layout, requires_grad=True)
    kw = _op_kw(case[5], "tanh", 0.0)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _grads("fwd", "cpu", case, kw) + _grads("inv", "cpu", case, kw)
        torch.set_num_threads(2)
        two = _grads("fwd", "cpu", case, kw) + _grads("inv", "cpu", case, kw)
    finally:
        torch.set_num_threads(n)
    for u, v in zip(one, two):
        assert torch.equal(u, v)


@pytest.mark.parametrize("spatial", [(), (4, 5)])
def test_empty_batch(spatial):
    x, s_raw, t, a, b, kw = make_case(B=0, C=5, spatial=spatial, requires_grad=True)
    y, logdet, err = flowkern.coupling_forward(x, s_raw, t, a, b, check=True, backend="cpu", **kw)
    assert y.shape == x.shape and logdet.shape == (0,) and err.shape == (0,)
    (y.sum() + logdet.sum()).backward()
    assert x.grad.shape == x.shape and a.grad.shape == (5,) and (a.grad == 0).all()
    xi, ld = flowkern.coupling_inverse(y.detach(), s_raw, t, a, b, backend="cpu", **kw)
    assert xi.shape == x.shape and ld.shape == (0,)


def test_opcheck_op_and_backward():
    for dtype, spatial, actnorm in [(torch.float32, (), True), (torch.float64, (3, 2), False)]:
        x, s_raw, t, a, b, kw = make_case(B=3, C=5, spatial=spatial, dtype=dtype, layout="interleaved",
                                          actnorm=actnorm)
        cfg = (kw["split"], "first", "tanh", 1.0, 2 / math.pi, 0.0)
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        gl = torch.randn(3, dtype=acc)
        g = torch.randn_like(x)
        ops = torch.ops.flowkern
        for inverse in (False, True):
            torch.library.opcheck(ops.coupling.default, (x, s_raw, t, a, b, *cfg, inverse, not inverse))
            torch.library.opcheck(ops.coupling_backward.default, (g, gl, x, s_raw, t, a, b, *cfg, inverse))
            xg = x.clone().requires_grad_(True)
            torch.library.opcheck(ops.coupling.default, (xg, s_raw, t, a, b, *cfg, inverse, False))


@pytest.mark.slow
def test_cmake_build_of_the_cpp_library():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                          "cmake_build_check.sh")
    out = subprocess.run(["bash", script], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout + out.stderr
