r"""The CompVis double coupling block (``DoubleVectorCouplingBlock`` of iin / net2net).

With h = C // 2 and halves x = [x_1, x_2] (x_1 = x[:, :h]):

.. math:: [u_1, u_2] = \text{coupling}_1(x)\ \text{(x_1 passive)},\quad
          [v_1, v_2] = \text{coupling}_2([u_1, u_2])\ \text{(u_2 passive)},\quad
          y = [v_2, v_1]

i.e. the second coupling transforms the first half and the output halves are swapped
("two couplings with a half swap"). log-det = sum of both couplings' log-dets.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import check_int
from .base import InvertibleModule, ParamGrads, check_input
from .conditional import ConditionalAffineCoupling
from .coupling import AffineCoupling, SeparateNets
from .subnets import MLP

__all__ = ["DoubleAffineCoupling"]


class DoubleAffineCoupling(InvertibleModule):
    """Two affine couplings with MLP subnets and a half swap (module docstring).

    Args:
        channels: C of the (B, C) input (>= 2).
        hidden, depth: the MLP subnets' width and hidden-layer count (:class:`~flowkern.nn.MLP`).
        cond_channels: > 0 makes both couplings conditional on c of shape (B, cond_channels).
        clamp, scale: the couplings' scale function.
        separate_nets: separate scale and shift MLPs per coupling (CompVis); ``False``: one MLP
            producing [s_raw | t] (FrEIA's GLOWCouplingBlock).

    Example:
        >>> block = DoubleAffineCoupling(4, hidden=8)
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(block.inverse(block(x)[0])[0], x, atol=1e-6)
        True
    """

    def __init__(self, channels: int, hidden: int, depth: int = 2, *, cond_channels: int = 0, clamp: float = 2.0,
                 scale: str = "tanh", separate_nets: bool = True) -> None:
        super().__init__()
        check_int("channels", channels, minimum=2)
        check_int("cond_channels", cond_channels, minimum=0)
        self.channels, self.cond_channels = channels, cond_channels
        self.half = channels // 2
        couplings = []
        for passive in ("first", "second"):
            c_pas = self.half if passive == "first" else channels - self.half
            c_act = channels - c_pas
            n_in = c_pas + cond_channels
            if separate_nets:
                subnet: nn.Module = SeparateNets(MLP(n_in, c_act, hidden, depth), MLP(n_in, c_act, hidden, depth))
            else:
                subnet = MLP(n_in, 2 * c_act, hidden, depth)
            kw = dict(clamp=clamp, scale=scale, passive=passive, split=self.half)
            if cond_channels:
                couplings.append(ConditionalAffineCoupling(channels, cond_channels, subnet, **kw))
            else:
                couplings.append(AffineCoupling(channels, subnet, **kw))
        self.couplings = nn.ModuleList(couplings)

    def _swap(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cat((v[:, self.half :], v[:, : self.half]), dim=1)

    def _unswap(self, v: torch.Tensor) -> torch.Tensor:
        k = self.channels - self.half
        return torch.cat((v[:, k:], v[:, :k]), dim=1)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(x, self.channels, "x", self)
        u, ld1 = self.couplings[0](x, c)
        v, ld2 = self.couplings[1](u, c)
        return self._swap(v), ld1 + ld2

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check_input(y, self.channels, "y", self)
        u, ld2 = self.couplings[1].inverse(self._unswap(y), c)
        x, ld1 = self.couplings[0].inverse(u, c)
        return x, ld1 + ld2

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads):
        """Each coupling's own step, in reverse, through the half swap."""
        u, grad_u, gc2 = self.couplings[1].invert_and_backprop(
            self._unswap(y), c, self._unswap(grad_y), grad_logdet, grads)
        x, grad_x, gc1 = self.couplings[0].invert_and_backprop(u, c, grad_u, grad_logdet, grads)
        grad_c = gc1 if gc2 is None else gc2 if gc1 is None else gc1 + gc2
        return x, grad_x, grad_c

    def extra_repr(self) -> str:
        return f"channels={self.channels}, cond_channels={self.cond_channels}"
