"""Helpers shared by the compat adapters: condition concatenation, feature-permutation indices,
the walk that folds an actnorm into the coupling after it, and the RNG guard of convert()."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

__all__ = ["cat_cond", "split_permutation", "fold_steps", "frozen_rng", "params_dtype_device"]


def cat_cond(u: torch.Tensor, c: Sequence[torch.Tensor]) -> torch.Tensor:
    """Subnet input ``cat(u, *c)`` along channels (``u`` itself without conditions).

    Args:
        u: the passive part (B, C, *S).
        c: the conditions (B, C_i, *S).

    Example:
        >>> import torch
        >>> from flowkern.compat._fused import cat_cond
        >>> cat_cond(torch.zeros(2, 3), [torch.ones(2, 1)]).shape
        torch.Size([2, 4])
    """
    return torch.cat([u, *c], 1) if len(c) else u


def split_permutation(passive: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index ``perm`` putting the passive features first, and its inverse ``perm_inv``.

    ``x[:, perm]`` is the (passive | active) layout the fused op splits at ``len(passive)``;
    ``y[:, perm_inv]`` restores the original feature order.

    Args:
        passive: indices of the passive features.
        active: indices of the active features.

    Example:
        >>> import torch
        >>> from flowkern.compat._fused import split_permutation
        >>> perm, perm_inv = split_permutation(torch.tensor([1, 3]), torch.tensor([0, 2]))
        >>> perm.tolist(), perm_inv.tolist()
        ([1, 3, 0, 2], [2, 0, 3, 1])
    """
    perm = torch.cat([passive.reshape(-1), active.reshape(-1)]).long()
    return perm, torch.argsort(perm)


def fold_steps(n: int, inverse: bool, foldable: Callable[[int, int], bool]
               ) -> Iterator[tuple[int, int | None]]:
    """The run order of a chain of ``n`` layers, an actnorm folded into the coupling after it.

    Walks the layers forward (``inverse=False``) or backward and yields ``(i, None)`` for layer i
    run alone, or ``(i_norm, i_coupling)`` (``i_coupling = i_norm + 1``) for a pair that runs as
    one fused op call, the actnorm's ``x * a + b`` as the op's ``a``, ``b``: a pair is folded when
    both indices lie in the chain and ``foldable(i_norm, i_coupling)`` holds.

    Args:
        n: the number of layers.
        inverse: walk from the last layer to the first.
        foldable: whether layer ``i_norm`` is an actnorm that folds into coupling ``i_coupling``.

    Example:
        >>> from flowkern.compat._fused import fold_steps
        >>> list(fold_steps(4, False, lambda i, j: i == 1))
        [(0, None), (1, 2), (3, None)]
        >>> list(fold_steps(4, True, lambda i, j: i == 1))
        [(3, None), (1, 2), (0, None)]
    """
    k = 0
    while k < n:
        i = n - 1 - k if inverse else k
        i_norm = i - 1 if inverse else i
        if 0 <= i_norm and i_norm + 1 < n and foldable(i_norm, i_norm + 1):
            yield i_norm, i_norm + 1
            k += 2
        else:
            yield i, None
            k += 1


@contextlib.contextmanager
def frozen_rng() -> Iterator[None]:
    """Run a constructor without consuming torch's or numpy's global random streams.

    Example:
        >>> import torch
        >>> from flowkern.compat._fused import frozen_rng
        >>> state = torch.random.get_rng_state()
        >>> with frozen_rng():
        ...     _ = torch.randn(3)
        >>> torch.equal(torch.random.get_rng_state(), state)
        True
    """
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            np.random.set_state(np_state)


def params_dtype_device(module: torch.nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """dtype and device of the first floating parameter or buffer of ``module`` (or Nones).

    Args:
        module: the module.

    Example:
        >>> import torch
        >>> from flowkern.compat._fused import params_dtype_device
        >>> params_dtype_device(torch.nn.Linear(2, 2).double())
        (torch.float64, device(type='cpu'))
    """
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return None, None
