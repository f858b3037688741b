"""normflows' notebook Glow: the one builder of the image example and the image benchmarks.

The model of normflows' ``examples/glow.ipynb``: L levels of K ``GlowBlock`` s and a ``Squeeze``
each, ``Merge`` between levels, a class-conditional diagonal Gaussian base per level. Both
``examples/image/glow_photos.py`` and ``bench/`` (``image_worker.py``, ``ab_worker.py``) build
it here and convert it with :func:`flowkern.compat.convert`, so the example and the benchmarks
compare the same model. Imports torch and normflows only (never flowkern: ``bench/ab.py`` runs
it against other source trees).
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["notebook_glow"]


def notebook_glow(size: int, levels: int = 3, depth: int = 8, hidden: int = 64, num_classes: int = 10,
                  seed: int = 0, channels: int = 3):
    """normflows' ``MultiscaleFlow`` of the notebook for ``channels`` x ``size`` x ``size`` images.

    Args:
        size: image side; divisible by 2**levels.
        levels: L, the number of levels.
        depth: K, ``GlowBlock`` s per level.
        hidden: width of the blocks' convolutional subnets.
        num_classes: classes of the conditional bases.
        seed: ``torch.manual_seed`` before the build (the blocks' and bases' inits).
        channels: image channels.
    """
    import normflows as nf

    if size % 2 ** levels:
        raise ValueError(f"size ({size}) must be divisible by 2**levels = {2 ** levels}")
    L, C, S = levels, channels, size
    torch.manual_seed(seed)
    q0, merges, flows = [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normflows' LU init calls the deprecated torch.lu
        for i in range(L):
            level = [nf.flows.GlowBlock(C * 2 ** (L + 1 - i), hidden, split_mode="channel", scale=True)
                     for _ in range(depth)]
            flows.append(level + [nf.flows.Squeeze()])
            if i > 0:
                merges.append(nf.flows.Merge())
                latent = (C * 2 ** (L - i), S // 2 ** (L - i), S // 2 ** (L - i))
            else:
                latent = (C * 2 ** (L + 1), S // 2 ** L, S // 2 ** L)
            q0.append(nf.distributions.ClassCondDiagGaussian(latent, num_classes))
    return nf.MultiscaleFlow(q0, flows, merges)
