r"""Flows: sequences of invertible blocks with a standard normal base distribution.

.. math:: z = f_K \circ \dots \circ f_1(x),\qquad
          \log p(x) = -\tfrac12\|z\|^2 - \tfrac{D}{2}\log 2\pi + \textstyle\sum_k \log|\det J_k|

``nll_loss`` is the CompVis training loss, mean over the batch of
:math:`\tfrac12\|z\|^2 - \log|\det J|` (no constant). With ``memory_saving=True`` the
forward keeps O(1) activations for backward (:mod:`flowkern.nn.memory`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .._checks import check_int
from ..spec import acc_dtype
from .base import InvertibleModule, check_like_model
from .memory import memory_saving_forward

__all__ = ["Flow", "ConditionalFlow"]


def _event_shape(shape: Sequence[int] | None) -> tuple[int, ...] | None:
    if shape is None:
        return None
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"event_shape must be a non-empty tuple of positive ints (C, *S), got {shape!r}")
    return shape


class Flow(InvertibleModule):
    """Sequence of :class:`InvertibleModule` blocks (module docstring).

    ``event_shape`` (C, *S) of one sample is needed by :meth:`sample`; if not given it is
    recorded at the first forward. Inputs must match its channel count; the spatial shape
    is free (a vector flow also takes CompVis (B, D, 1, 1) latents).
    """

    def __init__(self, blocks: Iterable[nn.Module], memory_saving: bool = False,
                 event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        blocks = list(blocks)
        for i, block in enumerate(blocks):
            if not isinstance(block, InvertibleModule):
                raise TypeError(f"blocks[{i}] must be an InvertibleModule, got {type(block).__name__}")
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = bool(memory_saving)
        self.event_shape = _event_shape(event_shape)

    def embed(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """The condition every block receives (identity here; embedded in ConditionalFlow)."""
        return c

    def _check_x(self, x: object, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.dim() < 2:
            raise ValueError(f"{name} must have shape (B, C, *S), got {tuple(x.shape)}")
        if self.event_shape is not None and x.shape[1] != self.event_shape[0]:
            raise ValueError(f"{name} must have shape (B, {self.event_shape[0]}, *S) "
                             f"(event shape {self.event_shape}), got {tuple(x.shape)}")
        return check_like_model(x, self, name)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z = f(x) and log|det dz/dx| (B,)."""
        self._check_x(x, "x")
        if self.event_shape is None:
            self.event_shape = tuple(x.shape[1:])
        c = self.embed(c)
        if self.memory_saving and torch.is_grad_enabled() and len(self.blocks):
            return memory_saving_forward(list(self.blocks), x, c)
        logdet = torch.zeros(x.shape[0], dtype=acc_dtype(x.dtype), device=x.device)
        for block in self.blocks:
            x, ld = block(x, c)
            logdet = logdet + ld
        return x, logdet

    def inverse(self, z: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f^{-1}(z) and log|det dx/dz| (B,) = -forward log-det."""
        self._check_x(z, "z")
        c = self.embed(c)
        logdet = torch.zeros(z.shape[0], dtype=acc_dtype(z.dtype), device=z.device)
        for block in reversed(self.blocks):
            z, ld = block.inverse(z, c)
            logdet = logdet + ld
        return z, logdet

    def log_prob(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) (B,) under the standard normal base, including -D/2 log(2 pi)."""
        z, logdet = self(x, c)
        zz = z.flatten(1).to(logdet.dtype)
        return -0.5 * (zz * zz).sum(1) - 0.5 * zz.shape[1] * math.log(2 * math.pi) + logdet

    def nll_loss(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """mean over the batch of 0.5 ||z||^2 - logdet (CompVis convention)."""
        return self.nll(*self(x, c))

    @staticmethod
    def nll(z: torch.Tensor, logdet: torch.Tensor) -> torch.Tensor:
        """The loss of :meth:`nll_loss` from a forward's ``(z, logdet)`` (e.g. through DDP)."""
        zz = z.flatten(1).to(logdet.dtype)
        return (0.5 * (zz * zz).sum(1) - logdet).mean()

    def sample(self, n: int, c: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """x = f^{-1}(temperature * eps), eps ~ N(0, I) of shape (n, *event_shape)."""
        check_int("n", n, minimum=0)  # n = 0: an empty batch of shape (0, *event_shape)
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        if self.event_shape is None:
            raise RuntimeError("event_shape is unknown: pass event_shape to the constructor or run a forward first")
        ref = next(self.parameters(), None)
        if ref is None:
            ref = next(self.buffers(), torch.empty(0))
        z = temperature * torch.randn(n, *self.event_shape, dtype=ref.dtype, device=ref.device)
        return self.inverse(z, c)[0]

    def extra_repr(self) -> str:
        return f"memory_saving={self.memory_saving}, event_shape={self.event_shape}"


class ConditionalFlow(Flow):
    """:class:`Flow` whose blocks are conditioned on c (required); ``embedder(c)`` (if given)
    is computed once per call and fed to every conditional block."""

    def __init__(self, blocks: Iterable[nn.Module], embedder: nn.Module | None = None,
                 memory_saving: bool = False, event_shape: Sequence[int] | None = None) -> None:
        super().__init__(blocks, memory_saving=memory_saving, event_shape=event_shape)
        if embedder is not None and not callable(embedder):
            raise TypeError(f"embedder must be a callable nn.Module, got {type(embedder).__name__}")
        self.embedder = embedder
        self.condition_shape: tuple[int, ...] | None = None

    def embed(self, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            raise ValueError("c (the condition) is required by ConditionalFlow")
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
        if self.condition_shape is None:
            self.condition_shape = tuple(c.shape[1:])
        return c if self.embedder is None else self.embedder(c)

    def sample(self, n: int, c: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """As :meth:`Flow.sample`; c must have batch size n."""
        if isinstance(c, torch.Tensor) and c.shape[0] != n:
            raise ValueError(f"c must have batch size n={n}, got {tuple(c.shape)}")
        return super().sample(n, c, temperature)
