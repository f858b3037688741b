"""The C++ eager autograd of the compiled ops (csrc/eager_autograd.cpp).

In eager mode the public functions run ``flowkern::<op>_eager``: a C++ autograd node around the
same forward and backward ops that the Python ``register_autograd`` formula (used by
torch.compile / opcheck / torch.func) calls. Both paths must give bitwise the same values and
gradients, whichever outputs are used; the error output is not differentiable.
"""

from __future__ import annotations

import pytest
import torch

from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import flowkern
from flowkern.ops import autograd, coupling
from flowkern.ops.spec import SCALE_IDS

HAS_CPU = flowkern.backends.available("cpu")["cpu"] is None
pytestmark = pytest.mark.skipif(not HAS_CPU, reason="C++ CPU extension not built")

OPS = ("fwd", "inv", "fwd_packed", "inv_packed")


def _leaves(op, B, C, spatial, dtype, actnorm, seed=0):
    g = torch.Generator().manual_seed(seed)
    c_act = C - C // 2
    x = torch.randn((B, C, *spatial), generator=g, dtype=torch.float64)
    h = torch.randn((B, 2 * c_act, *spatial), generator=g, dtype=torch.float64)
    ab = [0.5 + torch.rand(C, generator=g, dtype=torch.float64), 0.1 * torch.randn(C, generator=g, dtype=torch.float64)]
    tensors = [x, h] if op.endswith("packed") else [x, h[:, :c_act].clone(), h[:, c_act:].clone()]
    tensors += ab if actnorm else [None, None]
    return [None if v is None else v.to(dtype).requires_grad_() for v in tensors]


def _cfg(C, scale="tanh"):
    return (C // 2, True, SCALE_IDS[scale], 1.5, 0.636, 1e-3)


def _run(op, eager, leaves, cfg, check, use):
    """Outputs and grads of the leaves through ``<op>`` (Python autograd), ``<op>_eager`` (C++;
    eager "entry": its unboxed pybind entry in flowkern._C)."""
    if eager == "entry":
        fn = getattr(flowkern._C, f"coupling_{op}_eager")
    else:
        fn = getattr(torch.ops.flowkern, f"coupling_{op}_eager" if eager else f"coupling_{op}").default
    extra = (check,) if op.startswith("fwd") else ()
    out = fn(*leaves, *cfg, *extra)
    g = torch.Generator().manual_seed(1)
    terms = [(o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for i, o in enumerate(out[:2]) if i in use]
    diff = [v for v in leaves if v is not None]
    grads = torch.autograd.grad(sum(terms), diff, allow_unused=True)
    return out, grads


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("use", [(0, 1), (0,), (1,)], ids=["both", "main", "logdet"])
@pytest.mark.parametrize("actnorm", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("path", [True, "entry"], ids=["torch.ops", "entry"])
def test_eager_equals_registered_autograd(op, use, actnorm, dtype, path):
    B, C, spatial = 3, 7, (5,)
    cfg = _cfg(C, "sigmoid")
    check = op.startswith("fwd")
    ref = _run(op, False, _leaves(op, B, C, spatial, dtype, actnorm), cfg, check, use)
    got = _run(op, path, _leaves(op, B, C, spatial, dtype, actnorm), cfg, check, use)
    for r, o in zip(ref[0], got[0]):
        torch.testing.assert_close(o, r, rtol=0, atol=0)
    assert len(ref[1]) == len(got[1])
    for r, o in zip(ref[1], got[1]):
        assert (r is None) == (o is None)
        if r is not None:
            torch.testing.assert_close(o, r, rtol=0, atol=0)


@pytest.mark.parametrize("op", OPS)
def test_public_api_runs_the_cpp_node_in_eager_mode(op):
    leaves = _leaves(op, 2, 5, (), torch.float32, True)
    kw = dict(split=2, backend="cpu")
    if op == "fwd":
        out = flowkern.coupling_forward(*leaves, check=True, **kw)
    elif op == "inv":
        out = flowkern.coupling_inverse(*leaves, **kw)
    elif op == "fwd_packed":
        out = flowkern.coupling_forward_packed(*leaves, check=True, **kw)
    else:
        out = flowkern.coupling_inverse_packed(*leaves, **kw)
    assert out[0].grad_fn is not None and "CppNode" in out[0].grad_fn.name(), out[0].grad_fn
    assert out[1].grad_fn is out[0].grad_fn
    if len(out) == 3:
        assert not out[2].requires_grad  # the check error is not differentiable


@pytest.mark.parametrize("op", OPS)
def test_gradcheck_float64(op):
    leaves = _leaves(op, 2, 5, (3,), torch.float64, True)
    cfg = _cfg(5, "atan")
    fn = getattr(torch.ops.flowkern, f"coupling_{op}_eager").default
    extra = (False,) if op.startswith("fwd") else ()

    def f(*tensors):
        return tuple(fn(*tensors, *cfg, *extra)[:2])

    assert torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-8)


def test_no_grad_and_inference_mode_give_plain_tensors():
    x, h, a, b = _leaves("fwd_packed", 4, 6, (), torch.float32, True)
    with torch.no_grad():
        y0, ld0 = flowkern.coupling_forward_packed(x, h, a, b, split=3, backend="cpu")
    with torch.inference_mode():
        y1, ld1 = flowkern.coupling_forward_packed(x, h, a, b, split=3, backend="cpu")
    y2, ld2 = flowkern.coupling_forward_packed(x.detach(), h.detach(), a.detach(), b.detach(), split=3, backend="cpu")
    for y, ld in ((y0, ld0), (y1, ld1), (y2, ld2)):
        assert y.grad_fn is None and not y.requires_grad and not ld.requires_grad
        torch.testing.assert_close(y, y0, rtol=0, atol=0)
        torch.testing.assert_close(ld, ld0, rtol=0, atol=0)


@pytest.mark.parametrize("which", range(4))
def test_node_is_built_when_any_single_input_needs_a_gradient(which):
    """Without any input needing a gradient the op runs without a node; with one it needs, the
    gradient reaches exactly that input."""
    leaves = [v.detach() for v in _leaves("fwd_packed", 4, 6, (), torch.float32, True)]
    leaves[which].requires_grad_(True)
    y, ld = flowkern.coupling_forward_packed(*leaves, split=3, backend="cpu")
    assert y.grad_fn is not None and "CppNode" in y.grad_fn.name()
    (grad,) = torch.autograd.grad(y.sum() + ld.sum(), [leaves[which]])
    assert grad.shape == leaves[which].shape and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_bad_input_message_is_the_python_one():
    """The C++ ops check the rules first; the public function then raises the spec's message."""
    x, h, a, b = _leaves("fwd_packed", 3, 5, (4,), torch.float32, True)
    with pytest.raises(ValueError, match=r"h must have shape \(3, 6, 4\)"):
        flowkern.coupling_forward_packed(x, h[:, :5], a, b, split=2, backend="cpu")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        flowkern.coupling_forward_packed(x.tolist(), h, a, b, split=2, backend="cpu")
    with pytest.raises(TypeError, match="a must be a torch.Tensor"):
        flowkern.coupling_forward_packed(x, h, [1.0] * 5, b, split=2, backend="cpu")


class _Log:
    """A mode that records the ops it sees and runs them."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def _run(self, func, args, kwargs):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


class _FunctionLog(_Log, TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return self._run(func, args, kwargs)


class _DispatchLog(_Log, TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self._run(func, args, kwargs)


def test_public_api_calls_the_unboxed_entry_unless_torch_function_applies(monkeypatch):
    """Plain eager calls take flowkern._C's entry; with a torch function mode (or a subclass with
    __torch_function__) the call goes through torch.ops, so the mode sees the op."""
    op = torch.ops.flowkern.coupling_fwd_packed.default
    eager_op, entry = autograd._EAGER[op]
    assert entry is flowkern._C.coupling_fwd_packed_eager
    calls = []
    monkeypatch.setitem(autograd._EAGER, op, (eager_op, lambda *a: calls.append(1) or entry(*a)))
    coupling._PLANS.clear()  # the fast path's plans hold the entry they found
    try:
        x, h = torch.randn(3, 4), torch.randn(3, 4)
        y, _ = flowkern.coupling_forward_packed(x, h, split=2, backend="cpu")  # plans, then runs
        y2, _ = flowkern.coupling_forward_packed(x, h, split=2, backend="cpu")  # from the plan
        assert calls == [1, 1]
        with _FunctionLog() as mode:
            y_mode, _ = flowkern.coupling_forward_packed(x, h, split=2, backend="cpu")
        assert calls == [1, 1] and "flowkern.coupling_fwd_packed_eager.default" in mode.seen
        for v in (y2, y_mode):
            torch.testing.assert_close(v, y, rtol=0, atol=0)
    finally:
        coupling._PLANS.clear()


def test_fast_path_plans_follow_config_backend_and_registration():
    """A plan is per (op, backend, forced backend, device type, config): bools are never served
    from an int's plan, a forced backend is honoured, and registering a backend drops the plans;
    a bad tensor under a planned config still gets the spec's message."""
    x, h = torch.randn(3, 4), torch.randn(3, 4)
    y, ld = flowkern.coupling_forward_packed(x, h, split=2, scale="tanh", clamp=1.0)
    assert coupling._PLANS[("fwd_packed", None, None, "cpu", 2, "first", "tanh", 1.0, 2 / torch.pi, 0.0)]
    with pytest.raises(TypeError, match="split must be an int"):
        flowkern.coupling_forward_packed(x, h, split=True)
    with pytest.raises(ValueError, match="clamp must be a finite number"):
        flowkern.coupling_forward_packed(x, h, split=2, clamp=True)
    with pytest.raises(ValueError, match=r"h must have shape \(3, 4\)"):
        flowkern.coupling_forward_packed(x, h[:, :3], split=2)
    with flowkern.backends.use("reference"):
        y_ref, ld_ref = flowkern.coupling_forward_packed(x, h, split=2)
    ref_key = ("fwd_packed", None, "reference", "cpu", 2, "first", "tanh", 1.0, 2 / torch.pi, 0.0)
    assert coupling._PLANS[ref_key] is False
    torch.testing.assert_close(y_ref, y)
    torch.testing.assert_close(ld_ref, ld)
    flowkern.backends.register(flowkern.backends.get("reference"))
    assert not coupling._PLANS


def test_dispatch_modes_see_the_backend_op_through_the_entry():
    x, h = torch.randn(3, 4), torch.randn(3, 4)
    with _DispatchLog() as mode:
        flowkern.coupling_inverse_packed(x, h, split=2, backend="cpu")
    assert mode.seen == ["flowkern.coupling_inv_packed.default"]
