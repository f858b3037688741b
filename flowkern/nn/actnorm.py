r"""Activation normalisation (Glow; parameterised as in the CompVis iin/net2net code).

.. math:: y = \text{scale} \odot (x + \text{loc}),\qquad
          \log|\det J| = \textstyle\prod S \sum_c \log|\text{scale}_c|

i.e. the fused op's actnorm with ``a = scale``, ``b = scale * loc``. The first forward
in training mode sets ``loc = -mean``, ``scale = 1 / std`` per channel (over batch and
space), so the output has zero mean and unit std; the ``initialized`` buffer is saved
with the weights so a loaded checkpoint is never re-initialised. Under an initialised
``torch.distributed`` process group the statistics are all-reduced, so every rank
starts from identical parameters.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import nn

from .._checks import check_int
from ..spec import acc_dtype, channel_view
from .base import InitFlag, InvertibleModule, ParamGrads, check_input

__all__ = ["ActNorm", "ActNormParams", "channel_stats"]


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std of x over batch and space, in float64,
    all-reduced over the default process group when one is initialised."""
    v = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    moments = torch.stack((v.sum(1), (v * v).sum(1), v.new_full((v.shape[0],), float(v.shape[1]))))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(moments)
    total, total_sq, n = moments
    mean = total / n
    var = (total_sq - n * mean * mean) / (n - 1).clamp_min(1.0)
    return mean, var.clamp_min(0.0).sqrt()


class ActNormParams(InitFlag, nn.Module):
    """``loc``, ``scale`` (C,) and the ``initialized`` buffer, with data-dependent init."""

    def __init__(self, channels: int, allow_inverse_init: bool = False) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        self.allow_inverse_init = allow_inverse_init
        self.loc = nn.Parameter(torch.zeros(channels))
        self.scale = nn.Parameter(torch.ones(channels))
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._track_init_flag()

    def maybe_initialize(self, v: torch.Tensor, inverse: bool) -> None:
        """Data-dependent init from ``v`` on the first training-mode call."""
        if not self.training or self._is_initialized():
            return
        if inverse and not self.allow_inverse_init:
            raise RuntimeError(
                f"{type(self).__name__} is not initialised: run a training-mode forward first, "
                "or construct it with allow_inverse_init=True to initialise from an inverse call"
            )
        mean, std = channel_stats(v)
        with torch.no_grad():
            self.loc.copy_(-mean)
            self.scale.copy_(1.0 / (std + 1e-6))
            self._mark_initialized()

    def coefficients(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, b) = (scale, scale * loc) in the dtype of ``like`` (autograd-tracked)."""
        a = self.scale.to(like.dtype)
        return a, a * self.loc.to(like.dtype)

    def extra_repr(self) -> str:
        return f"{self.channels}"


def _rebuild_x(y: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x = (y - b) / a, per channel: the inverse of y = x a + b."""
    return (y - channel_view(b, y)) / channel_view(a, y)


class ActNorm(ActNormParams, InvertibleModule):
    """Per-channel affine normalisation with data-dependent init (module docstring)."""

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        ld = math.prod(x.shape[2:]) * torch.log(torch.abs(self.scale.to(acc_dtype(x.dtype)))).sum()
        return ld.expand(x.shape[0])

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "x")
        self.maybe_initialize(x, inverse=False)
        a, b = self.coefficients(x)
        return torch.addcmul(channel_view(b, x), x, channel_view(a, x)), self._logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(y, self.channels, "y")
        self.maybe_initialize(y, inverse=True)
        a, b = self.coefficients(y)
        return _rebuild_x(y, a, b), -self._logdet(y)

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads):
        """Closed form of y = scale (x + loc), logdet = prod(S) sum log|scale| (x as :meth:`inverse`
        rebuilds it; the init check is skipped: the forward ran):
        grad_x = grad_y scale;  grad_scale = (sum_{B,S} grad_y y + prod(S) sum_B grad_logdet) / scale
        (as y = scale (x + loc));  grad_loc = scale sum_{B,S} grad_y."""
        with torch.no_grad():
            a, b = self.coefficients(y)
            x = _rebuild_x(y, a, b)
            dims = [0, *range(2, y.dim())]
            if self.scale.requires_grad:
                acc = acc_dtype(y.dtype)
                g_scale = (grad_y * y).sum(dims, dtype=acc) + math.prod(y.shape[2:]) * grad_logdet.sum(dtype=acc)
                grads.add(self.scale, (g_scale / self.scale.to(acc)).to(self.scale.dtype))
            if self.loc.requires_grad:
                grads.add(self.loc, (grad_y.sum(dims) * a).to(self.loc.dtype))
            return x, grad_y * channel_view(a, y), None
