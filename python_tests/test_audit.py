"""Bad input everywhere: every public entry point either raises a clear TypeError /
ValueError naming the argument, or returns the correct result — never a crash, never
silent garbage. Compiled ops are called directly in a subprocess, so a crash there
fails one test instead of killing the run.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import flowkern
from flowkern import backends
from flowkern.ops import CouplingConfig, coupling_forward_ref

from .fuzz_strategies import fuzz_backends, probe_backend
from .helpers import make_case

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = [n for n in fuzz_backends() if probe_backend(n) is None]


def _case(**kw):
    x, s_raw, t, a, b, op_kw = make_case(B=3, C=5, spatial=(4,), split=2, **kw)
    return x, s_raw, t, a, b, op_kw


def _raises(exc, words, fn, *args, **kwargs):
    """fn(*args) raises ``exc`` whose message contains every one of ``words``."""
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    for w in words:
        assert re.search(w, msg), f"message {msg!r} does not mention {w!r}"


# ---- the op: (mutation of the args, exception, words the message must contain) ----
def _bad_op_calls():
    x, s_raw, t, a, b, kw = _case()
    good = dict(x=x, s_raw=s_raw, t=t, a=a, b=b, **kw)
    return {
        "x not a tensor": (dict(x=x.tolist()), TypeError, ["x", "Tensor"]),
        "x integer": (dict(x=x.long()), TypeError, ["x", "float"]),
        "x rank 1": (dict(x=x[0, 0]), ValueError, ["x", r"\(B, C"]),
        "split bool": (dict(split=True), TypeError, ["split"]),
        "split float": (dict(split=2.0), TypeError, ["split"]),
        "split zero": (dict(split=0), ValueError, ["split", r"\[1, 4\]"]),
        "split = C": (dict(split=5), ValueError, ["split"]),
        "passive": (dict(passive="left"), ValueError, ["passive", "first"]),
        "scale": (dict(scale="softplus"), ValueError, ["scale", "tanh"]),
        "clamp nan": (dict(clamp=math.nan), ValueError, ["clamp", "finite"]),
        "clamp zero": (dict(clamp=0.0), ValueError, ["clamp", "> 0"]),
        "clamp string": (dict(clamp="2"), ValueError, ["clamp"]),
        "eps negative": (dict(scale="sigmoid", eps=-1e-3), ValueError, ["eps", ">= 0"]),
        "atan_k inf": (dict(atan_k=math.inf), ValueError, ["atan_k"]),
        "s_raw not a tensor": (dict(s_raw=None), TypeError, ["s_raw", "Tensor"]),
        "s_raw wrong shape": (dict(s_raw=s_raw[:, :2]), ValueError, ["s_raw", r"\(3, 3, 4\)"]),
        "s_raw wrong rank": (dict(s_raw=s_raw[..., 0]), ValueError, ["s_raw", "shape"]),
        "s_raw broadcastable only": (dict(s_raw=s_raw[:1]), ValueError, ["s_raw", "shape"]),
        "t dtype": (dict(t=t.double()), TypeError, ["t", "dtype", "float32"]),
        "t on meta": (dict(t=t.to("meta")), ValueError, ["t", "device"]),
        "a without b": (dict(b=None), ValueError, ["a and b"]),
        "a wrong shape": (dict(a=a[:4]), ValueError, ["a", r"\(5,\)"]),
        "b 2-D": (dict(b=b[None]), ValueError, ["b", r"\(5,\)"]),
        "a dtype": (dict(a=a.half()), TypeError, ["a", "dtype"]),
        "backend unknown": (dict(backend="gpu9000"), ValueError, ["backend", "reference"]),
    }, good


_CALLS, _GOOD = _bad_op_calls()


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", sorted(_CALLS))
def test_op_rejects_bad_arguments(name, direction):
    change, exc, words = _CALLS[name]
    args = {**_GOOD, **change}
    fn = flowkern.coupling_forward if direction == "forward" else flowkern.coupling_inverse
    first = args.pop("x")
    if direction == "inverse":
        words = ["y" if w == "x" else w for w in words]
    _raises(exc, words, fn, first, args.pop("s_raw"), args.pop("t"), args.pop("a"), args.pop("b"), **args)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("name", sorted(k for k in _CALLS if not k.startswith(("s_raw", "t "))))
def test_packed_op_rejects_bad_arguments(name, direction):
    """The same table through the packed form, h = [s_raw | t] (its own h checks: test_ops_packed)."""
    change, exc, words = _CALLS[name]
    args = {**_GOOD, **change}
    fn = flowkern.coupling_forward_packed if direction == "forward" else flowkern.coupling_inverse_packed
    first = args.pop("x")
    h = torch.cat((args.pop("s_raw"), args.pop("t")), dim=1)
    if direction == "inverse":
        words = ["y" if w == "x" else w for w in words]
    _raises(exc, words, fn, first, h, args.pop("a"), args.pop("b"), **args)


def test_forced_unavailable_backend_says_why():
    reason = backends.available("cpu").get("cuda")
    assert reason, "cuda backend should be unavailable on this CPU-only test machine"
    x, s_raw, t, a, b, kw = _case()
    _raises(backends.BackendUnavailableError, ["cuda", "cpu"], flowkern.coupling_forward,
            x, s_raw, t, a, b, backend="cuda", **kw)


def test_meta_tensors_give_shapes_without_data():
    x, s_raw, t, a, b, kw = _case()
    meta = [v.to("meta") for v in (x, s_raw, t, a, b)]
    y, logdet, err = flowkern.coupling_forward(*meta, check=True, **kw)
    assert y.device.type == "meta" and y.shape == x.shape
    assert logdet.shape == (3,) and logdet.dtype == torch.float32 and err.shape == (3,)


@pytest.mark.parametrize("backend", RUNNABLE)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_inputs_propagate_like_the_reference(backend, bad):
    """NaN/Inf in one element poison exactly what the spec says they poison."""
    x, s_raw, t, a, b, kw = _case(dtype=torch.float64, layout="contiguous")
    x[1, 3, 2] = bad          # an active element of sample 1
    s_raw[2, 0, 1] = bad      # a scale of sample 2
    cfg = CouplingConfig(kw["split"], kw["passive"], "atan")
    y_ref, ld_ref, err_ref = coupling_forward_ref(x, s_raw, t, a, b, cfg, check=True)
    y, ld, err = flowkern.coupling_forward(x, s_raw, t, a, b, scale="atan", check=True, backend=backend, **kw)
    torch.testing.assert_close(y, y_ref, equal_nan=True)
    torch.testing.assert_close(ld, ld_ref, equal_nan=True)
    assert torch.isfinite(y[0]).all() and torch.isfinite(ld[[0, 1]]).all(), "a bad value leaked across samples"
    assert torch.equal(err.isfinite(), err_ref.isfinite()), \
        f"check err {err} must be non-finite exactly where the reference's {err_ref} is"


@pytest.mark.parametrize("backend", RUNNABLE)
def test_zero_actnorm_scale_is_not_silent(backend):
    """a_c = 0 is not invertible: the log-det must be -inf, never a finite number."""
    x, s_raw, t, a, b, kw = _case(dtype=torch.float32)
    a = a.clone()
    a[1] = 0.0
    _, logdet = flowkern.coupling_forward(x, s_raw, t, a, b, backend=backend, **kw)
    assert torch.isneginf(logdet).all(), logdet


_SUBPROCESS_AUDIT = textwrap.dedent(
    """
    import torch, flowkern  # loads the compiled schemas
    ops = torch.ops.flowkern
    x = torch.randn(3, 5, 4); s = torch.randn(3, 3, 4); t = torch.randn(3, 3, 4)
    a = torch.rand(5) + 0.5; b = torch.randn(5)
    cfg = dict(split=2, passive="first", scale="tanh", clamp=1.0, atan_k=0.6, eps=0.0)
    cases = {
        "split out of range": (x, s, t, a, b, {**cfg, "split": 7}),
        "split negative": (x, s, t, a, b, {**cfg, "split": -1}),
        "scale unknown": (x, s, t, a, b, {**cfg, "scale": "cosh"}),
        "passive unknown": (x, s, t, a, b, {**cfg, "passive": "middle"}),
        "s_raw too small": (x, s[:, :1], t, a, b, cfg),
        "t wrong spatial": (x, s, t[..., :3], a, b, cfg),
        "a too short": (x, s, t, a[:2], b, cfg),
        "a without b": (x, s, t, a, None, cfg),
        "x int": (x.int(), s.int(), t.int(), None, None, cfg),
        "x rank 1": (x[0, 0], s[0, 0], t[0, 0], None, None, cfg),
        "s_raw double": (x, s.double(), t, a, b, cfg),
    }
    bad = []
    for name, (xx, ss, tt, aa, bb, c) in cases.items():
        for inverse in (False, True):
            try:
                ops.coupling(xx, ss, tt, aa, bb, c["split"], c["passive"], c["scale"], c["clamp"], c["atan_k"],
                             c["eps"], inverse, False)
                bad.append(f"coupling(inverse={inverse}): {name}: no error")
            except (TypeError, ValueError) as e:
                pass
            except NotImplementedError as e:
                print("SKIP:", str(e).splitlines()[0][:120]); raise SystemExit(0)
            except Exception as e:
                bad.append(f"coupling(inverse={inverse}): {name}: {type(e).__name__}: "
                           f"{str(e).splitlines()[0][:160]}")
    print("\\n".join(bad) if bad else "OK")
    raise SystemExit(1 if bad else 0)
    """
)


def test_compiled_ops_reject_bad_arguments_without_crashing():
    """Direct torch.ops calls (skipping the Python checks) raise TypeError/ValueError."""
    if probe_backend("cpu") is not None:
        pytest.skip(probe_backend("cpu"))
    proc = subprocess.run([sys.executable, "-c", _SUBPROCESS_AUDIT], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    if proc.stdout.startswith("SKIP:"):
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"


def test_compiled_op_rejects_meta_mixed_with_cpu():
    if probe_backend("cpu") is not None:
        pytest.skip(probe_backend("cpu"))
    x, s_raw, t, a, b, _ = _case()
    with pytest.raises((ValueError, RuntimeError), match="device"):
        torch.ops.flowkern.coupling(x, s_raw.to("meta"), t, a, b, 2, "first", "tanh", 1.0, 0.6, 0.0, False, False)


# ---- layers (flowkern.nn contract) -----------------------------------------------
@pytest.fixture
def nn():
    import flowkern.nn

    return flowkern.nn


def _layers(nn):
    sub = lambda c_in, c_out: torch.nn.Linear(c_in, c_out)  # noqa: E731
    return {
        "ActNorm": nn.ActNorm(6),
        "AffineCoupling": nn.AffineCoupling(6, sub(3, 6)),
        "ActNormCoupling": nn.ActNormCoupling(6, sub(3, 6)),
        "DoubleAffineCoupling": nn.DoubleAffineCoupling(6, 16),
        "Shuffle": nn.Shuffle(6),
        "Reverse": nn.Reverse(6),
        "InvConv1x1": nn.InvConv1x1(6),
        "Flow": nn.build_flow(6, 2, 16),
    }


@pytest.mark.parametrize("method", ["forward", "inverse"])
@pytest.mark.parametrize("layer_name", ["ActNorm", "AffineCoupling", "ActNormCoupling", "DoubleAffineCoupling",
                                        "Shuffle", "Reverse", "InvConv1x1", "Flow"])
def test_layers_reject_bad_inputs(nn, layer_name, method):
    layer = _layers(nn)[layer_name]
    with torch.no_grad():
        layer(torch.randn(16, 6))  # data-dependent init of any ActNorm
    layer.eval()
    fn = getattr(layer, method)
    arg = "x" if method == "forward" else ("z" if layer_name == "Flow" else "y")
    _raises(TypeError, [r"\b" + arg + r"\b|Tensor"], fn, [[0.0] * 6])
    _raises(TypeError, [arg, "float"], fn, torch.zeros(4, 6, dtype=torch.long))
    _raises(ValueError, [arg, "6"], fn, torch.zeros(4, 5))
    _raises(ValueError, [arg], fn, torch.zeros(6))
    x = torch.randn(4, 6)
    out, logdet = fn(x.t().contiguous().t())  # non-contiguous input gives the same numbers
    ref_out, ref_logdet = fn(x)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(logdet, ref_logdet)


def test_conditional_layers_require_a_well_shaped_condition(nn):
    flow = nn.build_flow(6, 2, 16, cond_channels=3)
    x = torch.randn(4, 6)
    for fn in (flow.forward, flow.inverse, flow.log_prob):
        _raises((TypeError, ValueError), [r"\bc\b|condition"], fn, x)          # missing
        _raises(ValueError, [r"\bc\b|condition", "3"], fn, x, torch.zeros(4, 5))  # wrong width
        _raises(ValueError, [r"\bc\b|condition"], fn, x, torch.zeros(3, 3))      # wrong batch
    _raises((TypeError, ValueError), [r"\bc\b|condition"], flow.sample, 4)


def test_flow_mixed_devices_and_non_finite_inputs(nn):
    flow = nn.build_flow(6, 2, 16)
    with pytest.raises((ValueError, RuntimeError), match=r"device|meta|Meta"):
        flow(torch.randn(4, 6, device="meta"))
    x = torch.randn(4, 6)
    x[2, 1] = math.nan
    flow.eval()
    z, logdet = flow(x)
    assert torch.isfinite(z[[0, 1, 3]]).all() and torch.isfinite(logdet[[0, 1, 3]]).all(), \
        "a NaN in sample 2 leaked into other samples"
    assert not torch.isfinite(z[2]).all(), "a NaN input produced a finite (garbage) output"


def test_flow_sample_rejects_bad_counts(nn):
    flow = nn.build_flow(6, 2, 16)
    with torch.no_grad():
        flow(torch.randn(16, 6))
    flow.eval()
    assert flow.sample(3).shape == (3, 6)
    _raises((TypeError, ValueError), ["n"], flow.sample, -1)
    _raises((TypeError, ValueError), ["n"], flow.sample, 2.5)


def test_flow_sample_rejects_non_finite_temperature(nn):
    flow = nn.build_flow(6, 2, 16)
    with torch.no_grad():
        flow(torch.randn(16, 6))
    flow.eval()
    _raises((TypeError, ValueError), ["temperature"], flow.sample, 2, temperature=math.nan)
