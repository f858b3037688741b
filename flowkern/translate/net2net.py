r"""Net2Net: network-to-network translation with a conditional INN (Rombach, Esser, Ommer, AI4CC 2020).

A :class:`flowkern.nn.ConditionalFlow` :math:`\tau` models :math:`p(z_B \mid z_A)` of expert B's
latent given expert A's representation: :math:`z_B = \tau^{-1}(v \mid z_A)`, :math:`v \sim N(0, I)`.
Training minimises :math:`E[\tfrac12\|\tau(z_B \mid z_A)\|^2 - \log|\det J_\tau|]`; translation samples
:math:`v` (optionally at a temperature < 1) and inverts. Expert A's representation is embedded once by
an MLP (:class:`flowkern.nn.MLPEmbedder`) and fed to every conditional coupling.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..nn import MLPEmbedder, build_flow
from ..training import train_steps

__all__ = ["Net2Net", "BatchFn"]

# A batch source: generator -> (target z_B (B, target_dim), condition z_A (B, cond_dim)).
BatchFn = Callable[[torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class Net2Net(nn.Module):
    """cINN translating (B, cond_dim) representations of expert A to (B, target_dim) latents of expert B."""

    def __init__(self, target_dim: int, cond_dim: int, *, n_blocks: int = 4, hidden: int = 128,
                 depth: int = 2, embed_dim: int = 64, embed_hidden: int = 128) -> None:
        super().__init__()
        self.target_dim, self.cond_dim = target_dim, cond_dim
        self.flow = build_flow(target_dim, n_blocks, hidden, depth,
                               embedder=MLPEmbedder(cond_dim, embed_dim, embed_hidden))

    def loss(self, z_b: torch.Tensor, z_a: torch.Tensor) -> torch.Tensor:
        """Conditional NLL (CompVis convention) of z_b given z_a."""
        return self.flow.nll_loss(z_b, z_a)

    @torch.no_grad()
    def translate(self, z_a: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """One sample z_B ~ p(z_B | z_A) per row of z_a."""
        return self.flow.sample(z_a.shape[0], z_a, temperature)

    def fit(self, batch_fn: BatchFn, steps: int, *, lr: float = 1e-3, seed: int = 0, progress: bool = False,
            desc: str = "net2net") -> list[float]:
        """Adam with a cosine-decayed LR for ``steps`` batches from ``batch_fn``; returns the loss curve."""
        return train_steps(self, lambda g: self.loss(*batch_fn(g)), steps, lr=lr, seed=seed, progress=progress,
                           desc=desc)
