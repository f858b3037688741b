r"""Activation normalisation (Glow; parameterised as in the CompVis iin/net2net code).

.. math:: y = \text{scale} \odot (x + \text{loc}),\qquad
          \log|\det J| = \textstyle\prod S \sum_c \log|\text{scale}_c|

i.e. the fused op's actnorm with ``a = scale``, ``b = scale * loc``. The first forward
in training mode sets ``loc = -mean``, ``scale = 1 / std`` per channel (over batch and
space), so the output has zero mean and unit std; the ``initialized`` buffer is saved
with the weights so a loaded checkpoint is never re-initialised. Under an initialised
``torch.distributed`` process group the statistics are all-reduced, so every rank
starts from identical parameters.

The init rule, shared by every ActNorm of flowkern (:mod:`flowkern.nn` and the
:mod:`flowkern.compat` adapters) through :func:`actnorm_init_std`: the init batch must hold
at least 2 values per channel (batch size x spatial size, else ``ValueError``) and only finite
values (else ``ValueError``); a channel with (near-)zero spread, std <= 1e-6 max(1, |mean|),
gets scale 1 (it is only centred) and a ``UserWarning`` naming it. Users who load or set the
parameters themselves skip the init with ``layer.initialized = True`` (``False`` re-arms it).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from .._checks import check_bool, check_int
from ..spec import acc_dtype, channel_view
from .base import InitFlag, InvertibleModule, ParamGrads, check_input, check_nonzero_scale

__all__ = ["ActNorm", "ActNormParams", "SettableInitFlag", "actnorm_init_std"]

ZERO_SPREAD_RTOL = 1e-6  # a std <= ZERO_SPREAD_RTOL * max(1, |mean|) is a constant channel


def _channel_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel (mean, unbiased std, count) of x over batch and space, in float64,
    all-reduced over the default process group when one is initialised."""
    v = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    moments = torch.stack((v.sum(1), (v * v).sum(1), v.new_full((v.shape[0],), float(v.shape[1]))))
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(moments)
    total, total_sq, n = moments
    mean = total / n
    var = (total_sq - n * mean * mean) / (n - 1).clamp_min(1.0)
    return mean, var.clamp_min(0.0).sqrt(), n


def _positions(mask: torch.Tensor, limit: int = 10) -> str:
    """The indices where ``mask`` holds, over its non-singleton dims (channel numbers for
    per-channel statistics), the first ``limit`` of them."""
    keep = [d for d in range(mask.dim()) if mask.shape[d] > 1] or list(range(mask.dim()))[-1:]
    rows = mask.nonzero()[:, keep].tolist() if mask.dim() else [[0]]
    items = [str(r[0]) if len(r) == 1 else str(tuple(r)) for r in rows[:limit]]
    more = f", ... ({len(rows)} in all)" if len(rows) > limit else ""
    return f"[{', '.join(items)}{more}]"


def actnorm_init_std(layer: str, mean: torch.Tensor, std: torch.Tensor | Callable[[], torch.Tensor],
                     count: float | torch.Tensor, input_name: str = "x", eps: float = 0.0) -> torch.Tensor:
    """The data-dependent init rule of every ActNorm in flowkern (:mod:`flowkern.nn` and the
    :mod:`flowkern.compat` adapters), written once: checks the statistics an ActNorm computed
    from its init batch and returns the std to normalise by.

    Args:
        layer: the layer's name for the messages (e.g. ``"ActNorm"``).
        mean, std: the init batch's mean and unbiased std per channel (any shape, e.g. (C,) or
            (1, C, 1, 1); computed by the caller, with the peer's formula for a compat adapter;
            ``std`` may be a callable returning it, called once the count has been checked).
        count: how many values each statistic was computed from (batch size x spatial size).
        input_name: the input's name for the messages.
        eps: added to the std of the channels that vary (the layer's own formula, e.g. CompVis'
            ``1 / (std + 1e-6)``).

    Raises ``ValueError`` if ``count < 2`` (no spread can be estimated: pass a first batch with
    more samples, or set the parameters and ``layer.initialized = True``) or if a statistic is
    not finite (the init batch holds NaN / inf, or overflows). Channels with (near-)zero spread,
    ``std <= 1e-6 * max(1, |mean|)``, get std 1 (so scale 1: they are only centred) and a
    ``UserWarning`` naming them. Returns ``std + eps`` with those channels set to exactly 1 (same
    shape and dtype).

    Example:
        >>> actnorm_init_std("ActNorm", torch.tensor([0.0]), torch.tensor([2.0]), count=16).tolist()
        [2.0]
    """
    n = float(count.min()) if isinstance(count, torch.Tensor) else float(count)
    if n < 2:
        raise ValueError(
            f"{layer}'s data-dependent init needs at least 2 values per channel (batch size x spatial size "
            f"of {input_name}) to estimate a spread, got {n:g}: pass a first training batch with batch size "
            "x spatial size >= 2, or load / set the parameters and set `initialized = True`")
    if callable(std):
        std = std()
    bad = ~(torch.isfinite(mean) & torch.isfinite(std))
    if bool(bad.any()):
        raise ValueError(
            f"{layer}'s data-dependent init got non-finite statistics in channels {_positions(bad)}: "
            f"{input_name} must hold finite values (no NaN / inf) in its init batch; check the input, "
            "or load / set the parameters and set `initialized = True`")
    const = std <= ZERO_SPREAD_RTOL * mean.abs().clamp_min(1.0)
    if bool(const.any()):
        warnings.warn(
            f"{layer}: channels {_positions(const)} have (near-)zero spread in the init batch "
            f"(std <= {ZERO_SPREAD_RTOL:g} * max(1, |mean|)): their scale is set to 1 (they are only centred). "
            f"Initialise from a batch in which they vary, or load / set the parameters and set "
            "`initialized = True`", UserWarning, stacklevel=2)
        return torch.where(const, torch.ones_like(std), std + eps)
    return std + eps if eps else std


class SettableInitFlag(InitFlag):
    """:class:`~flowkern.nn.base.InitFlag` whose init state can be set by hand:
    ``layer.initialized = True`` marks the layer initialised (no data-dependent init runs: for
    parameters loaded or set by the user), ``layer.initialized = False`` re-arms the init. The
    state stays in the layer's buffer (``_init_buffer``), so ``state_dict`` keys are unchanged;
    assigning a tensor to that buffer (the peers' own way) re-syncs the flag too.

    Example:
        >>> norm = ActNorm(2)
        >>> norm.initialized = True  # keep loc = 0, scale = 1
        >>> norm(torch.ones(1, 2))[0].tolist()
        [[1.0, 1.0]]
    """

    def __setattr__(self, name: str, value: object) -> None:
        buffer = type(self)._init_buffer
        if name == "initialized" and (buffer != "initialized" or not isinstance(value, torch.Tensor)):
            value = check_bool("initialized", value)
            getattr(self, buffer).fill_(value)
            object.__setattr__(self, "_init_done", value)
            return
        super().__setattr__(name, value)
        if name == buffer and "_init_done" in self.__dict__:
            self._sync_init_flag()


class ActNormParams(SettableInitFlag, nn.Module):
    """``loc``, ``scale`` (C,) and the ``initialized`` buffer, with data-dependent init (the rule of
    :func:`actnorm_init_std`). ``layer.initialized = True`` skips the init (weights set or loaded
    by hand; a loaded ``state_dict`` carries the flag), ``False`` re-arms it.

    Args:
        channels: C.
        allow_inverse_init: allow the init from an inverse call's input.

    Example:
        >>> params = ActNormParams(2)
        >>> params.maybe_initialize(torch.tensor([[0.0, 1.0], [2.0, 3.0]]), inverse=False)
        >>> params.loc.tolist()
        [-1.0, -2.0]
    """

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
        if v.shape[0] == 0 and not (dist.is_available() and dist.is_initialized()):
            return  # an empty batch has no statistics: the next batch initialises
        mean, std, n = _channel_moments(v)
        std = actnorm_init_std(type(self).__name__, mean, std, n, "y" if inverse else "x", eps=1e-6)
        with torch.no_grad():
            self.loc.copy_(-mean)
            self.scale.copy_(1.0 / std)
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
    """Per-channel affine normalisation with data-dependent init (module docstring).

    Args:
        channels: C of the (B, C, *S) input.
        allow_inverse_init: let the first call be an inverse (initialised from y), else it raises.

    Example:
        >>> norm = ActNorm(3)
        >>> y, logdet = norm(5 + 2 * torch.randn(64, 3))  # the first training call initialises
        >>> bool(y.mean(0).abs().max() < 1e-5), tuple(logdet.shape)
        (True, (64,))
    """

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        ld = math.prod(x.shape[2:]) * torch.log(torch.abs(self.scale.to(acc_dtype(x.dtype)))).sum()
        return ld.expand(x.shape[0])

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "x", self)
        self.maybe_initialize(x, inverse=False)
        check_nonzero_scale(self, self.scale, f"{type(self).__name__}.scale")
        a, b = self.coefficients(x)
        return torch.addcmul(channel_view(b, x), x, channel_view(a, x)), self._logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(y, self.channels, "y", self)
        self.maybe_initialize(y, inverse=True)
        check_nonzero_scale(self, self.scale, f"{type(self).__name__}.scale")
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
