"""Subnetworks for couplings and embedders.

:class:`MLP` is the CompVis ``BasicFullyConnectedNet`` (and the FrEIA GLOW subnet):
Linear(in, hidden), LeakyReLU, ``depth`` x [Linear(hidden, hidden), LeakyReLU],
Linear(hidden, out). On (B, C, *S) inputs it acts per position over channels (a 1x1
convolution), so the same net serves vectors, (B, D, 1, 1) latents and images.
The activations run in place on the fresh Linear outputs: autograd then saves one tensor per
hidden layer (the activation's output, which is also the next Linear's input) instead of two.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int

__all__ = ["MLP"]


class MLP(nn.Module):
    """Channel MLP with ``depth`` hidden-to-hidden layers (module docstring).

    Args:
        in_features, out_features: input and output channels.
        hidden: width of the hidden layers.
        depth: hidden-to-hidden layers.
        zero_init: zero the last layer (a coupling then starts as the identity).

    Example:
        >>> net = MLP(3, 4, hidden=8)
        >>> tuple(net(torch.randn(2, 3)).shape), tuple(net(torch.randn(2, 3, 5, 5)).shape)
        ((2, 4), (2, 4, 5, 5))
    """

    def __init__(self, in_features: int, out_features: int, hidden: int, depth: int = 2,
                 zero_init: bool = False) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features), ("hidden", hidden)):
            check_int(name, v, minimum=1)
        check_int("depth", depth, minimum=0)
        layers: list[nn.Module] = [nn.Linear(in_features, hidden), nn.LeakyReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Linear(hidden, hidden), nn.LeakyReLU(inplace=True)]
        layers.append(nn.Linear(hidden, out_features))
        if zero_init:
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
        self.net = nn.Sequential(*layers)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if v.dim() == 2:
            return self.net(v)
        return self.net(v.movedim(1, -1)).movedim(-1, 1)
