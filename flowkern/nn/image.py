r"""Image flow layers: Glow's step on the fused op, RealNVP's checkerboard coupling, the conv
subnet, a one-hot class embedder and the training helpers image flows need.

**Glow step** (Kingma & Dhariwal 2018, Sec. 3): actnorm, invertible 1x1 convolution, affine
coupling with the sigmoid scale,

.. math:: u = W(a \odot x + b) = W' x + b',\quad W' = W\,\mathrm{diag}(a),\ b' = W b,\qquad
          (s_{raw}, t) = \mathrm{NN}(u_p),\quad y_a = u_a \odot \sigma(s_{raw} + 2) + t,

    \log|\det J| = HW\,(\textstyle\sum_c \log|a_c| + \log|\det W|) + \sum \log\sigma(s_{raw} + 2).

:class:`GlowStep` folds the actnorm into the 1x1 convolution (one conv with the rescaled weight
W' and bias b') and runs the coupling as one fused op call (``scale="sigmoid"``). Its
memory-saving step rebuilds x with the inverse of the C x C matrix W' and computes the
conv's grads in closed form (grad_x = W'^T grad_u, grad_W' = sum grad_u x^T), then back to the
LU factors and actnorm parameters through the small matrices only.

**Checkerboard coupling** (Dinh et al. 2017, Sec. 3.4): with RealNVP's checkerboard mask b,
:math:`y = b \odot x + (1-b) \odot (x \odot e^{f(s)} + t)`, :math:`(s, t) = \mathrm{NN}(b \odot x)`.
:class:`CheckerboardCoupling` takes the image in :class:`~flowkern.nn.Squeeze` ``"checkerboard"``
order, where the two colours are the channel halves: the masked image the subnet sees is
rebuilt at full resolution, the subnet's outputs at the active pixels are gathered, and the
coupling is a channel split of the squeezed tensor, run by the fused op.

References: D. P. Kingma, P. Dhariwal, *Glow: Generative Flow with Invertible 1x1 Convolutions*,
NeurIPS 2018; L. Dinh, J. Sohl-Dickstein, S. Bengio, *Density estimation using Real NVP*, ICLR 2017.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_int, check_number
from ..spec import acc_dtype
from .actnorm import ActNorm, ActNormParams
from .base import InvertibleModule, ParamGrads, backprop_block, check_input, check_nonzero_scale
from .conditional import ConditionalAffineCoupling, broadcast_condition
from .coupling import AffineCoupling
from .invconv import InvConv1x1
from .squeeze import unsqueeze2x2


def autocast_off(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Disable autocast around the flow's main path (it stays in the input dtype, so the layer
    stays invertible to that precision; only subnets run in the autocast dtype)."""
    dev = t.device.type
    return torch.autocast(dev, enabled=False) if torch.is_autocast_enabled(dev) else contextlib.nullcontext()


# ---- subnet -----------------------------------------------------------------------------------
class _SubnetActNorm(ActNormParams):
    """Actnorm inside a subnet: y = scale * (x + loc), data-dependent init, no log-det."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.maybe_initialize(x, inverse=False)
        a, b = self.coefficients(x)
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return torch.addcmul(b.reshape(shape), x, a.reshape(shape))


class ZeroConv2d(nn.Conv2d):
    r"""Glow's ``conv2d_zeros``: a zero-initialised 3x3 convolution whose output is scaled by
    :math:`e^{3\,\text{logs}}` (``logs`` per output channel, zero-initialised), so the layer it ends
    starts as the identity and learns its output scale quickly.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: odd kernel size (padding keeps the spatial shape).
        logscale_factor: the factor 3 of Glow (0 disables the learned output scale).

    Example:
        >>> ZeroConv2d(2, 4)(torch.randn(1, 2, 3, 3)).abs().max().item()
        0.0
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 logscale_factor: float = 3.0) -> None:
        kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size padding), got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.logscale_factor = check_number("logscale_factor", logscale_factor, minimum=0.0)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)
        self.logs = nn.Parameter(torch.zeros(out_channels)) if self.logscale_factor else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = super().forward(x)
        if self.logs is None:
            return h
        return h * torch.exp(self.logs * self.logscale_factor).reshape(1, -1, 1, 1)


class ConvSubnet(nn.Sequential):
    """Glow's coupling network: 3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv, the last layer
    zero-initialised (the coupling starts as the identity), optionally actnorm after the first two
    convolutions (Glow's ``conv2d`` with actnorm, which then has no bias).

    Args:
        in_channels: channels the subnet sees (passive half, plus condition channels).
        out_channels: 2 x active channels ([s_raw | t] for the fused op's packed form).
        hidden: width of the hidden layers.
        actnorm: actnorm after the hidden convolutions.
        kernel_size: size of the first and last kernels (odd).

    Reference: Kingma & Dhariwal 2018, Sec. 3.3 and the ``f`` network of the reference code.

    Example:
        >>> tuple(ConvSubnet(2, 4, hidden=8)(torch.randn(1, 2, 5, 5)).shape)
        (1, 4, 5, 5)
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int, actnorm: bool = False,
                 kernel_size: int = 3) -> None:
        in_channels = check_int("in_channels", in_channels, minimum=1)
        out_channels = check_int("out_channels", out_channels, minimum=1)
        hidden = check_int("hidden", hidden, minimum=1)
        actnorm = check_bool("actnorm", actnorm)
        kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (same-size padding), got {kernel_size}")
        pad = kernel_size // 2
        layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, kernel_size, padding=pad, bias=not actnorm)]
        if actnorm:
            layers.append(_SubnetActNorm(hidden))
        layers += [nn.ReLU(inplace=True), nn.Conv2d(hidden, hidden, 1, bias=not actnorm)]
        if actnorm:
            layers.append(_SubnetActNorm(hidden))
        last = nn.Conv2d(hidden, out_channels, kernel_size, padding=pad)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        layers += [nn.ReLU(inplace=True), last]
        super().__init__(*layers)
        self.in_channels, self.out_channels, self.hidden = in_channels, out_channels, hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layers on CPU run in channels-last layout (:func:`channels_last_call`)."""
        return channels_last_call(super().forward, x)


def channels_last_call(fn, x: torch.Tensor):
    """``fn(x)`` with a 4-d CPU input in channels-last layout and the output made contiguous
    (NCHW) again: oneDNN's CPU convolutions run NHWC without reordering every call; the fused op
    wants NCHW. Only the input's memory layout changes, never the module (its weights keep theirs)."""
    if x.dim() != 4 or x.device.type != "cpu":
        return fn(x)
    out = fn(x.contiguous(memory_format=torch.channels_last))
    if isinstance(out, tuple):
        return tuple(o.contiguous() for o in out)
    return out.contiguous()


# ---- Glow step --------------------------------------------------------------------------------
def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y[:, i] = sum_j weight[i, j] x[:, j] (+ bias[i]) at every position of x (B, C, *S), as one
    batched matrix product over the flattened positions (on CPU, at Glow's small channel counts,
    cheaper than ``conv2d`` with a 1x1 kernel)."""
    B, C = x.shape[:2]
    xv = x.reshape(B, C, math.prod(x.shape[2:]))  # not -1: ambiguous for an empty batch
    if bias is None:
        y = torch.matmul(weight, xv)
    else:
        y = torch.baddbmm(bias.reshape(1, -1, 1), weight.expand(B, -1, -1), xv)
    return y.reshape(B, weight.shape[0], *x.shape[2:])


def backprop_folded_conv(u: torch.Tensor, grad_u: torch.Tensor, grad_logdet: torch.Tensor, w: torch.Tensor,
                         b: torch.Tensor, ld: torch.Tensor, owners: tuple[nn.Module, ...], grads: ParamGrads
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Memory-saving step of a 1x1 convolution :math:`u = W' x + b'` whose log-det is
    :math:`\prod S \cdot \ell`: rebuild :math:`x = W'^{-1}(u - b')`, return ``(x, grad_x)`` with
    :math:`\nabla_x = W'^T \nabla_u`, and accumulate into ``grads`` the parameter grads of
    ``owners`` through the small tensors ``w``, ``b``, ``ld`` (functions of those parameters,
    built with grad): :math:`\nabla_{W'} = \sum \nabla_u x^T`, :math:`\nabla_{b'} = \sum \nabla_u`,
    :math:`\nabla_\ell = \prod S \sum_B \nabla_{\log\det}`."""
    n_pix = math.prod(u.shape[2:])
    C = u.shape[1]
    with torch.no_grad(), autocast_off(u):
        wd, bd = w.detach(), b.detach()
        w_inv = torch.linalg.inv(wd.double())
        x = conv1x1(u, w_inv.to(wd.dtype), (-(w_inv @ bd.double())).to(wd.dtype))  # W'^{-1} u - W'^{-1} b'
        grad_x = conv1x1(grad_u, wd.T)
        # one (C, B*N) x (B*N, C) product, not a batched product of B tiny matrices
        # (explicit sizes, not -1: an empty batch has no size to infer)
        n_all = u.shape[0] * n_pix
        gu = grad_u.reshape(u.shape[0], C, n_pix).transpose(0, 1).reshape(C, n_all)
        g_w = gu @ x.reshape(u.shape[0], C, n_pix).transpose(0, 1).reshape(C, n_all).T
        g_b = gu.sum(1)
        g_ld = (n_pix * grad_logdet.sum()).to(ld.dtype)
    with torch.enable_grad():
        backprop_block(owners, (w, b, ld), (g_w.to(w.dtype), g_b.to(b.dtype), g_ld), (), (), grads)
    return x, grad_x


class GlowStep(InvertibleModule):
    r"""One step of Glow: ActNorm -> InvConv1x1 -> affine coupling with Glow's sigmoid(s + 2)
    scale, the first two folded into one 1x1 convolution (module docstring).

    Args:
        channels: C of the (B, C, H, W) input (>= 2).
        hidden: width of the default :class:`ConvSubnet` (ignored when ``subnet`` is given).
        subnet: network mapping the passive half (plus condition channels) to
            (B, 2 x active channels, H, W) = [s_raw | t], or to a pair (s_raw, t).
        cond_channels: channels of a condition c (vector (B, cond) or map (B, cond, H, W)) the
            coupling's subnet sees beside the passive half; 0 for none.
        actnorm_in_subnet: actnorm inside the default subnet.
        seed: seed of the 1x1 convolution's random orthogonal init.
        scale, clamp, eps, passive, split: the coupling's options (:class:`AffineCoupling`);
            Glow is ``scale="sigmoid"``.

    Reference: Kingma & Dhariwal 2018, Table 1 and Sec. 3.

    Example:
        >>> step = GlowStep(4, hidden=8)
        >>> x = torch.randn(2, 4, 3, 3)
        >>> y, logdet = step(x)  # the first training call initialises the actnorm
        >>> torch.allclose(step.inverse(y)[0], x, atol=1e-5)
        True
    """

    def __init__(self, channels: int, hidden: int = 512, *, subnet: nn.Module | None = None,
                 cond_channels: int = 0, actnorm_in_subnet: bool = False, seed: int = 0,
                 scale: str = "sigmoid", clamp: float = 2.0, eps: float = 0.0, passive: str = "first",
                 split: int | None = None) -> None:
        super().__init__()
        channels = check_int("channels", channels, minimum=2)
        cond_channels = check_int("cond_channels", cond_channels, minimum=0)
        split = channels // 2 if split is None else check_int("split", split, minimum=1, maximum=channels - 1)
        c_pas = split if passive == "first" else channels - split
        if subnet is None:
            subnet = ConvSubnet(c_pas + cond_channels, 2 * (channels - c_pas), check_int("hidden", hidden, minimum=1),
                                actnorm=actnorm_in_subnet)
        self.channels = channels
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels, seed=check_int("seed", seed))
        kw = dict(scale=scale, clamp=clamp, eps=eps, passive=passive, split=split)
        self.coupling = (ConditionalAffineCoupling(channels, cond_channels, subnet, **kw) if cond_channels
                         else AffineCoupling(channels, subnet, **kw))

    # W' = W diag(a), b' = W b, and the per-position log-det sum log|a| + log|det W|
    def folded(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The folded 1x1 convolution ``(W', b')`` in ``like``'s dtype and its per-position log-det."""
        check_nonzero_scale(self.actnorm, self.actnorm.scale, f"{type(self).__name__}.actnorm.scale")
        a, b = self.actnorm.coefficients(like)
        W = self.invconv.weight().to(like.dtype)
        acc = acc_dtype(like.dtype)
        ld = torch.log(torch.abs(self.actnorm.scale.to(acc))).sum() + self.invconv.log_s.to(acc).sum()
        return W * a, W @ b, ld

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """y = coupling(W' x + b'); log-det as in the module docstring."""
        check_input(x, self.channels, "x", self.actnorm)  # the step's dtype and device: its actnorm's
        self.actnorm.maybe_initialize(x, inverse=False)
        with autocast_off(x):
            w, b, ld = self.folded(x)
            u = conv1x1(x, w, b)
        y, ld_c = self.coupling.run_checked(u, c)
        return y, ld_c + math.prod(x.shape[2:]) * ld

    def inverse(self, y: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u = coupling^{-1}(y); x = W'^{-1} (u - b')."""
        check_input(y, self.channels, "y", self.actnorm)
        u, ld_c = self.coupling.invert_checked(y, c)
        self.actnorm.maybe_initialize(u, inverse=True)
        with autocast_off(u):
            w, b, ld = self.folded(u)
            x = conv1x1(u - b.reshape(1, -1, *([1] * (u.dim() - 2))), torch.linalg.inv(w.double()).to(w.dtype))
        return x, ld_c - math.prod(y.shape[2:]) * ld

    def invert_and_backprop(self, y: torch.Tensor, c: torch.Tensor | None, grad_y: torch.Tensor,
                            grad_logdet: torch.Tensor, grads: ParamGrads):
        """The coupling's own step (one subnet evaluation), then the folded convolution in closed
        form (:func:`backprop_folded_conv`)."""
        u, grad_u, grad_c = self.coupling.invert_and_backprop(y, c, grad_y, grad_logdet, grads)
        with torch.enable_grad(), autocast_off(u):
            w, b, ld = self.folded(u)
        x, grad_x = backprop_folded_conv(u, grad_u, grad_logdet, w, b, ld, (self.actnorm, self.invconv), grads)
        return x, grad_x, grad_c

    def extra_repr(self) -> str:
        return f"channels={self.channels}"


# ---- RealNVP checkerboard coupling -------------------------------------------------------------
class _CheckerboardNet(nn.Module):
    """Wraps a full-resolution subnet: input the masked image (built by the coupling), output the
    packed [s_raw | t] at the active pixels in the squeezed layout."""

    def __init__(self, net: nn.Module, channels: int, parity: int) -> None:
        super().__init__()
        self.net, self.channels, self.parity = net, channels, parity

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        h = self.net(v)
        C = self.channels
        if h.dim() != 4 or h.shape[1] != 2 * C or h.shape[2:] != v.shape[2:]:
            raise ValueError(f"the checkerboard subnet must map (B, *, H, W) to (B, {2 * C}, H, W) "
                             f"= [s | t] at full resolution, got {tuple(h.shape)} from {tuple(v.shape)}")
        # active colour: odd (i + j) for parity 0, even for parity 1 (Squeeze's checkerboard offsets)
        offsets = ((0, 1), (1, 0)) if self.parity == 0 else ((0, 0), (1, 1))
        s = [h[:, :C, i::2, j::2] for i, j in offsets]
        t = [h[:, C:, i::2, j::2] for i, j in offsets]
        return torch.cat(s + t, 1)


class CheckerboardCoupling(AffineCoupling):
    r"""RealNVP's checkerboard-masked affine coupling, on the fused op.

    The input is an image (B, C, H, W) in :class:`~flowkern.nn.Squeeze` ``"checkerboard"``
    layout, i.e. (B, 4C, H/2, W/2); the result equals RealNVP's masked coupling on the
    unsqueezed image with mask ``checkerboard_mask(H, W, parity)`` (module docstring).

    Args:
        channels: C of the unsqueezed image.
        subnet: full-resolution network (B, C [+ cond_channels], H, W) -> (B, 2C, H, W) = [s | t]
            (e.g. ``ConvSubnet(C, 2 * C, hidden)``); it sees b * x (zeros at the active pixels).
        parity: 0: the even pixels (i + j even) are passive, 1: the odd ones.
        cond_channels: channels of a condition c concatenated to the subnet input (0: none).
        scale, clamp, atan_k, eps: the scale function (:class:`AffineCoupling`; RealNVP uses a
            bounded scale, here ``"tanh"`` with ``clamp``).

    Reference: Dinh et al. 2017, Sec. 3.4 and Fig. 3.

    Example:
        >>> from flowkern.nn import Squeeze
        >>> layer = CheckerboardCoupling(1, ConvSubnet(1, 2, hidden=4))
        >>> x = Squeeze("checkerboard")(torch.randn(2, 1, 4, 4))[0]
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y)[0], x, atol=1e-6)
        True
    """

    def __init__(self, channels: int, subnet: nn.Module, parity: int = 0, *, cond_channels: int = 0,
                 scale: str = "tanh", clamp: float = 2.0, atan_k: float = 2.0 / math.pi, eps: float = 0.0) -> None:
        channels = check_int("channels", channels, minimum=1)
        parity = check_int("parity", parity, minimum=0, maximum=1)
        super().__init__(4 * channels, _CheckerboardNet(subnet, channels, parity), scale=scale, clamp=clamp,
                         passive="first" if parity == 0 else "second", split=2 * channels, atan_k=atan_k, eps=eps)
        self.image_channels, self.parity = channels, parity
        self.cond_channels = check_int("cond_channels", cond_channels, minimum=0)

    def _subnet_input(self, z_p: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """b * x at full resolution: the passive colour in place, zeros at the active pixels."""
        zeros = torch.zeros_like(z_p)
        masked = unsqueeze2x2(torch.cat((z_p, zeros) if self.parity == 0 else (zeros, z_p), 1), "checkerboard")
        if self.cond_channels:
            masked = torch.cat((masked, broadcast_condition(c, masked, self.cond_channels)), 1)
        return masked

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, image_channels={self.image_channels}, parity={self.parity}"


# ---- class condition ----------------------------------------------------------------------------
class OneHot(nn.Module):
    """Class labels (B,) (integers in [0, num_classes)) -> one-hot vectors (B, num_classes) in the
    model's dtype; float (B, num_classes) input (soft labels, already one-hot) passes through.
    Use as the ``embedder`` of a class-conditional :class:`~flowkern.nn.MultiScaleFlow`.

    Args:
        num_classes: the number of classes.

    Example:
        >>> OneHot(3)(torch.tensor([2, 0])).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = self.out_dim = check_int("num_classes", num_classes, minimum=1)
        self.register_buffer("_dtype_ref", torch.zeros(0), persistent=False)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        if not isinstance(c, torch.Tensor):
            raise TypeError(f"c must be a torch.Tensor of class labels, got {type(c).__name__}")
        if c.is_floating_point():
            if c.dim() != 2 or c.shape[1] != self.num_classes:
                raise ValueError(f"c must be labels (B,) or one-hot (B, {self.num_classes}), got {tuple(c.shape)}")
            return c.to(self._dtype_ref.dtype)
        if c.dim() != 1:
            raise ValueError(f"c must be class labels of shape (B,), got {tuple(c.shape)}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.num_classes):
            raise ValueError(f"c must hold labels in [0, {self.num_classes}), got min {int(c.min())}, max {int(c.max())}")
        return F.one_hot(c.long(), self.num_classes).to(self._dtype_ref.dtype)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}"


# ---- training helpers ---------------------------------------------------------------------------
def dequantize(x: torch.Tensor, n_bits: int = 8, generator: torch.Generator | None = None,
               dtype: torch.dtype = torch.float32, *, scaled: bool = False) -> torch.Tensor:
    r"""Uniform dequantisation of integer images: :math:`(k + u) / 2^{n}`, u ~ U[0, 1), in [0, 1).

    ``x`` holds the integer pixel values k in [0, 2^n_bits): any integer dtype (uint8 images),
    or floats that hold integers (``torch.randint(0, 256, ...)``, ``x.float()`` of a uint8 image).
    Images already scaled to [0, 1] (torchvision's ``ToTensor``, :math:`k / (2^n - 1)`) are taken
    only with ``scaled=True``, which maps them back to :math:`k = \mathrm{round}(x\,(2^n - 1))`;
    without it they raise, as they would otherwise be squashed into [0, 2^{-n}) and every
    likelihood and :func:`bits_per_dim` computed on them would be wrong.

    Args:
        x: the pixel values, (B, C, H, W) or any shape (see above).
        n_bits: bits per pixel of the data (8 for ordinary images; fewer after reducing depth).
        generator: random generator for u.
        dtype: output dtype (a floating dtype).
        scaled: ``x`` is [0, 1]-scaled, :math:`k / (2^n - 1)` (``ToTensor`` output), not integers.

    Raises ``TypeError`` if ``x`` is not a real-valued tensor or ``dtype`` not a floating dtype;
    ``ValueError`` (naming ``x`` and what was expected) if ``x`` holds non-finite, negative or
    non-integer values, values >= 2^n_bits, floats in [0, 1] without ``scaled=True``, or, with
    ``scaled=True``, values outside [0, 1] or off the :math:`k / (2^n - 1)` grid.

    Reference: L. Theis, A. van den Oord, M. Bethge, *A note on the evaluation of generative
    models*, ICLR 2016; Dinh et al. 2017, Sec. 4.1.

    Example:
        >>> v = dequantize(torch.tensor([0, 255], dtype=torch.uint8))
        >>> bool(0 <= v[0] < 1 / 256 and 255 / 256 <= v[1] < 1)
        True
    """
    n_bits = check_int("n_bits", n_bits, minimum=1, maximum=16)
    scaled = check_bool("scaled", scaled)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of pixel values, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x must hold integer pixel values (an integer dtype, or floats holding integers), "
                        f"got dtype {x.dtype}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    bins = 2 ** n_bits
    if scaled:
        if not x.is_floating_point():
            raise ValueError(f"x must hold floats in [0, 1] with scaled=True, got dtype {x.dtype}: pass integer "
                             f"pixels without scaled=True")
        k = _scaled_to_integers(x, n_bits)
    else:
        k = x if x.is_floating_point() else x.long()  # (min / max of the unsigned dtypes need int64)
        _check_integer_pixels(k, n_bits)
    k = k.to(dtype)
    u = torch.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    return (k + u) / bins


def _scaled_to_integers(x: torch.Tensor, n_bits: int) -> torch.Tensor:
    """k = round(x (2^n - 1)) of [0, 1]-scaled pixels, checked to lie on the k / (2^n - 1) grid."""
    if not x.numel():
        return x
    bins = 2 ** n_bits
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"x must hold finite pixel values, got range [{lo}, {hi}]")
    if lo < 0 or hi > 1:
        raise ValueError(f"x must hold [0, 1]-scaled pixels with scaled=True, got range [{lo}, {hi}]"
                         + (f": for integer pixels in [0, {bins - 1}] drop scaled=True" if hi >= 2 else ""))
    v = x.double() * (bins - 1)
    k = v.round()
    off = float((v - k).abs().max())
    if off > 1e-2:
        raise ValueError(f"x must hold [0, 1]-scaled pixels k / {bins - 1} (k integer, n_bits={n_bits}) with "
                         f"scaled=True, got a value {off:.3g} levels off that grid: the data is not "
                         f"{n_bits}-bit quantised (check n_bits)")
    return k


def _check_integer_pixels(k: torch.Tensor, n_bits: int) -> None:
    """``k`` holds integers in [0, 2^n_bits); ValueError naming ``x`` and the [0, 1] case otherwise."""
    if not k.numel():
        return
    bins = 2 ** n_bits
    lo, hi = float(k.min()), float(k.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"x must hold finite integer pixel values in [0, {bins - 1}], got range [{lo}, {hi}]")
    fractional = k.is_floating_point() and bool((k != k.round()).any())
    if fractional and lo >= 0 and hi <= 1:
        raise ValueError(
            f"x must hold integer pixel values in [0, {bins - 1}] (n_bits={n_bits}), got floats in [0, 1] "
            f"(range [{lo:.4g}, {hi:.4g}]; e.g. torchvision's ToTensor output): pass "
            f"(x * {bins - 1}).round().to(torch.uint8), or dequantize(x, scaled=True)")
    if fractional:
        raise ValueError(f"x must hold integer pixel values in [0, {bins - 1}] (n_bits={n_bits}), got non-integer "
                         f"values (range [{lo:.4g}, {hi:.4g}]): pass the quantised pixels, not normalised data")
    if lo < 0:
        raise ValueError(f"x must hold integer pixel values in [0, {bins - 1}] (n_bits={n_bits}), got a negative "
                         f"value {lo:g}: pass the raw pixels, not centred or normalised data")
    if hi > bins - 1:
        raise ValueError(f"x must hold integer pixel values in [0, {bins - 1}] (values < 2^n_bits = {bins}, "
                         f"n_bits={n_bits}), got a value {hi:g}: reduce the bit depth first, or raise n_bits")


def bits_per_dim(log_prob: torch.Tensor, num_dims: int, n_bits: int = 8) -> torch.Tensor:
    r"""Bits per dimension of dequantised data: :math:`(-\log p(x) + D \log 2^{n}) / (D \log 2)`.

    Assumes ``log_prob`` is the log density (nats) of each sample's D values dequantised into a
    unit-width range per dimension, so that each of the 2^n pixel levels is a bin of width
    2^{-n}: [0, 1) as from :func:`dequantize` (or a shift of it, e.g. [-1/2, 1/2)). The
    :math:`D \log 2^n` term is that bin width: the density becomes the probability mass of the
    bins (a lower bound on the discrete likelihood). Data in another range (pixels 0..255 as
    floats, or ``ToTensor`` output taken as dequantised) gives a number that is not bits/dim:
    build x with :func:`dequantize`.

    Args:
        log_prob: log p(x) per sample (nats), shape (B,) (or a scalar), e.g. ``model.log_prob(x)``.
        num_dims: D, the number of dimensions per sample (C * H * W).
        n_bits: bits per pixel of the data (the 2^n_bits bins).

    Raises ``TypeError`` if ``log_prob`` is not a floating tensor, ``ValueError`` if it is not
    per sample (more than one dim: sum the per-dimension terms first), and the argument checks'
    errors for ``num_dims`` (int >= 1) and ``n_bits`` (int in [1, 16]). No value check runs on
    ``log_prob`` (no host sync in a training loop): a NaN stays NaN.

    Example:
        >>> bits_per_dim(torch.tensor([0.0]), num_dims=1).tolist()  # density 1 on one dim: 8 bits
        [8.0]
    """
    if not isinstance(log_prob, torch.Tensor) or not log_prob.is_floating_point():
        what = f"dtype {log_prob.dtype}" if isinstance(log_prob, torch.Tensor) else type(log_prob).__name__
        raise TypeError(f"log_prob must be a floating torch.Tensor of per-sample log-likelihoods, got {what}")
    if log_prob.dim() > 1:
        raise ValueError(f"log_prob must hold one log-likelihood per sample, shape (B,), got {tuple(log_prob.shape)}: "
                         "sum the per-dimension log-densities over each sample first")
    num_dims = check_int("num_dims", num_dims, minimum=1)
    n_bits = check_int("n_bits", n_bits, minimum=1, maximum=16)
    return (-log_prob / num_dims + n_bits * math.log(2.0)) / math.log(2.0)
