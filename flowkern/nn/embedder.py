"""Condition embedders for :class:`flowkern.nn.ConditionalFlow` (CompVis
``ConditionalFlatCouplingFlow``: the condition is embedded once, the embedding is fed
to every conditional block).

* :class:`MLPEmbedder` — flat condition (B, in_dim) -> (B, out_dim).
* :class:`ConvEmbedder` — spatial condition (B, in_channels, H, W): strided convs, then
  global average pooling to a vector (B, out_dim), or with ``pool=False`` a map
  (B, out_dim, H', W') that image couplings broadcast/match spatially.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from .subnets import MLP

__all__ = ["Embedder", "MLPEmbedder", "ConvEmbedder"]


class Embedder(nn.Module):
    """Base class: ``forward(c) -> embedding``; ``out_dim`` is the embedding's channel count
    (what :func:`~flowkern.nn.build_flow` takes as the couplings' condition size).

    Example:
        >>> issubclass(MLPEmbedder, Embedder)
        True
    """

    out_dim: int


class MLPEmbedder(Embedder):
    """Flat condition (B, in_dim) (or any (B, ...) flattened) -> vector (B, out_dim) through
    :class:`~flowkern.nn.MLP`.

    Args:
        in_dim, out_dim: condition and embedding sizes.
        hidden, depth: the MLP's width and hidden-layer count.

    Example:
        >>> tuple(MLPEmbedder(5, 3, hidden=8)(torch.randn(2, 5)).shape)
        (2, 3)
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 256, depth: int = 1) -> None:
        super().__init__()
        self.in_dim, self.out_dim = check_int("in_dim", in_dim, minimum=1), check_int("out_dim", out_dim, minimum=1)
        self.net = MLP(in_dim, out_dim, hidden, depth)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
        c = c.flatten(1) if c.dim() > 2 else c
        if c.dim() != 2 or c.shape[1] != self.in_dim:
            raise ValueError(f"c must have shape (B, {self.in_dim}), got {tuple(c.shape)}")
        return self.net(c)


class ConvEmbedder(Embedder):
    """Spatial condition -> vector (``pool=True``) or feature map, via ``n_down`` stride-2 convs.

    Args:
        in_channels: channels of the (B, in_channels, H, W) condition.
        out_dim: channels of the embedding.
        hidden: width of the convolutions.
        n_down: stride-2 convolutions (each halves H and W).
        pool: average over space to a vector (B, out_dim); else a map (B, out_dim, H', W').

    Example:
        >>> tuple(ConvEmbedder(3, 4, hidden=8, n_down=1)(torch.randn(2, 3, 8, 8)).shape)
        (2, 4)
    """

    def __init__(self, in_channels: int, out_dim: int, hidden: int = 64, n_down: int = 2,
                 pool: bool = True) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_dim = check_int("out_dim", out_dim, minimum=1)
        check_int("n_down", n_down, minimum=0)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1), nn.LeakyReLU()]
        for _ in range(n_down):
            layers += [nn.Conv2d(hidden, hidden, 4, stride=2, padding=1), nn.LeakyReLU()]
        if pool:
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(hidden, out_dim)]
        else:
            layers.append(nn.Conv2d(hidden, out_dim, 1))
        self.net = nn.Sequential(*layers)
        self.pool = pool

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor, got {type(c).__name__}")
        if c.dim() != 4 or c.shape[1] != self.in_channels:
            raise ValueError(f"c must have shape (B, {self.in_channels}, H, W), got {tuple(c.shape)}")
        return self.net(c)
