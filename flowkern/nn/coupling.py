r"""Affine coupling layers on the fused op :func:`flowkern.ops.coupling_forward`.

With channels split into a passive part x_p and an active part x_a,

.. math:: (s_{raw}, t) = \text{subnet}(z_p),\quad y_p = z_p,\quad
          y_a = z_a \odot e^{f(s_{raw})} + t,\quad \log|\det J| = \textstyle\sum f(s_{raw})

with z = x (:class:`AffineCoupling`) or z = x * a + b (:class:`ActNormCoupling`, the
actnorm fused into the same op through its ``a``, ``b`` arguments; its log-det term
is added by the op). The subnet returns either one tensor h of shape
(B, 2 * c_act, *S), passed whole to the op's packed form (``s_raw = h[:, :c_act]``,
``t = h[:, c_act:]``, never copied, one grad_h in backward), or a pair ``(s_raw, t)``.

Channel split: ``split`` defaults to ``channels // 2``; channels [0, split) are the
first part, [split, channels) the second. For an odd count the second part holds the
extra channel, so with ``passive="first"`` (default) the active side gets it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_int
from ..ops.coupling import PACKED, coupling_forward, coupling_forward_packed, coupling_inverse, coupling_inverse_packed
from ..spec import CouplingConfig, channel_view
from .actnorm import ActNormParams
from .base import (
    InvertibleModule,
    ParamGrads,
    backprop_block,
    check_input,
    check_nonzero_scale,
    check_overflow,
    check_requested,
    record_check_error,
)

__all__ = ["AffineCoupling", "ActNormCoupling", "SeparateNets"]


class SeparateNets(nn.Module):
    """Subnet pair returning ``(s_net(v), t_net(v))`` (CompVis: separate scale and shift nets).

    Args:
        s_net, t_net: the scale and shift networks.

    Example:
        >>> nets = SeparateNets(nn.Linear(2, 2), nn.Linear(2, 2))
        >>> [tuple(v.shape) for v in nets(torch.randn(3, 2))]
        [(3, 2), (3, 2)]
    """

    def __init__(self, s_net: nn.Module, t_net: nn.Module) -> None:
        super().__init__()
        self.s_net, self.t_net = s_net, t_net

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.s_net(v), self.t_net(v)


class AffineCoupling(InvertibleModule):
    """Affine coupling on the fused op (module docstring).

    Args:
        channels: C of the (B, C, *S) input (>= 2).
        subnet: maps the passive channels (B, c_pas, *S) to (B, 2 * c_act, *S) = [s_raw | t] or
            to a pair (s_raw, t).
        clamp, scale, passive, split, atan_k, eps: the op's config
            (:class:`~flowkern.spec.CouplingConfig`); ``split`` defaults to ``channels // 2``.

    Example:
        >>> from flowkern.nn import MLP
        >>> layer = AffineCoupling(4, MLP(2, 4, hidden=8))
        >>> x = torch.randn(3, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-6)
        True
    """

    def __init__(
        self,
        channels: int,
        subnet: nn.Module,
        *,
        clamp: float = 2.0,
        scale: str = "tanh",
        passive: str = "first",
        split: int | None = None,
        atan_k: float = 2.0 / math.pi,
        eps: float = 0.0,
    ) -> None:
        super().__init__()
        check_int("channels", channels, minimum=2)
        if not callable(subnet):
            raise TypeError(f"subnet must be a callable nn.Module, got {type(subnet).__name__}")
        split = channels // 2 if split is None else split
        self.cfg = CouplingConfig(split, passive, scale, clamp, atan_k, eps)
        check_int("split", split, minimum=1, maximum=channels - 1)
        self.channels = channels
        self.c_act = self.cfg.active_channels(channels)
        self.c_pas = channels - self.c_act
        self.subnet = subnet

    # ---- pieces overridden by subclasses ------------------------------------
    def _coefficients(self, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The op's actnorm (a, b); None for a plain coupling."""
        return None, None

    def _init_from(self, v: torch.Tensor, inverse: bool) -> None:
        """Data-dependent initialisation hook (ActNormCoupling)."""

    def _passive_z(self, x_p: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
        """z_p: what the subnet sees (= y_p)."""
        if a is None:
            return x_p
        sl = self._passive_slice()
        return torch.addcmul(channel_view(b[sl], x_p), x_p, channel_view(a[sl], x_p))

    def _passive_x(self, y_p: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
        """x_p rebuilt from y_p = z_p."""
        if a is None:
            return y_p
        sl = self._passive_slice()
        return (y_p - channel_view(b[sl], y_p)) / channel_view(a[sl], y_p)

    def _subnet_input(self, z_p: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return z_p

    # ---- shared machinery ---------------------------------------------------
    def _passive_slice(self) -> slice:
        s = self.cfg.split
        return slice(0, s) if self.cfg.passive_first else slice(s, self.channels)

    def _parts(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.cfg.split
        first, second = v[:, :s], v[:, s:]
        return (first, second) if self.cfg.passive_first else (second, first)

    def _passive(self, v: torch.Tensor) -> torch.Tensor:
        """``_parts(v)[0]`` alone."""
        return v[:, self._passive_slice()]

    def _join(self, passive: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return torch.cat((passive, active) if self.cfg.passive_first else (active, passive), dim=1)

    def _op_kwargs(self) -> dict:
        cfg = self.cfg
        return dict(split=cfg.split, passive=cfg.passive, scale=cfg.scale, clamp=cfg.clamp, atan_k=cfg.atan_k,
                    eps=cfg.eps)

    def _scale_shift(self, z_p: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The subnet's output as ``(s_raw, t)``, or ``(h, PACKED)`` for one packed tensor h."""
        h = self.subnet(self._subnet_input(z_p, c))
        if isinstance(h, tuple):
            s_raw, t = h
            checks = (("s_raw", s_raw, self.c_act), ("t", t, self.c_act))
        else:
            if not isinstance(h, torch.Tensor) or h.dim() < 2 or h.shape[1] != 2 * self.c_act:
                got = tuple(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
                raise ValueError(f"subnet must return (B, {2 * self.c_act}, *S) = 2 x active channels, got {got}")
            s_raw, t = h, PACKED
            checks = (("", h, 2 * self.c_act),)
        if s_raw.dtype != z_p.dtype:  # autocast ran the subnet in lower precision: the op runs in z's dtype
            s_raw, t = s_raw.to(z_p.dtype), PACKED if t is PACKED else t.to(z_p.dtype)
        for name, v, ch in checks:
            want = (z_p.shape[0], ch, *z_p.shape[2:])
            if tuple(v.shape) != want:
                raise ValueError(f"subnet output {name or 'h'} must have shape {want}, got {tuple(v.shape)}")
        return s_raw, t

    def _op(self, inverse: bool, inp: torch.Tensor, st: tuple, a, b, check: bool = False) -> tuple:
        """The fused op on ``st`` from :meth:`_scale_shift` (packed when ``st[1] is PACKED``)."""
        s_raw, t = st
        kw = self._op_kwargs()
        if inverse:
            return coupling_inverse_packed(inp, s_raw, a, b, **kw) if t is PACKED else \
                coupling_inverse(inp, s_raw, t, a, b, **kw)
        return coupling_forward_packed(inp, s_raw, a, b, check=check, **kw) if t is PACKED else \
            coupling_forward(inp, s_raw, t, a, b, check=check, **kw)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y_p = z_p, y_a = z_a exp(f(s_raw)) + t; logdet = sum f(s_raw) (+ actnorm term)."""
        return self.run_checked(check_input(x, self.channels, "x", self), c)

    def run_checked(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` on an ``x`` its caller has already checked (a step that holds this
        coupling checks its input once)."""
        self._init_from(x, inverse=False)
        a, b = self._coefficients(x)
        st = self._scale_shift(self._passive_z(self._passive(x), a, b), c)
        if check_requested():
            y, logdet, err = self._op(False, x, st, a, b, check=True)
            record_check_error(self, err)
        else:
            y, logdet = self._op(False, x, st, a, b)
        check_overflow(self, x, y, logdet, "forward")
        return y, logdet

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_a = (y_a - t) exp(-f(s_raw)), x = (z - b) / a; logdet negated."""
        return self.invert_checked(check_input(y, self.channels, "y", self), c)

    def invert_checked(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`inverse` on a ``y`` its caller has already checked."""
        self._init_from(y, inverse=True)
        a, b = self._coefficients(y)
        x, logdet = self._op(True, y, self._scale_shift(self._passive(y), c), a, b)
        check_overflow(self, y, x, logdet, "inverse")
        return x, logdet

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads):
        """One subnet evaluation serves both the inverse and the re-run forward: the
        subnet input z_p equals the passive part of y."""
        y_p = self._passive(y)
        with torch.enable_grad():
            a, b = self._coefficients(y)
            with torch.no_grad():
                x_p_values = self._passive_x(y_p, a, b)
            x_p = x_p_values.detach().requires_grad_(True)
            st = self._scale_shift(self._passive_z(x_p, a, b), c)
        detach = (lambda v: None if v is None else v.detach())
        with torch.no_grad():
            x, _ = self._op(True, y, tuple(map(detach, st)), detach(a), detach(b))
        with torch.enable_grad():
            x_a = self._parts(x)[1].detach().requires_grad_(True)
            out, logdet = self._op(False, self._join(x_p, x_a), st, a, b)
            (g_p, g_a), (grad_c,) = backprop_block(self, (out, logdet), (grad_y, grad_logdet), (x_p, x_a), (c,), grads)
        return x, self._join(g_p, g_a), grad_c

    def extra_repr(self) -> str:
        cfg = self.cfg
        return (f"channels={self.channels}, passive={cfg.passive!r}, "
                f"split={cfg.split}, scale={cfg.scale!r}, clamp={cfg.clamp}")


class ActNormCoupling(AffineCoupling):
    """ActNorm (``loc``, ``scale`` with data-dependent init, see :mod:`flowkern.nn.actnorm`)
    fused into an :class:`AffineCoupling`: one op call computes z = x * a + b, the coupling
    and both log-det terms. The subnet sees the passive part of z.

    Args:
        channels, subnet: as for :class:`AffineCoupling`.
        allow_inverse_init: as for :class:`~flowkern.nn.ActNorm`.
        **kwargs: the coupling's options (:class:`AffineCoupling`).

    Example:
        >>> from flowkern.nn import MLP
        >>> layer = ActNormCoupling(4, MLP(2, 4, hidden=8))
        >>> y, logdet = layer(3 + torch.randn(16, 4))  # initialises the actnorm
        >>> bool(layer.actnorm.initialized)
        True
    """

    def __init__(self, channels: int, subnet: nn.Module, *, allow_inverse_init: bool = False, **kwargs) -> None:
        super().__init__(channels, subnet, **kwargs)
        self.actnorm = ActNormParams(channels, allow_inverse_init=allow_inverse_init)

    def _coefficients(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_nonzero_scale(self.actnorm, self.actnorm.scale, f"{type(self).__name__}.actnorm.scale")
        return self.actnorm.coefficients(like)

    def _init_from(self, v: torch.Tensor, inverse: bool) -> None:
        self.actnorm.maybe_initialize(v, inverse)
