r"""Invariances of a model's representation (Rombach, Esser, Ommer, ECCV 2020, "Making Sense of CNNs").

A conditional INN models :math:`p(z_{AE} \mid z_\Phi)`: the autoencoder latent of an image given the
representation :math:`z_\Phi = \Phi(x)` of the model under study. Everything the cINN can still vary
for a fixed :math:`z_\Phi` is, by construction, information the model is invariant to. Sampling
:math:`z_{AE} = \tau^{-1}(v \mid z_\Phi)`, :math:`v \sim N(0, I)`, and decoding shows it as images.
The second step interprets :math:`z_\Phi` itself with an IIN (:mod:`flowkern.interpret.iin`).
"""

from __future__ import annotations

import torch

from ..translate.net2net import Net2Net

__all__ = ["InvarianceExplainer"]


class InvarianceExplainer(Net2Net):
    """cINN over (B, ae_dim) autoencoder latents conditioned on a (B, rep_dim) model representation."""

    def __init__(self, ae_dim: int, rep_dim: int, **kwargs) -> None:
        super().__init__(ae_dim, rep_dim, **kwargs)

    @torch.no_grad()
    def invariances(self, rep: torch.Tensor, n: int, temperature: float = 1.0) -> torch.Tensor:
        """(B, n, ae_dim): n latents per representation row that the model cannot tell apart."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        rep_n = rep.repeat_interleave(n, 0)
        return self.translate(rep_n, temperature).view(rep.shape[0], n, -1)
