"""The fused coupling op's configuration and argument rules, shared by every backend.

:class:`CouplingConfig` is the one home of the op's six scalars; the compiled backends
parse the same values into ``flowkern::CouplingConfig`` (``csrc/ops_check.h``) and apply
the same rules with the same messages, so every backend fails the same way, naming the
argument.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

import torch

from ._checks import check_choice, check_number

__all__ = [
    "SCALES",
    "PASSIVE",
    "FLOAT_DTYPES",
    "CouplingConfig",
    "CONFIG_DEFAULTS",
    "check_coupling_args",
    "check_packed_args",
    "check_call",
    "acc_dtype",
    "channel_view",
]

SCALES = ("exp", "tanh", "atan", "sigmoid")  # the scale functions f(s_raw), by name
PASSIVE = ("first", "second")  # which side of ``split`` passes through unchanged
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class CouplingConfig:
    """The non-tensor arguments of the coupling op, validated on construction.

    Args:
        split: channels ``[:split]`` form one side, ``[split:]`` the other; ``1 <= split <= C - 1``.
        passive: ``"first"`` or ``"second"``: the side that passes through (and feeds the subnet).
        scale: f in ``exp(f(s_raw))``: ``"exp"`` (f = id), ``"tanh"`` (clamp tanh(s / clamp),
            FrEIA's soft clamp), ``"atan"`` (clamp atan_k atan(s / clamp)), ``"sigmoid"``
            (log(sigmoid(s + 2) + eps), Glow).
        clamp: the soft-clamp bound of tanh / atan (> 0).
        atan_k: atan's factor (2 / pi: the bound is +-clamp).
        eps: added to sigmoid(s + 2) before the log (>= 0).

    Example:
        >>> cfg = CouplingConfig(2, scale="atan", clamp=3)
        >>> cfg.schema_args[:4], cfg.active_channels(5)
        ((2, 'first', 'atan', 3.0), 3)
    """

    split: int
    passive: str = "first"
    scale: str = "tanh"
    clamp: float = 1.0
    atan_k: float = 2.0 / math.pi
    eps: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.split, bool) or not isinstance(self.split, int):
            raise TypeError(f"split must be an int channel index, got {type(self.split).__name__}")
        check_choice("passive", self.passive, PASSIVE)
        check_choice("scale", self.scale, SCALES)
        for name in ("clamp", "atan_k", "eps"):  # stored as float: the schemas' ``float`` arguments
            object.__setattr__(self, name, check_number(name, getattr(self, name)))
        if self.scale in ("tanh", "atan") and self.clamp <= 0:
            raise ValueError(f"clamp must be > 0 for scale={self.scale!r}, got {self.clamp}")
        if self.eps < 0:
            raise ValueError(f"eps must be >= 0, got {self.eps}")

    @property
    def passive_first(self) -> bool:
        return self.passive == "first"

    @property
    def schema_args(self) -> tuple:
        """The six config arguments of the ops' schemas, in order."""
        return (self.split, self.passive, self.scale, self.clamp, self.atan_k, self.eps)

    def active_channels(self, channels: int) -> int:
        """How many of ``channels`` the coupling transforms."""
        return channels - self.split if self.passive_first else self.split


CONFIG_DEFAULTS = {f.name: f.default for f in fields(CouplingConfig) if f.default is not MISSING}
"""The config scalars' defaults, ``{name: value}`` (all but ``split``): the op functions' keyword defaults."""


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Log-det accumulation dtype: float64 for float64 input, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def channel_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-channel values ``v`` (C,) as (1, C, 1, ...) to broadcast over ``like`` (B, C, *S)."""
    return v.reshape(1, -1, *([1] * (like.dim() - 2)))


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
    return cfg.active_channels(C)


def _check_like(name: str, v: object, x: torch.Tensor, x_name: str, shape: tuple, what: str) -> None:
    """v is a tensor with x's dtype and device and the given shape (``what`` describes it)."""
    _check_tensor(name, v)
    if v.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of {x_name} ({x.dtype}), got {v.dtype}")
    if v.device != x.device:
        raise ValueError(f"{name} must be on the device of {x_name} ({x.device}), got {v.device}")
    if tuple(v.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} {what}, got {tuple(v.shape)}")


def _check_actnorm(x: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, x_name: str) -> None:
    if (a is None) != (b is None):
        raise ValueError("a and b must both be given (actnorm) or both be None")
    if a is not None:
        for name, v in (("a", a), ("b", b)):
            _check_like(name, v, x, x_name, (x.shape[1],), "(one value per channel)")


def check_coupling_args(x, s_raw, t, a, b, cfg: CouplingConfig, x_name: str = "x") -> None:
    """Raise TypeError / ValueError naming the offending argument; return None if valid.

    x: (B, C, *S) floating; s_raw, t: (B, C_active, *S) like x; a, b: (C,) or both None;
    1 <= split <= C - 1.
    """
    c_act = _active_channels(x, cfg, x_name)
    want = (x.shape[0], c_act, *x.shape[2:])
    for name, v in (("s_raw", s_raw), ("t", t)):
        _check_like(name, v, x, x_name, want, "(B, active channels, *S)")
    _check_actnorm(x, a, b, x_name)


def check_packed_args(x, h, a, b, cfg: CouplingConfig, x_name: str = "x") -> int:
    """:func:`check_coupling_args` for a packed subnet output h = [s_raw | t] of shape
    (B, 2 C_a, *S); returns C_a, the active channel count."""
    c_act = _active_channels(x, cfg, x_name)
    _check_like("h", h, x, x_name, (x.shape[0], 2 * c_act, *x.shape[2:]),
                "(B, 2 x active channels, *S) = [s_raw | t] along channels")
    _check_actnorm(x, a, b, x_name)
    return c_act


def check_call(inp, s_raw, t, a, b, cfg_args: tuple, inverse: bool) -> tuple[CouplingConfig, torch.Tensor, torch.Tensor]:
    """Check one call of the op as a Python backend receives it; return its config and (s_raw, t).

    ``cfg_args``: the six config scalars in schema order; ``t is None``: ``s_raw`` is the packed
    h = [s_raw | t], returned as its two views. Raises TypeError / ValueError naming the argument
    (``inp`` is named y with ``inverse``, else x).
    """
    cfg = CouplingConfig(*cfg_args)
    name = "y" if inverse else "x"
    if t is None:
        c_act = check_packed_args(inp, s_raw, a, b, cfg, name)
        return cfg, s_raw[:, :c_act], s_raw[:, c_act:]
    check_coupling_args(inp, s_raw, t, a, b, cfg, name)
    return cfg, s_raw, t
