r"""Invariances of a model's representation (Rombach, Esser, Ommer, ECCV 2020, "Making Sense of CNNs").

A conditional INN :math:`\tau` models :math:`p(z_{AE} \mid z_\Phi)`: the autoencoder latent of an
image given the representation :math:`z_\Phi = \Phi(x)` of the model under study. Everything
the cINN can still vary for a fixed :math:`z_\Phi` is, by construction, information the model is
invariant to. Sampling

.. math:: z_{AE} = \tau^{-1}(v \mid z_\Phi), \qquad v \sim N(0, I),

and decoding the samples shows that information as images. The cINN is any conditional sampler of
:math:`p(z_{AE} \mid z_\Phi)`: flowkern's is :class:`flowkern.translate.Net2Net` with target the
autoencoder latent and condition the representation (the same cINN translates between networks),
trained on pairs :math:`(z_{AE}(x), \Phi(x))`. The second step interprets :math:`z_\Phi` itself
with an IIN (:mod:`flowkern.interpret.iin`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._checks import check_int

__all__ = ["sample_invariances"]


@torch.no_grad()
def sample_invariances(sample: Callable[[torch.Tensor], torch.Tensor], rep: torch.Tensor, n: int) -> torch.Tensor:
    r"""(B, n, D): ``n`` latents :math:`z_{AE} = \tau^{-1}(v \mid z_\Phi)` per row :math:`z_\Phi` of
    ``rep`` (B, rep_dim), i.e. ``n`` inputs the model cannot tell apart (module docstring).

    ``sample(c)`` draws one (D,) latent per row of the (M, rep_dim) condition ``c``, e.g.
    ``lambda c: net2net.translate(c, temperature)``; it is called once, on every row of ``rep``
    repeated ``n`` times (``rep.repeat_interleave(n, 0)``).
    """
    n = check_int("n", n, minimum=1)
    if not isinstance(rep, torch.Tensor) or rep.dim() != 2:
        raise ValueError(f"rep must be a (B, rep_dim) tensor, got {getattr(rep, 'shape', rep)!r}")
    return sample(rep.repeat_interleave(n, 0)).view(rep.shape[0], n, -1)
