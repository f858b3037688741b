r"""Flows: sequences of invertible blocks with a standard normal base distribution.

.. math:: z = f_K \circ \dots \circ f_1(x),\qquad
          \log p(x) = -\tfrac12\|z\|^2 - \tfrac{D}{2}\log 2\pi + \textstyle\sum_k \log|\det J_k|

``nll_loss`` is the CompVis training loss, mean over the batch of
:math:`\tfrac12\|z\|^2 - \log|\det J|` (no constant). A flow runs as the one-input,
one-output case of an invertible program; with ``memory_saving=True`` the forward keeps O(1)
activations for backward (:mod:`flowkern.nn.graph`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .._checks import check_int, check_number
from ..spec import acc_dtype
from .base import InvertibleModule, check_condition, check_floating, check_like_model, first_floating
from .graph import InvertibleProgram, run_program

__all__ = ["Flow", "ConditionalFlow", "standard_normal_log_prob"]


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r""":math:`\log N(z; 0, I)` per sample, :math:`-\tfrac12\|z\|^2 - \tfrac{D}{2}\log 2\pi` over the
    D values of each sample, in the log-det accumulation dtype (float64 for float64 z, else float32).

    Args:
        z: (B, *event) latents.

    Example:
        >>> round(standard_normal_log_prob(torch.zeros(1, 2)).item(), 4)  # -log(2 pi)
        -1.8379
    """
    zz = z.flatten(1).to(acc_dtype(z.dtype))
    return -0.5 * (zz * zz).sum(1) - 0.5 * zz.shape[1] * math.log(2 * math.pi)


def _event_shape(shape: Sequence[int] | None) -> tuple[int, ...] | None:
    if shape is None:
        return None
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"event_shape must be a non-empty tuple of positive ints (C, *S), got {shape!r}")
    return shape


class Flow(InvertibleModule):
    """A sequence of :class:`InvertibleModule` blocks with a standard normal base (module docstring).

    Args:
        blocks: the invertible blocks, applied in order.
        memory_saving: O(1)-activation-memory backward: only z (and the condition) are saved, each
            block's input is rebuilt with its inverse in backward (:mod:`flowkern.nn.graph`).
        memory_saving_chunk: with ``memory_saving``, run forward and backward on batch chunks of
            this many samples: lower peak memory for some time (:func:`~flowkern.nn.run_program`'s
            ``chunk``). None: the whole batch.
        event_shape: (C, *S) of one sample, needed by :meth:`sample`; recorded at the first forward
            if not given. Inputs must match its channel count; the spatial shape is free (a vector
            flow also takes CompVis (B, D, 1, 1) latents).

    Example:
        >>> from flowkern.nn import ActNorm, AffineCoupling, MLP, Reverse
        >>> flow = Flow([ActNorm(4), AffineCoupling(4, MLP(2, 4, hidden=8)), Reverse(4)], memory_saving=True)
        >>> x = torch.randn(16, 4)
        >>> flow.nll_loss(x).backward()
        >>> z, logdet = flow(x)
        >>> torch.allclose(flow.inverse(z)[0], x, atol=1e-5), tuple(flow.sample(3).shape)
        (True, (3, 4))
    """

    memory_saving_chunk: int | None = None  # class default: whole-model pickles from before the option load

    def __init__(self, blocks: Iterable[nn.Module], memory_saving: bool = False,
                 event_shape: Sequence[int] | None = None, *, memory_saving_chunk: int | None = None) -> None:
        super().__init__()
        blocks = list(blocks)
        for i, block in enumerate(blocks):
            if not isinstance(block, InvertibleModule):
                raise TypeError(f"blocks[{i}] must be an InvertibleModule, got {type(block).__name__}")
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = bool(memory_saving)
        self.memory_saving_chunk = None if memory_saving_chunk is None else check_int(
            "memory_saving_chunk", memory_saving_chunk, minimum=1)
        self.event_shape = _event_shape(event_shape)

    def embed(self, c: torch.Tensor | None) -> torch.Tensor | None:
        """The condition every block receives (identity here; embedded in ConditionalFlow)."""
        return c

    def program(self) -> InvertibleProgram:
        """The blocks as a one-input, one-output :class:`~flowkern.nn.InvertibleProgram`."""
        return InvertibleProgram.chain(list(self.blocks))

    def _check_x(self, x: object, name: str) -> torch.Tensor:
        if check_floating(x, name).dim() < 2:
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
        (z,), logdet = run_program(self.program(), [x], () if c is None else (c,), self.memory_saving,
                                   self.memory_saving_chunk)
        return z, logdet

    def inverse(self, z: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x = f^{-1}(z) and log|det dx/dz| (B,) = -forward log-det."""
        self._check_x(z, "z")
        c = self.embed(c)
        (x,), logdet = self.program().invert([z], () if c is None else (c,))
        return x, logdet

    def log_prob(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) (B,) under the standard normal base, including -D/2 log(2 pi)."""
        z, logdet = self(x, c)
        return standard_normal_log_prob(z) + logdet

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
        temperature = check_number("temperature", temperature, minimum=0.0)
        if self.event_shape is None:
            raise RuntimeError("event_shape is unknown: pass event_shape to the constructor or run a forward first")
        ref = first_floating(self)
        ref = torch.empty(0) if ref is None else ref
        z = temperature * torch.randn(n, *self.event_shape, dtype=ref.dtype, device=ref.device)
        return self.inverse(z, c)[0]

    def extra_repr(self) -> str:
        return f"memory_saving={self.memory_saving}, event_shape={self.event_shape}"


class ConditionalFlow(Flow):
    """:class:`Flow` whose blocks are conditioned on c (required); ``embedder(c)`` (if given)
    is computed once per call and fed to every conditional block.

    Args:
        blocks, memory_saving, event_shape, memory_saving_chunk: as for :class:`Flow`.
        embedder: module applied to c once per call (e.g. :class:`~flowkern.nn.MLPEmbedder`).

    Example:
        >>> from flowkern.nn import ConditionalAffineCoupling, MLP
        >>> flow = ConditionalFlow([ConditionalAffineCoupling(4, 3, MLP(2 + 3, 4, hidden=8))])
        >>> z, logdet = flow(torch.randn(5, 4), torch.randn(5, 3))
        >>> tuple(z.shape), tuple(flow.sample(2, torch.randn(2, 3)).shape)
        ((5, 4), (2, 4))
    """

    def __init__(self, blocks: Iterable[nn.Module], embedder: nn.Module | None = None,
                 memory_saving: bool = False, event_shape: Sequence[int] | None = None, *,
                 memory_saving_chunk: int | None = None) -> None:
        super().__init__(blocks, memory_saving=memory_saving, event_shape=event_shape,
                         memory_saving_chunk=memory_saving_chunk)
        if embedder is not None and not callable(embedder):
            raise TypeError(f"embedder must be a callable nn.Module, got {type(embedder).__name__}")
        self.embedder = embedder
        self.condition_shape: tuple[int, ...] | None = None

    def embed(self, c: torch.Tensor | None) -> torch.Tensor:
        check_condition(c, "ConditionalFlow")
        if self.condition_shape is None:
            self.condition_shape = tuple(c.shape[1:])
        return c if self.embedder is None else self.embedder(c)

    def sample(self, n: int, c: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """As :meth:`Flow.sample`; c must have batch size n."""
        if isinstance(c, torch.Tensor) and c.shape[0] != n:
            raise ValueError(f"c must have batch size n={n}, got {tuple(c.shape)}")
        return super().sample(n, c, temperature)
