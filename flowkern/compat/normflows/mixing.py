r"""normflows' ``Permute`` and ``Invertible1x1Conv`` (see :mod:`flowkern.compat.normflows`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.base import zero_logdet
from ..convert import _build, builtin_converter
from .flows import Flow

__all__ = ["Permute", "Invertible1x1Conv"]


class Permute(Flow):
    """Channel permutation: 'shuffle' (random, fixed) or 'swap' (exchange the halves).

    Args:
        num_channels: the channel count.
        mode: ``"shuffle"`` or ``"swap"``.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import Permute
        >>> Permute(3, "swap")(torch.tensor([[0.0, 1.0, 2.0]]))[0].tolist()
        [[1.0, 2.0, 0.0]]
    """

    def __init__(self, num_channels: int, mode: str = "shuffle"):
        super().__init__()
        self.mode = mode
        self.num_channels = num_channels
        if self.mode == "shuffle":
            perm = torch.randperm(self.num_channels)
            self.register_buffer("perm", perm)
            self.register_buffer("inv_perm", torch.argsort(perm))

    def _permute(self, z: Tensor, inverse: bool) -> Tensor:
        if self.mode == "shuffle":
            return z[:, self.inv_perm if inverse else self.perm, ...]
        if self.mode == "swap":
            k = (self.num_channels + 1) // 2 if inverse else self.num_channels // 2
            return torch.cat([z[:, k:, ...], z[:, :k, ...]], dim=1)
        raise NotImplementedError("The mode " + self.mode + " is not implemented.")

    def forward(self, z, context=None):
        return self._permute(z, False), zero_logdet(z)

    def inverse(self, z, context=None):
        return self._permute(z, True), zero_logdet(z)


class Invertible1x1Conv(Flow):
    r"""Glow's invertible 1x1 convolution (NCHW); ``forward`` applies :math:`W^{-1}`, log-det
    :math:`\mp HW \log|\det W|`, optionally LU-parametrised.

    Args:
        num_channels: the channel count C.
        use_lu: parametrise W = P L U.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import Invertible1x1Conv
        >>> conv = Invertible1x1Conv(3, use_lu=True)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> torch.allclose(conv(conv.inverse(x)[0])[0], x, atol=1e-5)
        True
    """

    def __init__(self, num_channels: int, use_lu: bool = False):
        super().__init__()
        self.num_channels = num_channels
        self.use_lu = use_lu
        Q, _ = torch.linalg.qr(torch.randn(self.num_channels, self.num_channels))
        if use_lu:
            P, L, U = torch.lu_unpack(*torch.linalg.lu_factor(Q))
            self.register_buffer("P", P)
            self.L = nn.Parameter(L)
            S = U.diag()
            self.register_buffer("sign_S", torch.sign(S))
            self.log_S = nn.Parameter(torch.log(torch.abs(S)))
            self.U = nn.Parameter(torch.triu(U, diagonal=1))
            self.register_buffer("eye", torch.diag(torch.ones(self.num_channels)))
        else:
            self.W = nn.Parameter(Q)

    def _inverse64(self, m: Tensor) -> Tensor:
        return torch.inverse(m) if m.dtype == torch.float64 else torch.inverse(m.double()).type(m.dtype)

    def weight_and_logdet(self) -> tuple[Tensor, Tensor]:
        """W (what ``inverse`` applies) and log|det W|."""
        if self.use_lu:
            return self._assemble_W(), torch.sum(self.log_S)
        return self.W, torch.slogdet(self.W)[1]

    def _assemble_W(self, inverse: bool = False) -> Tensor:
        L = torch.tril(self.L, diagonal=-1) + self.eye
        U = torch.triu(self.U, diagonal=1) + torch.diag(self.sign_S * torch.exp(self.log_S))
        if inverse:
            return self._inverse64(U) @ self._inverse64(L) @ self.P.t()
        return self.P @ L @ U

    def _conv(self, z: Tensor, inverse: bool):
        if inverse:
            W, log_det = self.weight_and_logdet()
        elif self.use_lu:
            W, log_det = self._assemble_W(inverse=True), -torch.sum(self.log_S)
        else:
            W, log_det = self._inverse64(self.W), -torch.slogdet(self.W)[1]
        z_ = F.conv2d(z, W.view(self.num_channels, self.num_channels, 1, 1))
        return z_, log_det * z.size(2) * z.size(3)

    def forward(self, z):
        return self._conv(z, inverse=False)

    def inverse(self, z):
        return self._conv(z, inverse=True)


# ---- convert(): normflows' classes as these ----------------------------------------------------
@builtin_converter("normflows.flows.Permute")
def _convert_permute(m, *, convert_child, **kwargs):
    return _build(Permute, m, m.num_channels, m.mode)


@builtin_converter("normflows.flows.Invertible1x1Conv")
def _convert_conv1x1(m, *, convert_child, **kwargs):
    return _build(Invertible1x1Conv, m, m.num_channels, m.use_lu)
