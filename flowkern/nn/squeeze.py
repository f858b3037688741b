r"""Squeeze (2x2 space-to-depth) and RealNVP's binary masks.

:class:`Squeeze` trades space for channels, (B, C, H, W) -> (B, 4C, H/2, W/2), with
log-det 0 (a permutation of the entries). Two channel orders:

* ``order="glow"`` — output channel :math:`4c + 2i + j` holds input channel c at offset (i, j)
  of each 2x2 block (Kingma & Dhariwal 2018, ``squeeze2d``; also normflows, nflows and FrEIA's
  ``IRevNetDownsampling``).
* ``order="checkerboard"`` — output channel :math:`kC + c` with offsets
  :math:`k \mapsto (0,0), (1,1), (0,1), (1,0)`: the first 2C channels are the pixels where
  :math:`i + j` is even, the last 2C those where it is odd — one colour of RealNVP's checkerboard
  each (Dinh et al. 2017, Sec. 3.6), so a checkerboard-masked coupling is a channel split of the
  squeezed tensor (:class:`flowkern.nn.CheckerboardCoupling`).

:func:`checkerboard_mask` and :func:`channel_mask` are RealNVP's masks b (1 = passive: the part
the coupling leaves unchanged and conditions on),
:math:`y = b \odot x + (1 - b) \odot (x \odot e^{s(b \odot x)} + t(b \odot x))`.

Reference: L. Dinh, J. Sohl-Dickstein, S. Bengio, *Density estimation using Real NVP*, ICLR 2017;
D. P. Kingma, P. Dhariwal, *Glow: Generative Flow with Invertible 1x1 Convolutions*, NeurIPS 2018.
"""

from __future__ import annotations

import torch

from .._checks import check_choice, check_int
from .base import InvertibleModule, ParamGrads, zero_logdet

__all__ = ["Squeeze", "squeeze2x2", "unsqueeze2x2", "checkerboard_mask", "channel_mask", "SQUEEZE_ORDERS"]

SQUEEZE_ORDERS = ("glow", "checkerboard")
# (row, column) offset of each channel group of the checkerboard order: colour even, then odd
_CHECKER_OFFSETS = ((0, 0), (1, 1), (0, 1), (1, 0))


def _check_image(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be an image batch of shape (B, C, H, W), got shape {tuple(x.shape)}")
    return x


def squeeze2x2(x: torch.Tensor, order: str = "glow") -> torch.Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2) in the given channel order (module docstring).

    Args:
        x: the image batch (H, W even).
        order: ``"glow"`` or ``"checkerboard"``.

    Example:
        >>> squeeze2x2(torch.arange(4.0).reshape(1, 1, 2, 2)).flatten().tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    _check_image(x, "x")
    B, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"Squeeze needs an even height and width: x has shape {tuple(x.shape)} "
                         f"(H={H}, W={W}); crop or pad the image to even sizes")
    if order == "glow":
        v = x.reshape(B, C, H // 2, 2, W // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return v.reshape(B, 4 * C, H // 2, W // 2)
    return torch.cat([x[:, :, i::2, j::2] for i, j in _CHECKER_OFFSETS], 1)


def unsqueeze2x2(y: torch.Tensor, order: str = "glow") -> torch.Tensor:
    """Inverse of :func:`squeeze2x2`: (B, 4C, H, W) -> (B, C, 2H, 2W).

    Args:
        y: the squeezed batch (channels divisible by 4).
        order: as for :func:`squeeze2x2`.

    Example:
        >>> x = torch.randn(1, 2, 4, 4)
        >>> torch.equal(unsqueeze2x2(squeeze2x2(x, "checkerboard"), "checkerboard"), x)
        True
    """
    _check_image(y, "y")
    B, C4, H, W = y.shape
    if C4 % 4:
        raise ValueError(f"Squeeze's inverse needs a channel count divisible by 4: y has shape {tuple(y.shape)}")
    C = C4 // 4
    if order == "glow":
        v = y.reshape(B, C, 2, 2, H, W).permute(0, 1, 4, 2, 5, 3)
        return v.reshape(B, C, 2 * H, 2 * W)
    x = y.new_empty(B, C, 2 * H, 2 * W)
    for k, (i, j) in enumerate(_CHECKER_OFFSETS):
        x[:, :, i::2, j::2] = y[:, k * C:(k + 1) * C]
    return x


class Squeeze(InvertibleModule):
    """2x2 space-to-depth, (B, C, H, W) -> (B, 4C, H/2, W/2), log-det 0.

    Args:
        order: ``"glow"`` (channel 4c + 2i + j, Glow's ``squeeze2d``) or ``"checkerboard"``
            (the two checkerboard colours as channel halves, for RealNVP's checkerboard couplings).

    Reference: Dinh et al. 2017 (RealNVP), Sec. 3.6; Kingma & Dhariwal 2018 (Glow).

    Example:
        >>> y, logdet = Squeeze()(torch.randn(2, 3, 8, 8))
        >>> tuple(y.shape), logdet.tolist()
        ((2, 12, 4, 4), [0.0, 0.0])
    """

    def __init__(self, order: str = "glow") -> None:
        super().__init__()
        self.order = check_choice("order", order, SQUEEZE_ORDERS)

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape (C, H, W) after the squeeze."""
        C, H, W = shape
        if H % 2 or W % 2:
            raise ValueError(f"Squeeze needs an even height and width, got per-sample shape {tuple(shape)}")
        return (4 * C, H // 2, W // 2)

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return squeeze2x2(x, self.order), zero_logdet(x)

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return unsqueeze2x2(y, self.order), zero_logdet(y)

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads):
        """A permutation: x and grad_x are the un-squeezed y and grad_y (no re-run, no parameters)."""
        return unsqueeze2x2(y, self.order), unsqueeze2x2(grad_y, self.order), None

    def extra_repr(self) -> str:
        return f"order={self.order!r}"


def checkerboard_mask(height: int, width: int, parity: int = 0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """RealNVP's checkerboard mask b of shape (1, 1, height, width): 1 where (i + j) % 2 == parity.

    With parity 0 the passive pixels are the first 2C channels of ``Squeeze("checkerboard")``.

    Args:
        height, width: the mask's size.
        parity: 0 or 1, as above.
        dtype, device: of the mask.

    Example:
        >>> checkerboard_mask(2, 2)[0, 0].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    height, width = check_int("height", height, minimum=1), check_int("width", width, minimum=1)
    parity = check_int("parity", parity, minimum=0, maximum=1)
    i = torch.arange(height, device=device).reshape(-1, 1)
    j = torch.arange(width, device=device).reshape(1, -1)
    return ((i + j) % 2 == parity).to(dtype).reshape(1, 1, height, width)


def channel_mask(channels: int, parity: int = 0, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """RealNVP's channel mask b of shape (1, channels, 1, 1): 1 on the first half of the channels
    (``channels // 2``) for parity 0, on the second half for parity 1 — the passive part of
    ``AffineCoupling(channels, ..., passive="first" / "second")``.

    Args:
        channels: C (>= 2).
        parity: 0 or 1, as above.
        dtype, device: of the mask.

    Example:
        >>> channel_mask(4, parity=1).flatten().tolist()
        [0.0, 0.0, 1.0, 1.0]
    """
    channels = check_int("channels", channels, minimum=2)
    parity = check_int("parity", parity, minimum=0, maximum=1)
    first = torch.arange(channels, device=device) < channels // 2
    b = first if parity == 0 else ~first
    return b.to(dtype).reshape(1, channels, 1, 1)
