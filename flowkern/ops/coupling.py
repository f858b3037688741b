"""The fused actnorm + affine coupling + log-det op: Python API, fake kernels, autograd.

Compiled schemas (``csrc/ops.cpp``)::

    flowkern::coupling_fwd(x, s_raw, t, a?, b?, split, passive_first, scale, clamp, atan_k, eps, check)
        -> (y, logdet, err)            # err is (B,) with check, else (0,)
    flowkern::coupling_inv(y, s_raw, t, a?, b?, ...) -> (x, logdet)
    flowkern::coupling_fwd_bwd(grad_y, grad_logdet, x, s_raw, t, a?, b?, ...)
        -> (grad_x, grad_s_raw, grad_t, grad_a, grad_b)   # grad_a/grad_b are (0,) without a/b
    flowkern::coupling_inv_bwd(grad_x, grad_logdet, y, s_raw, t, a?, b?, ...) -> (grad_y, ...)
    flowkern::coupling_{fwd,inv}_packed(input, h, a?, b?, ...)   # h = [s_raw | t] along channels
    flowkern::coupling_{fwd,inv}_packed_bwd(grad, grad_logdet, input, h, a?, b?, ...)
        -> (grad_input, grad_h, grad_a, grad_b)

The math is that of :mod:`flowkern.ops.coupling_ref` (the spec).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import _extension, backends
from . import autograd
from .coupling_ref import coupling_forward_ref, coupling_inverse_ref
from .spec import SCALE_IDS, CouplingConfig, acc_dtype, check_coupling_args, check_packed_args, make_config

__all__ = ["coupling_forward", "coupling_inverse", "coupling_forward_packed", "coupling_inverse_packed"]

_CPP = _extension.load_cpp()
_CUDA = _extension.load_cuda()


# ---- compiled ops: fake kernels and autograd --------------------------------------
_SCALE_NAMES = {v: k for k, v in SCALE_IDS.items()}


def _schema_config(split, passive_first, scale, clamp, atan_k, eps) -> CouplingConfig:
    """The validated config of the compiled ops' schema arguments (scale as its id)."""
    if scale not in _SCALE_NAMES:
        raise ValueError(f"scale must be one of {sorted(_SCALE_NAMES)} ({sorted(SCALE_IDS)}), got {scale}")
    return make_config(split, "first" if passive_first else "second", _SCALE_NAMES[scale], clamp, atan_k, eps)


def _check_schema_args(x, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, name):
    """The Python argument rules, applied to the compiled ops' schema arguments (fake kernels)."""
    check_coupling_args(x, s_raw, t, a, b, _schema_config(split, passive_first, scale, clamp, atan_k, eps), name)


if _CPP:

    @torch.library.register_fake("flowkern::coupling_fwd")
    def _fwd_fake(x, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, check):
        _check_schema_args(x, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, "x")
        acc = acc_dtype(x.dtype)
        n_err = x.shape[0] if check else 0
        return (torch.empty_like(x, memory_format=torch.contiguous_format),
                x.new_empty((x.shape[0],), dtype=acc), x.new_empty((n_err,), dtype=acc))

    @torch.library.register_fake("flowkern::coupling_inv")
    def _inv_fake(y, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps):
        _check_schema_args(y, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, "y")
        return (torch.empty_like(y, memory_format=torch.contiguous_format),
                y.new_empty((y.shape[0],), dtype=acc_dtype(y.dtype)))

    def _bwd_fake(g_out, g_logdet, inp, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps):
        _check_schema_args(inp, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, "input")
        n_ab = inp.shape[1] if a is not None else 0
        return (torch.empty_like(inp, memory_format=torch.contiguous_format),
                torch.empty_like(s_raw, memory_format=torch.contiguous_format),
                torch.empty_like(t, memory_format=torch.contiguous_format),
                inp.new_empty((n_ab,)), inp.new_empty((n_ab,)))

    torch.library.register_fake("flowkern::coupling_fwd_bwd")(_bwd_fake)
    torch.library.register_fake("flowkern::coupling_inv_bwd")(_bwd_fake)

    def _packed_views(inp, h, split, passive_first, scale, clamp, atan_k, eps, name):
        cfg = _schema_config(split, passive_first, scale, clamp, atan_k, eps)
        c_act = check_packed_args(inp, h, None, None, cfg, name)
        return h[:, :c_act], h[:, c_act:]

    @torch.library.register_fake("flowkern::coupling_fwd_packed")
    def _fwd_packed_fake(x, h, a, b, split, passive_first, scale, clamp, atan_k, eps, check):
        s_raw, t = _packed_views(x, h, split, passive_first, scale, clamp, atan_k, eps, "x")
        return _fwd_fake(x, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps, check)

    @torch.library.register_fake("flowkern::coupling_inv_packed")
    def _inv_packed_fake(y, h, a, b, split, passive_first, scale, clamp, atan_k, eps):
        s_raw, t = _packed_views(y, h, split, passive_first, scale, clamp, atan_k, eps, "y")
        return _inv_fake(y, s_raw, t, a, b, split, passive_first, scale, clamp, atan_k, eps)

    def _packed_bwd_fake(g_out, g_logdet, inp, h, a, b, split, passive_first, scale, clamp, atan_k, eps):
        s_raw, t = _packed_views(inp, h, split, passive_first, scale, clamp, atan_k, eps, "input")
        g_in, _, _, g_a, g_b = _bwd_fake(g_out, g_logdet, inp, s_raw, t, a, b, split, passive_first, scale,
                                         clamp, atan_k, eps)
        return g_in, torch.empty_like(h, memory_format=torch.contiguous_format), g_a, g_b

    torch.library.register_fake("flowkern::coupling_fwd_packed_bwd")(_packed_bwd_fake)
    torch.library.register_fake("flowkern::coupling_inv_packed_bwd")(_packed_bwd_fake)

    for _op, _n in (("coupling_fwd", 5), ("coupling_inv", 5), ("coupling_fwd_packed", 4),
                    ("coupling_inv_packed", 4)):
        autograd.register(getattr(torch.ops.flowkern, _op).default,
                          getattr(torch.ops.flowkern, _op + "_bwd").default, _n,
                          getattr(torch.ops.flowkern, _op + "_eager").default,
                          getattr(_extension.cpp_module(), _op + "_eager", None))


def _compiled_forward(x, s_raw, t, a, b, cfg, check):
    y, logdet, err = autograd.call(torch.ops.flowkern.coupling_fwd.default, x, s_raw, t, a, b, *cfg.schema_args,
                                   check)
    return (y, logdet, err) if check else (y, logdet)


def _compiled_inverse(y, s_raw, t, a, b, cfg):
    return tuple(autograd.call(torch.ops.flowkern.coupling_inv.default, y, s_raw, t, a, b, *cfg.schema_args))


def _compiled_forward_packed(x, h, a, b, cfg, check):
    y, logdet, err = autograd.call(torch.ops.flowkern.coupling_fwd_packed.default, x, h, a, b, *cfg.schema_args,
                                   check)
    return (y, logdet, err) if check else (y, logdet)


def _compiled_inverse_packed(y, h, a, b, cfg):
    return tuple(autograd.call(torch.ops.flowkern.coupling_inv_packed.default, y, h, a, b, *cfg.schema_args))


def _compiled_forward_packed_grads(grad_y, grad_logdet, x, h, a, b, cfg):
    g_x, g_h, g_a, g_b = torch.ops.flowkern.coupling_fwd_packed_bwd(grad_y.contiguous(), grad_logdet.contiguous(),
                                                                    x, h, a, b, *cfg.schema_args)
    return (g_x, g_h, g_a, g_b) if a is not None else (g_x, g_h, None, None)


def _reference_why(device_type: str) -> str | None:
    return None


def _cpu_why(device_type: str) -> str | None:
    if device_type != "cpu":
        return f"the cpu backend runs on CPU tensors only, not {device_type}"
    if not _CPP:
        _extension.warn_once("cpp", f"flowkern: C++ CPU backend unavailable ({_extension.CPP_REASON}); "
                                    "using the reference backend")
        return f"C++ extension unavailable: {_extension.CPP_REASON}"
    return None


def _cuda_why(device_type: str) -> str | None:
    if device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors only, not {device_type}"
    if not _CUDA:
        return f"CUDA extension unavailable: {_extension.CUDA_REASON}"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


backends.register(backends.Backend("reference", coupling_forward_ref, coupling_inverse_ref, _reference_why))
for _name, _why in (("cpu", _cpu_why), ("cuda", _cuda_why)):
    backends.register(backends.Backend(_name, _compiled_forward, _compiled_inverse, _why, _compiled_forward_packed,
                                       _compiled_inverse_packed, _compiled_forward_packed_grads, checks_args=True))


# ---- the eager fast path ----------------------------------------------------------
# (op kind, backend, forced backend, device type, split, passive, scale, clamp, atan_k, eps) ->
# (unboxed C++ entry, schema args) once that config ran on a compiled backend, else False
_PLANS: dict[tuple, tuple | bool] = backends.choice_cache()
_NUMBER_TYPES = (int, float)
_OPS = {"fwd": "coupling_fwd", "inv": "coupling_inv", "fwd_packed": "coupling_fwd_packed",
        "inv_packed": "coupling_inv_packed"}


def _eager(kind: str, tensors: tuple, inp, backend, split, passive, scale, clamp, atan_k, eps, extra: tuple):
    """The op's outputs from its unboxed C++ entry (``autograd.call``'s eager route without
    the per-call config validation and backend choice), or None: then the caller takes the
    general path, which also raises every argument error with its canonical message.

    The functorch and ``__torch_function__`` routing repeats :func:`autograd.call`'s inline (keep
    the two in step): delegating to it costs ~0.4 us per call, a fifth of this path's Python time."""
    if torch.compiler.is_compiling():
        return None
    if (type(split) is not int or type(clamp) not in _NUMBER_TYPES or type(atan_k) not in _NUMBER_TYPES
            or type(eps) not in _NUMBER_TYPES):  # bools compare equal to ints: never served from the cache
        return None
    try:
        key = (kind, backend, backends.forced(), inp.device.type, split, passive, scale, clamp, atan_k, eps)
        plan = _PLANS.get(key)
    except (AttributeError, TypeError):  # inp not a tensor, unhashable arguments
        return None
    if plan is None:
        plan = _PLANS[key] = _make_plan(kind, inp, backend, split, passive, scale, clamp, atan_k, eps)
    if not plan or torch._C._are_functorch_transforms_active():
        return None
    args = (*tensors, *plan[1], *extra)
    if torch._C._has_torch_function(args):
        return None
    try:
        return plan[0](*args)
    except (TypeError, ValueError, RuntimeError):
        return None


def _make_plan(kind, inp, backend, split, passive, scale, clamp, atan_k, eps) -> tuple | bool:
    """(unboxed entry, schema args) if this config runs on a compiled backend with an entry, else False."""
    try:
        cfg = make_config(split, passive, scale, clamp, atan_k, eps)
        chosen = backends.select(inp.device, backend)
    except (TypeError, ValueError, RuntimeError):
        return False
    if chosen.forward is not _compiled_forward:
        return False
    entry = autograd.eager_entry(getattr(torch.ops.flowkern, _OPS[kind]).default)
    return (entry, cfg.schema_args) if entry is not None else False


# ---- public API ---------------------------------------------------------------
def coupling_forward(
    x: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    check: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, ...]:
    """Fused actnorm + affine coupling: ``(y, logdet)``, or ``(y, logdet, err)`` with ``check``.

    y_p = x_p a + b;  y_a = (x_a a + b) exp(f(s_raw)) + t;
    logdet = prod(S) sum log|a| + sum f(s_raw)  (see :mod:`flowkern.ops.coupling_ref`).
    ``err`` (B,) is max |x_rebuilt - x| per sample, x rebuilt from y inside the same pass.
    """
    out = _eager("fwd", (x, s_raw, t, a, b), x, backend, split, passive, scale, clamp, atan_k, eps, (bool(check),))
    if out is not None:
        return out if check else out[:2]
    cfg = make_config(split, passive, scale, clamp, atan_k, eps)
    chosen = _select(x, backend, "x")
    return _checked(chosen, chosen.forward, (x, s_raw, t, a, b, cfg, bool(check)),
                    check_coupling_args, (x, s_raw, t, a, b, cfg, "x"))


def coupling_inverse(
    y: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`coupling_forward`: ``(x, -logdet)``.

    z_a = (y_a - t) exp(-f(s_raw));  x = (z - b) / a.
    """
    out = _eager("inv", (y, s_raw, t, a, b), y, backend, split, passive, scale, clamp, atan_k, eps, ())
    if out is not None:
        return out
    cfg = make_config(split, passive, scale, clamp, atan_k, eps)
    chosen = _select(y, backend, "y")
    return _checked(chosen, chosen.inverse, (y, s_raw, t, a, b, cfg), check_coupling_args, (y, s_raw, t, a, b, cfg, "y"))


def coupling_forward_packed(
    x: torch.Tensor,
    h: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    check: bool = False,
    backend: str | None = None,
) -> tuple[torch.Tensor, ...]:
    """:func:`coupling_forward` with s_raw, t the halves of one subnet output
    h = [s_raw | t] of shape (B, 2 C_active, *S) (FrEIA's / CompVis' layout).

    Same values as ``coupling_forward(x, h[:, :C_a], h[:, C_a:], ...)``; the backward writes one
    grad_h instead of two per-view grads that autograd would scatter into zeros and add.
    """
    out = _eager("fwd_packed", (x, h, a, b), x, backend, split, passive, scale, clamp, atan_k, eps, (bool(check),))
    if out is not None:
        return out if check else out[:2]
    cfg = make_config(split, passive, scale, clamp, atan_k, eps)
    return _packed(False, x, h, a, b, cfg, (bool(check),), backend)


def coupling_inverse_packed(
    y: torch.Tensor,
    h: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
    backend: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`coupling_inverse` with the packed subnet output h = [s_raw | t] (see
    :func:`coupling_forward_packed`)."""
    out = _eager("inv_packed", (y, h, a, b), y, backend, split, passive, scale, clamp, atan_k, eps, ())
    if out is not None:
        return out
    cfg = make_config(split, passive, scale, clamp, atan_k, eps)
    return _packed(True, y, h, a, b, cfg, (), backend)


def _packed(inverse: bool, inp, h, a, b, cfg: CouplingConfig, extra: tuple, backend: str | None) -> tuple:
    """Run the backend's packed op, or its unpacked op on the views of h."""
    name = "y" if inverse else "x"
    chosen = _select(inp, backend, name)
    op = chosen.inverse_packed if inverse else chosen.forward_packed
    if op is None:
        check_packed_args(inp, h, a, b, cfg, name)
        c_act = h.shape[1] // 2
        return (chosen.inverse if inverse else chosen.forward)(inp, h[:, :c_act], h[:, c_act:], a, b, cfg, *extra)
    return _checked(chosen, op, (inp, h, a, b, cfg, *extra), check_packed_args, (inp, h, a, b, cfg, name))


def _select(inp, backend: str | None, name: str) -> backends.Backend:
    if not isinstance(inp, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(inp).__name__}")
    return backends.select(inp.device, backend)


def _checked(chosen: backends.Backend, op: Callable, args: tuple, check: Callable, check_args: tuple) -> tuple:
    """``op(*args)`` after ``check(*check_args)`` (the argument rules of :mod:`.spec`, which raise
    naming the argument).

    Backends whose ops check the same rules in C++ (``checks_args``) skip the Python check, which
    costs as much as their whole call at small shapes, unless the op raised: then ``check`` raises
    the canonical message (or, if the Python rules pass, the op's error is re-raised).
    """
    if not chosen.checks_args or torch.compiler.is_compiling():
        check(*check_args)
        return op(*args)
    try:
        return op(*args)
    except (TypeError, ValueError, RuntimeError) as e:
        failure = e
    check(*check_args)
    raise failure


# ---- the Triton backend (imports triton lazily, on first use) ------------------------
from ..kernels.triton.backend import register as _register_triton  # noqa: E402

_register_triton()
