"""Small helpers shared by the compat adapters: condition concatenation,
feature-permutation indices and the RNG guard used when converting peer modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import numpy as np
import torch

__all__ = ["cat_cond", "split_permutation", "frozen_rng", "params_dtype_device"]


def cat_cond(u: torch.Tensor, c: Sequence[torch.Tensor]) -> torch.Tensor:
    """Subnet input ``cat(u, *c)`` along channels (``u`` itself without conditions)."""
    return torch.cat([u, *c], 1) if len(c) else u


def split_permutation(passive: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``perm`` putting the passive features first, and its inverse ``perm_inv``.

    ``x[:, perm]`` is the (passive | active) layout the fused op splits at ``len(passive)``;
    ``y[:, perm_inv]`` restores the original feature order.
    """
    perm = torch.cat([passive.reshape(-1), active.reshape(-1)]).long()
    return perm, torch.argsort(perm)


@contextlib.contextmanager
def frozen_rng() -> Iterator[None]:
    """Run a constructor without consuming torch's or numpy's global random streams."""
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)


def params_dtype_device(module: torch.nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """dtype and device of the first floating parameter or buffer of ``module`` (or Nones)."""
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return None, None
