"""Channel permutations: y = x[:, perm], log|det J| = 0 (a permutation matrix has |det| = 1)."""

from __future__ import annotations

import torch

from .._checks import check_int
from .base import InvertibleModule, ParamGrads, check_input, zero_logdet

__all__ = ["Permute", "Shuffle", "Reverse"]


class Permute(InvertibleModule):
    """Fixed channel permutation ``perm`` (stored as a buffer with its inverse).

    Args:
        perm: a permutation of range(C).

    Example:
        >>> Permute(torch.tensor([2, 0, 1]))(torch.tensor([[10.0, 11.0, 12.0]]))[0].tolist()
        [[12.0, 10.0, 11.0]]
    """

    def __init__(self, perm: torch.Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        n = perm.numel()
        if perm.dim() != 1 or n < 1 or not torch.equal(perm.sort().values, torch.arange(n)):
            raise ValueError(f"perm must be a permutation of range(C), got {perm.tolist()}")
        self.channels = n
        self.register_buffer("perm", perm.clone())
        self.register_buffer("inv_perm", torch.argsort(perm))

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "x")
        return x.index_select(1, self.perm), zero_logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(y, self.channels, "y")
        return y.index_select(1, self.inv_perm), zero_logdet(y)

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads):
        """x = y[:, perm^-1] and grad_x = grad_y[:, perm^-1]: no re-run, no parameters."""
        return y.index_select(1, self.inv_perm), grad_y.index_select(1, self.inv_perm), None

    def extra_repr(self) -> str:
        return f"{self.channels}"


class Shuffle(Permute):
    """Random channel permutation drawn from ``torch.Generator().manual_seed(seed)``.

    Args:
        channels: C.
        seed: the permutation's seed.

    Example:
        >>> torch.equal(Shuffle(5, seed=1).perm, Shuffle(5, seed=1).perm)
        True
    """

    def __init__(self, channels: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        super().__init__(torch.randperm(check_int("channels", channels, minimum=1), generator=g))


class Reverse(Permute):
    """Channel order reversed: y = x[:, ::-1].

    Args:
        channels: C.

    Example:
        >>> Reverse(3)(torch.tensor([[1.0, 2.0, 3.0]]))[0].tolist()
        [[3.0, 2.0, 1.0]]
    """

    def __init__(self, channels: int) -> None:
        super().__init__(torch.arange(check_int("channels", channels, minimum=1) - 1, -1, -1))
