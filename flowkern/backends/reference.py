r"""Pure-PyTorch reference of the fused actnorm + affine coupling op: the spec.

For x of shape (B, C, \*S), channel split at ``split`` into a passive and an active side:

.. math::

    z &= x \odot a + b                                   &\text{(actnorm, per channel)} \\
    s &= f(s_{raw})                                      &\text{(scale function)} \\
    y_p &= z_p, \quad y_a = z_a \odot e^{s} + t \\
    \log|\det J| &= \textstyle\prod S \sum_c \log|a_c| + \sum_{a, S} s

with f one of exp: :math:`s = s_{raw}`, tanh: :math:`s = c \tanh(s_{raw}/c)`,
atan: :math:`s = c\,k \arctan(s_{raw}/c)`, sigmoid (Glow):
:math:`s = \log(\sigma(s_{raw} + 2) + \epsilon)`. The inverse is
:math:`z_a = (y_a - t) e^{-s}`, :math:`x = (z - b) / a`, log-det negated.

Every backend is tested against these functions. They compute in the input dtype
(PyTorch's own same-dtype computation; upcast the inputs for an fp32/fp64
reference) and accumulate the log-det in :func:`spec.acc_dtype`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..spec import CouplingConfig, acc_dtype, channel_view, check_call

__all__ = ["scale_ref", "coupling_forward_ref", "coupling_inverse_ref", "run", "BACKEND"]


def scale_ref(s_raw: torch.Tensor, cfg: CouplingConfig) -> torch.Tensor:
    """s = f(s_raw) for the configured scale function."""
    if cfg.scale == "exp":
        return s_raw
    if cfg.scale == "tanh":
        return cfg.clamp * torch.tanh(s_raw / cfg.clamp)
    if cfg.scale == "atan":
        return (cfg.clamp * cfg.atan_k) * torch.atan(s_raw / cfg.clamp)
    u = s_raw + 2.0
    if cfg.eps == 0.0:
        return F.logsigmoid(u)
    return torch.log(torch.sigmoid(u) + cfg.eps)


def _split(v: torch.Tensor, cfg: CouplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(passive, active) channel views of v."""
    first, second = v[:, : cfg.split], v[:, cfg.split :]
    return (first, second) if cfg.passive_first else (second, first)


def _join(passive: torch.Tensor, active: torch.Tensor, cfg: CouplingConfig) -> torch.Tensor:
    return torch.cat((passive, active) if cfg.passive_first else (active, passive), dim=1)


def _actnorm_logdet(a: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    if a is None:
        return torch.zeros((), dtype=acc_dtype(x.dtype), device=x.device)
    n_spatial = math.prod(x.shape[2:])
    return n_spatial * torch.log(torch.abs(a.to(acc_dtype(x.dtype)))).sum()


def _sum_s(s: torch.Tensor) -> torch.Tensor:
    return s.to(acc_dtype(s.dtype)).flatten(1).sum(1)


def coupling_forward_ref(
    x: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    cfg: CouplingConfig,
    check: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Forward: (y, logdet) or (y, logdet, err) with ``check``; err (B,) = max |x' - x|."""
    z = x if a is None else x * channel_view(a, x) + channel_view(b, x)
    z_p, z_a = _split(z, cfg)
    s = scale_ref(s_raw, cfg)
    y = _join(z_p, z_a * torch.exp(s) + t, cfg)
    logdet = _sum_s(s) + _actnorm_logdet(a, x)
    if not check:
        return y, logdet
    x_rebuilt, _ = coupling_inverse_ref(y, s_raw, t, a, b, cfg)
    diff = (x_rebuilt - x).abs().to(acc_dtype(x.dtype)).flatten(1)
    err = diff.amax(1) if diff.shape[1] else diff.new_zeros(x.shape[0])
    return y, logdet, err


def coupling_inverse_ref(
    y: torch.Tensor,
    s_raw: torch.Tensor,
    t: torch.Tensor,
    a: torch.Tensor | None,
    b: torch.Tensor | None,
    cfg: CouplingConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse: (x, logdet_inverse) with logdet_inverse = -logdet of the forward."""
    y_p, y_a = _split(y, cfg)
    s = scale_ref(s_raw, cfg)
    z = _join(y_p, (y_a - t) * torch.exp(-s), cfg)
    x = z if a is None else (z - channel_view(b, y)) / channel_view(a, y)
    return x, -(_sum_s(s) + _actnorm_logdet(a, y))


def run(inp, s_raw, t, a, b, cfg_args: tuple, inverse: bool, check: bool) -> tuple:
    """The :class:`~flowkern.backends.Backend` entry: (out, logdet, err); autograd is PyTorch's."""
    cfg, s_raw, t = check_call(inp, s_raw, t, a, b, cfg_args, inverse)
    if inverse:
        return (*coupling_inverse_ref(inp, s_raw, t, a, b, cfg), None)
    out = coupling_forward_ref(inp, s_raw, t, a, b, cfg, check)
    return out if check else (*out, None)


def _why_unavailable(device_type: str) -> str | None:
    return None


def _make_backend():
    from . import Backend  # the package imports this module while it builds its registry

    return Backend("reference", run, _why_unavailable)


BACKEND = _make_backend()
