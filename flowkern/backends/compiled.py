"""The ``cpu`` and ``cuda`` backends: the compiled ops ``flowkern._C`` / ``flowkern._C_cuda``.

Schemas (``csrc/ops.cpp``; ``*cfg`` = split, passive, scale, clamp, atan_k, eps)::

    flowkern::coupling(input, s_raw, t, a?, b?, *cfg, inverse, check) -> (out, logdet, err)
    flowkern::coupling.packed(input, h, a?, b?, *cfg, inverse, check) -> (out, logdet, err)
    flowkern::coupling_backward(grad_out, grad_logdet, input, s_raw, t, a?, b?, *cfg, inverse)
        -> (grad_input, grad_s_raw, grad_t, grad_a, grad_b)
    flowkern::coupling_backward.packed(grad_out, grad_logdet, input, h, a?, b?, *cfg, inverse)
        -> (grad_input, grad_h, grad_a, grad_b)

``inverse`` runs y -> x (logdet of the inverse); ``err`` is (B,) with ``check`` (forward only),
else empty; grad_a / grad_b are empty without actnorm; h = [s_raw | t] along channels. Their
autograd is C++, at the Autograd dispatch key (``csrc/autograd.cpp``: the forward saves its
inputs, the backward runs the fused backward op); this module registers their fake kernels, once. Without the extensions flowkern runs on
the reference backend; the reason is kept in :data:`CPP_REASON` / :data:`CUDA_REASON` and said
once, as a warning, the first time the cpu backend would have been chosen.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

from ..spec import CouplingConfig, acc_dtype, check_coupling_args, check_packed_args

__all__ = ["BACKENDS", "CPP_REASON", "CUDA_REASON"]

_REBUILD = "rebuild with `pip install --no-build-isolation -e .` (or `make install`)"


def _built_for() -> str | None:
    try:
        from .._build_info import TORCH_VERSION  # written by setup.py
    except ImportError:
        return None
    return TORCH_VERSION


def _try_import(name: str) -> str | None:
    """None when ``flowkern.<name>`` imports, else why not."""
    try:
        importlib.import_module(f"flowkern.{name}")
    except ImportError as e:  # missing, or built against another torch
        built = _built_for()
        if built is not None and built != torch.__version__:
            return (f"flowkern.{name} was built for torch {built} but torch {torch.__version__} "
                    f"is installed; {_REBUILD}")
        return f"flowkern.{name} could not be imported ({e}); {_REBUILD}"
    return None


_DISABLED = os.environ.get("FLOWKERN_USE_CPP", "1") == "0"
CPP_REASON = "disabled by FLOWKERN_USE_CPP=0" if _DISABLED else _try_import("_C")
if CPP_REASON is not None:
    CUDA_REASON = f"needs the CPU extension, which is unavailable: {CPP_REASON}"
elif torch.version.cuda is None:
    CUDA_REASON = f"torch {torch.__version__} is a CPU-only build"
else:
    CUDA_REASON = _try_import("_C_cuda")


# ---- fake kernels (shapes for torch.compile / meta tensors), with the Python argument rules -----
def _config(split, passive, scale, clamp, atan_k, eps, inverse, check) -> CouplingConfig:
    if inverse and check:
        raise ValueError("check (the round-trip error) applies to the forward only (inverse=False)")
    return CouplingConfig(split, passive, scale, clamp, atan_k, eps)


def _fake_outputs(inp, check: bool) -> tuple:
    acc = acc_dtype(inp.dtype)
    return (_contiguous_like(inp),
            inp.new_empty((inp.shape[0],), dtype=acc), inp.new_empty((inp.shape[0] if check else 0,), dtype=acc))


def _fake_grad_ab(inp, a) -> tuple:
    n_ab = inp.shape[1] if a is not None else 0
    return inp.new_empty((n_ab,)), inp.new_empty((n_ab,))


def _contiguous_like(v):
    return torch.empty_like(v, memory_format=torch.contiguous_format)


def _name(inverse: bool) -> str:
    return "y" if inverse else "x"


def _coupling_fake(inp, s_raw, t, a, b, *cfg_inverse_check):
    check_coupling_args(inp, s_raw, t, a, b, _config(*cfg_inverse_check), _name(cfg_inverse_check[-2]))
    return _fake_outputs(inp, cfg_inverse_check[-1])


def _coupling_packed_fake(inp, h, a, b, *cfg_inverse_check):
    check_packed_args(inp, h, a, b, _config(*cfg_inverse_check), _name(cfg_inverse_check[-2]))
    return _fake_outputs(inp, cfg_inverse_check[-1])


def _backward_fake(grad_out, grad_logdet, inp, s_raw, t, a, b, *cfg_inverse):
    check_coupling_args(inp, s_raw, t, a, b, _config(*cfg_inverse, False), _name(cfg_inverse[-1]))
    return (_contiguous_like(inp), _contiguous_like(s_raw), _contiguous_like(t), *_fake_grad_ab(inp, a))


def _backward_packed_fake(grad_out, grad_logdet, inp, h, a, b, *cfg_inverse):
    check_packed_args(inp, h, a, b, _config(*cfg_inverse, False), _name(cfg_inverse[-1]))
    return (_contiguous_like(inp), _contiguous_like(h), *_fake_grad_ab(inp, a))


if CPP_REASON is None:
    _ops = torch.ops.flowkern
    for _op, _fake in ((_ops.coupling.default, _coupling_fake), (_ops.coupling.packed, _coupling_packed_fake),
                       (_ops.coupling_backward.default, _backward_fake),
                       (_ops.coupling_backward.packed, _backward_packed_fake)):
        torch.library.register_fake(_op, _fake)


# ---- the backends ------------------------------------------------------------------------------
def run(inp, s_raw, t, a, b, cfg_args: tuple, inverse: bool, check: bool) -> tuple:
    """(out, logdet, err) of ``flowkern::coupling`` (``t is None``: its ``.packed`` overload with
    s_raw = h); the op checks every argument itself (``csrc/ops_check.h``)."""
    if t is None:
        return torch.ops.flowkern.coupling.packed(inp, s_raw, a, b, *cfg_args, inverse, check)
    return torch.ops.flowkern.coupling.default(inp, s_raw, t, a, b, *cfg_args, inverse, check)


_warned: list[bool] = []


def _cpu_why(device_type: str) -> str | None:
    if device_type != "cpu":
        return f"the cpu backend runs on CPU tensors only, not {device_type}"
    if CPP_REASON is not None:
        if not _warned and not _DISABLED:
            _warned.append(True)
            warnings.warn(f"flowkern: C++ CPU backend unavailable ({CPP_REASON}); using the reference backend",
                          RuntimeWarning, stacklevel=4)
        return f"C++ extension unavailable: {CPP_REASON}"
    return None


def _cuda_why(device_type: str) -> str | None:
    if device_type != "cuda":
        return f"the cuda backend runs on CUDA tensors only, not {device_type}"
    if CUDA_REASON is not None:
        return f"CUDA extension unavailable: {CUDA_REASON}"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def _make_backends():
    from . import Backend  # the package imports this module while it builds its registry

    return [Backend("cpu", run, _cpu_why), Backend("cuda", run, _cuda_why)]


BACKENDS = _make_backends()
