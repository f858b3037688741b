r"""Invertible 1x1 convolution with an LU-parameterised weight (Glow).

.. math:: W = P\,L\,(U + \operatorname{diag}(\operatorname{sign}(s)\,e^{\log|s|})),\qquad
          y_{:, \cdot, S} = W x_{:, \cdot, S},\qquad
          \log|\det J| = \textstyle\prod S \sum \log|s|

P is a fixed permutation, L unit lower triangular, U strictly upper triangular. The
inverse uses triangular solves, x = U'^{-1} L^{-1} P^T y. Works on (B, C) and (B, C, *S).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_int
from ..spec import acc_dtype
from .base import InvertibleModule, check_input

__all__ = ["InvConv1x1"]


class InvConv1x1(InvertibleModule):
    """LU 1x1 convolution, initialised from a random orthogonal matrix (module docstring).

    Args:
        channels: C of the (B, C, *S) input.
        seed: seed of the orthogonal init.

    Example:
        >>> conv = InvConv1x1(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, logdet = conv(x)
        >>> torch.allclose(conv.inverse(y)[0], x, atol=1e-5), abs(logdet[0].item()) < 1e-5  # orthogonal
        (True, True)
    """

    def __init__(self, channels: int, seed: int = 0) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(channels, channels, generator=g, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("p", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.l_mask + eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return lower, upper

    def weight(self) -> torch.Tensor:
        """W = P L U'."""
        lower, upper = self._factors()
        return self.p @ lower @ upper

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        ld = math.prod(x.shape[2:]) * self.log_s.to(acc_dtype(x.dtype)).sum()
        return ld.expand(x.shape[0])

    @staticmethod
    def _mix(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """(m @ v[b, :, s]) for every batch and position."""
        if v.dim() == 2:
            return v @ m.T
        return torch.tensordot(m, v, dims=([1], [1])).movedim(0, 1)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "x", self)
        return self._mix(self.weight().to(x.dtype), x), self._logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(y, self.channels, "y", self)
        lower, upper = (f.to(y.dtype) for f in self._factors())
        cols = y.movedim(1, -1).reshape(-1, self.channels).T  # (C, N)
        cols = self.p.to(y.dtype).T @ cols
        cols = torch.linalg.solve_triangular(lower, cols, upper=False, unitriangular=True)
        cols = torch.linalg.solve_triangular(upper, cols, upper=True)
        x = cols.T.reshape(*y.shape[:1], *y.shape[2:], self.channels).movedim(-1, 1)
        return x, -self._logdet(y)

    def extra_repr(self) -> str:
        return f"{self.channels}"
