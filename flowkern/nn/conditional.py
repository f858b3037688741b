r"""Conditional affine coupling: the subnet sees the passive channels and a condition.

.. math:: (s_{raw}, t) = \text{subnet}([x_p, c]),\quad y_a = x_a \odot e^{f(s_{raw})} + t

``c`` is (B, cond_channels) — broadcast over space for images — or a spatial map
(B, cond_channels, *S) of the input's spatial shape (singleton spatial dims broadcast;
(B, cond_channels, 1, 1) latents also condition vector inputs).
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from .coupling import AffineCoupling

__all__ = ["ConditionalAffineCoupling", "broadcast_condition"]


def broadcast_condition(c: object, like: torch.Tensor, cond_channels: int) -> torch.Tensor:
    """c as (B, cond_channels, *S) matching ``like`` (B, *, *S); ValueError/TypeError naming ``c``.

    Args:
        c: the condition, (B, cond_channels) or (B, cond_channels, *S).
        like: the tensor the condition is joined to.
        cond_channels: the condition's channel count.

    Example:
        >>> tuple(broadcast_condition(torch.randn(2, 3), torch.randn(2, 4, 5, 5), 3).shape)
        (2, 3, 5, 5)
    """
    if c is None:
        raise ValueError(f"c (the condition, shape (B, {cond_channels})) is required by this conditional layer")
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
    B, spatial = like.shape[0], tuple(like.shape[2:])
    if c.dim() > 2 and c.dim() != like.dim() and all(n == 1 for n in c.shape[2:]):
        c = c.reshape(c.shape[:2])  # (B, cond, 1, 1) latents condition vectors too
    ok = c.dim() >= 2 and c.shape[0] == B and c.shape[1] == cond_channels
    if ok and c.dim() > 2:
        ok = c.dim() == like.dim() and all(n in (1, m) for n, m in zip(c.shape[2:], spatial))
    if not ok:
        raise ValueError(
            f"c must have shape ({B}, {cond_channels}) or ({B}, {cond_channels}, *{spatial}), got {tuple(c.shape)}"
        )
    if c.dtype != like.dtype:
        raise TypeError(f"c must have the dtype of the input ({like.dtype}), got {c.dtype}")
    if c.dim() == 2:
        c = c.reshape(B, cond_channels, *([1] * len(spatial)))
    return c.expand(B, cond_channels, *spatial)


class ConditionalAffineCoupling(AffineCoupling):
    """:class:`AffineCoupling` whose subnet maps cat(passive, condition) (B, c_pas + cond_channels, *S)
    to (B, 2 * c_act, *S) (module docstring).

    Args:
        channels: C of the input.
        cond_channels: channels of the condition c (>= 1).
        subnet: as above.
        **kwargs: the coupling's options (:class:`AffineCoupling`).

    Example:
        >>> from flowkern.nn import MLP
        >>> layer = ConditionalAffineCoupling(4, 3, MLP(2 + 3, 4, hidden=8))
        >>> y, logdet = layer(torch.randn(2, 4), torch.randn(2, 3))
        >>> tuple(y.shape)
        (2, 4)
    """

    def __init__(self, channels: int, cond_channels: int, subnet: nn.Module, **kwargs) -> None:
        super().__init__(channels, subnet, **kwargs)
        self.cond_channels = check_int("cond_channels", cond_channels, minimum=1)

    def _subnet_input(self, z_p: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        return torch.cat((z_p, broadcast_condition(c, z_p, self.cond_channels)), dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cond_channels={self.cond_channels}"
