"""Argument rules of the fused coupling op, shared by every backend.

The compiled ops re-check the same rules in ``csrc/ops.cpp``; this module is what
the Python entry points, the reference and the Triton backend call first, so
that every backend fails the same way with a message naming the argument.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

__all__ = [
    "SCALE_IDS",
    "FLOAT_DTYPES",
    "CouplingConfig",
    "make_config",
    "check_coupling_args",
    "check_packed_args",
    "acc_dtype",
]

# Keep in sync with csrc/common/coupling_math.h::ScaleFn.
SCALE_IDS: dict[str, int] = {"exp": 0, "tanh": 1, "atan": 2, "sigmoid": 3}
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class CouplingConfig:
    """The non-tensor arguments of the op, validated."""

    split: int
    passive_first: bool
    scale: str
    clamp: float
    atan_k: float
    eps: float

    @property
    def scale_id(self) -> int:
        return SCALE_IDS[self.scale]

    @property
    def schema_args(self) -> tuple:
        """The six config arguments of the compiled ops' schemas, in order (scale as its id)."""
        return (self.split, self.passive_first, self.scale_id, self.clamp, self.atan_k, self.eps)


def make_config(
    split: int,
    passive: str = "first",
    scale: str = "tanh",
    clamp: float = 1.0,
    atan_k: float = 2.0 / math.pi,
    eps: float = 0.0,
) -> CouplingConfig:
    """Validate the keyword arguments of ``coupling_forward`` / ``coupling_inverse``
    (cached per distinct, type-exact argument tuple: layers call this on every step)."""
    if torch.compiler.is_compiling():  # dynamo traces the plain function (it warns on caches)
        return _make_config(split, passive, scale, clamp, atan_k, eps)
    try:
        return _make_config_cached(split, passive, scale, clamp, atan_k, eps)
    except TypeError as e:
        if "unhashable" not in str(e):
            raise
    return _make_config(split, passive, scale, clamp, atan_k, eps)


def _make_config(split, passive, scale, clamp, atan_k, eps) -> CouplingConfig:
    if isinstance(split, bool) or not isinstance(split, int):
        raise TypeError(f"split must be an int channel index, got {type(split).__name__}")
    if passive not in ("first", "second"):
        raise ValueError(f"passive must be 'first' or 'second', got {passive!r}")
    if scale not in SCALE_IDS:
        raise ValueError(f"scale must be one of {sorted(SCALE_IDS)}, got {scale!r}")
    for name, value in (("clamp", clamp), ("atan_k", atan_k), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if scale in ("tanh", "atan") and clamp <= 0:
        raise ValueError(f"clamp must be > 0 for scale={scale!r}, got {clamp}")
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    return CouplingConfig(int(split), passive == "first", scale, float(clamp), float(atan_k), float(eps))


_make_config_cached = functools.lru_cache(maxsize=256, typed=True)(_make_config)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Log-det accumulation dtype: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_tensor(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _active_channels(x: torch.Tensor, cfg: CouplingConfig, x_name: str) -> int:
    """Check x (B, C, *S) floating and 1 <= split <= C - 1; return the active channel count."""
    _check_tensor(x_name, x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{x_name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{x_name} must have shape (B, C, *S) with at least 2 dims, got {tuple(x.shape)}")
    C = x.shape[1]
    if not 1 <= cfg.split <= C - 1:
        raise ValueError(f"split must be in [1, C - 1] = [1, {C - 1}] for C={C} channels, got {cfg.split}")
    return C - cfg.split if cfg.passive_first else cfg.split


def _check_like(name: str, v: object, x: torch.Tensor, x_name: str, shape: tuple, what: str) -> None:
    """v is a tensor with x's dtype and device and the given shape (``what`` describes it)."""
    _check_tensor(name, v)
    if v.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of {x_name} ({x.dtype}), got {v.dtype}")
    if v.device != x.device:
        raise ValueError(f"{name} must be on the device of {x_name} ({x.device}), got {v.device}")
    if tuple(v.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} {what}, got {tuple(v.shape)}")


def check_coupling_args(
    x: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    cfg: CouplingConfig,
    x_name: str = "x",
) -> None:
    """Raise TypeError/ValueError naming the offending argument; return None if valid.

    x: (B, C, *S) floating; s_raw, t: (B, C_active, *S) like x; a, b: (C,) or both None;
    1 <= split <= C - 1.
    """
    c_act = _active_channels(x, cfg, x_name)
    want = (x.shape[0], c_act, *x.shape[2:])
    for name, v in (("s_raw", s_raw), ("t", t)):
        _check_like(name, v, x, x_name, want, "(B, active channels, *S)")
    _check_actnorm(x, a, b, x_name)


def _check_actnorm(x: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, x_name: str) -> None:
    if (a is None) != (b is None):
        raise ValueError("a and b must both be given (actnorm) or both be None")
    if a is not None:
        for name, v in (("a", a), ("b", b)):
            _check_like(name, v, x, x_name, (x.shape[1],), "(one value per channel)")


def check_packed_args(
    x: torch.Tensor,
    h: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    cfg: CouplingConfig,
    x_name: str = "x",
) -> int:
    """:func:`check_coupling_args` for a packed subnet output h = [s_raw | t] of shape
    (B, 2 C_a, *S); returns C_a, the active channel count."""
    c_act = _active_channels(x, cfg, x_name)
    _check_like("h", h, x, x_name, (x.shape[0], 2 * c_act, *x.shape[2:]),
                "(B, 2 x active channels, *S) = [s_raw | t] along channels")
    _check_actnorm(x, a, b, x_name)
    return c_act
