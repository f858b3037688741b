r"""normflows' Glow: ``GlowBlock`` and ``Squeeze`` (with ``MultiscaleFlow`` in :mod:`.core`; see
:mod:`flowkern.compat.normflows`), the architecture of normflows' ``examples/glow.ipynb``.

:func:`flowkern.compat.convert` turns these models into the classes here: same names, call
signatures, return conventions and ``state_dict`` keys, the children converted to the adapters of
:mod:`flowkern.compat.normflows`, and the network run as an
:class:`~flowkern.nn.graph.InvertibleProgram` in the normalising direction. With
``memory_saving=True`` (an argument of convert(), or the attribute of the converted model) the
training direction saves only the latents for backward. A :class:`GlowBlock` is
:class:`flowkern.nn.GlowStep` over normflows' parameters: actnorm and 1x1 convolution folded into
one convolution, the coupling one fused op call; the Gaussian bases stay the user's modules.

Reference: Kingma & Dhariwal 2018 (Glow); normflows (Stimper et al. 2023).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...nn.base import zero_logdet
from ...nn.coupling import AffineCoupling as _OpCoupling
from ...nn.image import GlowStep, channels_last_call
from ...nn.squeeze import Squeeze as _Squeeze2x2
from ...nn.squeeze import squeeze2x2, unsqueeze2x2
from ...spec import acc_dtype
from .._peer import RankError, ShapeError
from ..convert import builtin_converter
from .flows import SCALE_MAPS, ActNorm, AffineCouplingBlock, Flow
from .mixing import Invertible1x1Conv

__all__ = ["GlowBlock", "Squeeze"]


class Squeeze(Flow):
    """normflows' ``Squeeze``: ``forward`` (z -> x) is depth-to-space, (B, 4C, H, W) -> (B, C, 2H, 2W);
    ``inverse`` is space-to-depth in Glow's channel order (:class:`flowkern.nn.Squeeze`).

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import Squeeze
        >>> z, _ = Squeeze().inverse(torch.randn(2, 3, 4, 4))
        >>> z.shape
        torch.Size([2, 12, 2, 2])
    """

    @staticmethod
    def _check(z: Tensor, inverse: bool) -> Tensor:
        """normflows' exception types: IndexError for fewer than 4 dims (it indexes the shape),
        RuntimeError (a failing view) for odd sizes / a channel count not divisible by 4."""
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if z.dim() < 4:
            raise RankError(f"z must be an image batch of shape (B, C, H, W), got shape {tuple(z.shape)}")
        if z.dim() > 4:
            raise ShapeError(f"z must be an image batch of shape (B, C, H, W), got shape {tuple(z.shape)}")
        if inverse and (z.shape[2] % 2 or z.shape[3] % 2):
            raise ShapeError(f"Squeeze needs an even height and width: z has shape {tuple(z.shape)}")
        if not inverse and z.shape[1] % 4:
            raise ShapeError(f"Squeeze's depth-to-space needs a channel count divisible by 4: z has shape "
                             f"{tuple(z.shape)}")
        return z

    def forward(self, z):
        return unsqueeze2x2(self._check(z, False), "glow"), 0

    def inverse(self, z):
        return squeeze2x2(self._check(z, True), "glow"), 0


class _PeerSqueeze(_Squeeze2x2):
    """flowkern's Glow-order squeeze (a program node) with normflows' exception types (:class:`Squeeze`)."""

    def __init__(self) -> None:
        super().__init__("glow")

    def forward(self, x, c=None):
        return super().forward(Squeeze._check(x, True), c)

    def inverse(self, y, c=None):
        return super().inverse(Squeeze._check(y, False), c)


class ConvNet2d(nn.Module):
    """normflows' ``nets.ConvNet2d`` (same ``state_dict`` keys): conv layers with LeakyReLU,
    optional actnorm after each hidden conv, the last layer zero-initialised.

    Args:
        channels: the channel counts, input to output (one more than ``kernel_size``).
        kernel_size: each layer's (odd) kernel size.
        leaky: the LeakyReLUs' negative slope.
        init_zeros: zero-initialise the last layer.
        actnorm: actnorm after each hidden conv (which then has no bias).
        weight_std: the hidden convs' init std (None: PyTorch's init).

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows.glow import ConvNet2d
        >>> ConvNet2d((2, 8, 4), (3, 3))(torch.randn(1, 2, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, channels, kernel_size, leaky=0.0, init_zeros=True, actnorm=False, weight_std=None):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(len(kernel_size) - 1):
            conv = nn.Conv2d(channels[i], channels[i + 1], kernel_size[i], padding=kernel_size[i] // 2,
                             bias=not actnorm)
            if weight_std is not None:
                conv.weight.data.normal_(mean=0.0, std=weight_std)
            layers.append(conv)
            if actnorm:
                layers.append(_NetActNorm(ActNorm((channels[i + 1], 1, 1))))
            layers.append(nn.LeakyReLU(leaky))
        i = len(kernel_size)
        last = nn.Conv2d(channels[i - 1], channels[i], kernel_size[i - 1], padding=kernel_size[i - 1] // 2)
        if init_zeros:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class _NetActNorm(nn.Module):
    """normflows' ``utils.ActNorm``: its ``actNorm`` flow's forward output only."""

    def __init__(self, act_norm: nn.Module) -> None:
        super().__init__()
        self.actNorm = act_norm

    def forward(self, x):
        return self.actNorm(x)[0]


class _NormalizingCoupling(_OpCoupling):
    """A channel-split :class:`~flowkern.compat.normflows.AffineCouplingBlock` as the coupling of
    :class:`~flowkern.nn.GlowStep`, whose forward is the normalising direction: normflows'
    ``inverse``, the op's *inverse* with normflows' scale map (``sigmoid``: the op's ``exp`` scale
    on :math:`-\\log\\sigma(u + 2)`), so GlowStep's fused path and memory-saving step run it."""

    def __init__(self, block: AffineCouplingBlock, channels: int) -> None:
        coupling = block.flows[1]
        super().__init__(channels, coupling.param_map,
                         scale="sigmoid" if coupling.scale_map == "sigmoid_inv" else "exp",
                         passive="first" if block.flows[0].mode == "channel" else "second", split=(channels + 1) // 2)
        self.flow = coupling

    def _scale_shift(self, z_p: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor]:
        s_raw, t, _ = self.flow.coefficients(z_p, self.c_act, channels_last_call)
        return s_raw, t

    def _op(self, inverse: bool, inp: Tensor, st: tuple, a, b, check: bool = False) -> tuple:
        """The op in the other direction; with ``check`` also the max |x_rebuilt - x| per sample."""
        out = super()._op(not inverse, inp, st, a, b)
        if not check:
            return out
        rebuilt = super()._op(inverse, out[0], st, a, b)[0]
        return (*out, (rebuilt - inp).abs().flatten(1).amax(1))


class GlowBlock(GlowStep, Flow):
    r"""normflows' ``GlowBlock`` (same constructor and ``state_dict`` keys): ``flows`` =
    [AffineCouplingBlock, Invertible1x1Conv, ActNorm], ``forward`` z -> x, ``inverse`` x -> z.

    A channel-split block with scale (:attr:`fusable`) is :class:`flowkern.nn.GlowStep` on
    normflows' parameters: in the normalising direction the actnorm :math:`(x - t) e^{-s}` and
    the 1x1 convolution W fold into one convolution (weight :math:`W\,\mathrm{diag}(e^{-s})`,
    bias :math:`-W(t e^{-s})`) and the coupling is one fused op call; other blocks (checkerboard
    split, no scale, one channel) run their children.

    Args:
        channels: C of the (B, C, H, W) input.
        hidden_channels: width of the coupling's conv net.
        scale: an affine (True) or additive coupling.
        scale_map: ``"sigmoid"`` (Glow), ``"exp"`` or ``"sigmoid_inv"``.
        split_mode: ``"channel"``, ``"channel_inv"``, ``"checkerboard"`` or ``"checkerboard_inv"``.
        leaky: the negative slope of the conv net's LeakyReLUs.
        init_zeros: zero-initialise the conv net's last layer.
        use_lu: LU-parametrise the 1x1 convolution.
        net_actnorm: actnorm after the conv net's hidden layers.

    Example:
        >>> import torch
        >>> from flowkern.compat.normflows import GlowBlock
        >>> block = GlowBlock(4, 8)
        >>> x = torch.randn(2, 4, 4, 4)
        >>> z, log_det = block.inverse(x)
        >>> torch.allclose(block(z)[0], x, atol=1e-5), log_det.shape
        (True, torch.Size([2]))
    """

    def __init__(self, channels, hidden_channels, scale=True, scale_map="sigmoid", split_mode="channel", leaky=0.0,
                 init_zeros=True, use_lu=True, net_actnorm=False):
        nn.Module.__init__(self)  # not GlowStep's: the children are normflows'
        num_param = 2 if scale else 1
        if split_mode == "channel":
            sizes = ((channels + 1) // 2, hidden_channels, hidden_channels, num_param * (channels // 2))
        elif split_mode == "channel_inv":
            sizes = (channels // 2, hidden_channels, hidden_channels, num_param * ((channels + 1) // 2))
        elif "checkerboard" in split_mode:
            sizes = (channels, hidden_channels, hidden_channels, num_param * channels)
        else:
            raise NotImplementedError("Mode " + split_mode + " is not implemented.")
        param_map = ConvNet2d(sizes, (3, 1, 3), leaky, init_zeros, actnorm=net_actnorm)
        flows: list[nn.Module] = [AffineCouplingBlock(param_map, scale, scale_map, split_mode)]
        if channels > 1:
            flows.append(Invertible1x1Conv(channels, use_lu))
        flows.append(ActNorm((channels, 1, 1)))
        self.flows = nn.ModuleList(flows)
        self._adapt()

    @classmethod
    def from_flows(cls, flows: Sequence[nn.Module]) -> "GlowBlock":
        """A block around already built (converted) children."""
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block.flows = nn.ModuleList(flows)
        block._adapt()
        return block

    def _adapt(self) -> None:
        """GlowStep's parts, named once, beside the children (plain attributes, not children, so
        ``state_dict`` keys stay normflows'): ``channels``; ``invconv`` and ``actnorm``, the
        children; ``coupling``, the adapter of the fused path (it holds no state of its own, only
        normflows' coupling), None when the block is not :attr:`fusable`."""
        d = self.__dict__
        d["channels"] = self.flows[-1].s.shape[1]
        fusable = self._fusable_children()
        d["invconv"], d["actnorm"] = (self.flows[1], self.flows[2]) if fusable else (None, None)
        d["coupling"] = _NormalizingCoupling(self.flows[0], d["channels"]) if fusable else None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._adapt()  # a block pickled before these attributes existed

    # ---- normflows API ----------------------------------------------------------------------
    def _check(self, z: Tensor) -> Tensor:
        """normflows' exception type for a wrong channel count: ``ShapeError`` (its broadcast fails)."""
        if isinstance(z, Tensor) and z.dim() >= 2 and z.shape[1] != self.channels:
            raise ShapeError(f"z must have {self.channels} channels, shape (B, {self.channels}, H, W), got "
                             f"{tuple(z.shape)}")
        return z

    def forward(self, z):
        if self.fusable:
            return GlowStep.inverse(self, self._check(z))
        log_det_tot = zero_logdet(z)
        for flow in self.flows:
            z, log_det = flow(z)
            log_det_tot = log_det_tot + log_det
        return z, log_det_tot

    def inverse(self, z):
        if self.fusable:
            return GlowStep.forward(self, self._check(z))
        log_det_tot = zero_logdet(z)
        for flow in reversed(self.flows):
            z, log_det = flow.inverse(z)
            log_det_tot = log_det_tot + log_det
        return z, log_det_tot

    # ---- GlowStep's parts, on normflows' children -------------------------------------------
    @property
    def fusable(self) -> bool:
        """Whether GlowStep's fused path runs the block: a channel-split coupling with scale, a 1x1
        convolution and a per-channel actnorm (decided when the block is built)."""
        return self.coupling is not None

    def _fusable_children(self) -> bool:
        if len(self.flows) != 3:
            return False
        block, conv, norm = self.flows
        return (isinstance(block, AffineCouplingBlock) and block.fusable and block.flows[1].scale_map in SCALE_MAPS
                and isinstance(conv, Invertible1x1Conv) and isinstance(norm, ActNorm) and norm.s.dim() == 4
                and norm.per_channel() and norm.s.shape[1] == conv.num_channels)

    def extra_repr(self) -> str:
        return ""  # normflows' repr: the children only

    def folded(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """W' = W diag(e^{-s}), b' = -W (t e^{-s}) of the normalising direction in ``like``'s dtype,
        and its per-position log-det -sum s + log|det W|."""
        W, ld_w = self.invconv.weight_and_logdet()
        s, t = self.actnorm.s.reshape(-1), self.actnorm.t.reshape(-1)
        w = W * torch.exp(-s)
        b = -(w @ t)
        dtype, acc = like.dtype, acc_dtype(like.dtype)
        ld = ld_w - s.sum() if s.dtype == acc else ld_w.to(acc) - s.to(acc).sum()
        return (w, b, ld) if w.dtype == dtype else (w.to(dtype), b.to(dtype), ld)


@builtin_converter("normflows.flows.GlowBlock")
def _convert_glow_block(m, *, convert_child, **kwargs):
    return GlowBlock.from_flows([convert_child(f) for f in m.flows]).train(m.training)


@builtin_converter("normflows.flows.Squeeze")
def _convert_squeeze(m, *, convert_child, **kwargs):
    return Squeeze().train(m.training)
