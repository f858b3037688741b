r"""CompVis (iin / net2net / invariances) flat-flow modules on flowkern's fused coupling op.

Same class names, constructors, ``state_dict`` keys and conventions as the CompVis code:
``forward(x, reverse=False)`` returns ``(h, logdet)`` forward and only ``h`` in reverse;
latents are (B, D, 1, 1) (2D input is accepted where CompVis accepts it).

:class:`ActNorm` is :math:`h = \mathrm{scale}\,(x + \mathrm{loc})`, i.e. the op's actnorm with
``a = scale``, ``b = scale * loc``; log-det :math:`HW \sum \log|\mathrm{scale}|`.
:class:`DoubleVectorCouplingBlock` is two couplings with a half swap: with
:math:`d_1 = \lceil D/2 \rceil`, the first :math:`d_1` features condition
:math:`x_2 \mapsto x_2 e^{s_0(x_1)} + t_0(x_1)` (``s`` nets end in tanh, op scale 'exp'),
the result is rotated by :math:`d_1` features and coupled again with :math:`(s_1, t_1)`.
In the flow blocks (ActNorm, coupling, Shuffle) the ActNorm is folded into the first op.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.actnorm import SettableInitFlag, actnorm_init_std
from ..ops import coupling_forward, coupling_inverse

__all__ = [
    "BasicFullyConnectedNet",
    "ActNorm",
    "Shuffle",
    "InvLeakyRelu",
    "IgnoreLeakyRelu",
    "DoubleVectorCouplingBlock",
    "ConditionalDoubleVectorCouplingBlock",
    "UnconditionalFlatDoubleCouplingFlowBlock",
    "ConditionalFlatDoubleCouplingFlowBlock",
    "UnconditionalFlatCouplingFlow",
    "ConditionalFlatCouplingFlow",
]


class BasicFullyConnectedNet(nn.Module):
    """MLP ``main``: Linear, [BN | ActNorm], LeakyReLU, depth x (Linear, [BN], LeakyReLU), Linear, [Tanh].

    Args:
        dim: input features.
        depth: hidden Linear layers after the first.
        hidden_dim: their width.
        use_tanh: a Tanh at the end.
        use_bn: BatchNorm after the hidden Linears.
        out_dim: output features (None: ``dim``).
        use_an: an :class:`ActNorm` after the first Linear.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> compvis.BasicFullyConnectedNet(4, depth=1, hidden_dim=8, out_dim=2)(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, dim: int, depth: int, hidden_dim: int = 256, use_tanh: bool = False,
                 use_bn: bool = False, out_dim: int | None = None, use_an: bool = False):
        super().__init__()
        if use_bn and use_an:
            raise ValueError("use_bn and use_an are exclusive")
        layers: list[nn.Module] = [nn.Linear(dim, hidden_dim)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        if use_an:
            layers.append(ActNorm(hidden_dim))
        layers.append(nn.LeakyReLU())
        for _ in range(depth):
            layers.append(nn.Linear(hidden_dim, hidden_dim))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.LeakyReLU())
        layers.append(nn.Linear(hidden_dim, dim if out_dim is None else out_dim))
        if use_tanh:
            layers.append(nn.Tanh())
        self.main = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class ActNorm(SettableInitFlag, nn.Module):
    """CompVis ActNorm with ``loc``/``scale`` (1, C, 1, 1); data-dependent init on the first
    training call (reverse init only with ``allow_reverse_init``).

    The init follows :func:`flowkern.nn.actnorm.actnorm_init_std`: ``ValueError`` for an init
    batch with fewer than 2 values per channel or with non-finite values (CompVis computes NaN
    parameters), scale 1 (not CompVis' 1e6) and a ``UserWarning`` for a channel with (near-)zero
    spread. ``layer.initialized = True`` skips the init (parameters loaded or set by hand; the
    ``initialized`` buffer is saved with the weights, as in CompVis).

    Args:
        num_features: the channel count C.
        logdet: ``forward`` returns ``(h, logdet)`` (else ``h``).
        affine: only True.
        allow_reverse_init: the init may run in ``reverse``.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> norm = compvis.ActNorm(3, logdet=True)
        >>> h, logdet = norm(torch.randn(64, 3) * 4 + 1)  # training mode: the first call initialises
        >>> bool(h.mean(0).abs().max() < 1e-5), logdet.shape
        (True, torch.Size([64]))
    """

    def __init__(self, num_features: int, logdet: bool = False, affine: bool = True,
                 allow_reverse_init: bool = True):
        if not affine:
            raise ValueError("ActNorm supports affine=True only")
        super().__init__()
        self.logdet = logdet
        self.loc = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        self.scale = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.allow_reverse_init = allow_reverse_init
        self.register_buffer("initialized", torch.tensor(0, dtype=torch.uint8))
        self._track_init_flag()

    @torch.no_grad()
    def initialize(self, input: Tensor) -> None:
        flat = input.transpose(0, 1).reshape(input.shape[1], -1)
        mean = flat.mean(1)
        std = actnorm_init_std(type(self).__name__, mean, lambda: flat.std(1), flat.shape[1], "input", eps=1e-6)
        self.loc.data.copy_(-mean.view(1, -1, 1, 1))
        self.scale.data.copy_(1 / std.view(1, -1, 1, 1))

    def maybe_initialize(self, input: Tensor, reverse: bool) -> None:
        """Initialise from ``input`` on the first training call (the CompVis rule)."""
        if self.needs_init() and input.shape[0]:  # an empty batch has no statistics: the next one initialises
            if reverse and not self.allow_reverse_init:
                raise RuntimeError("Initializing ActNorm in reverse direction is disabled by default. "
                                   "Use allow_reverse_init=True to enable.")
            self.initialize(input if input.dim() == 4 else input[:, :, None, None])
            self._mark_initialized()

    def needs_init(self) -> bool:
        """CompVis' init rule: in training mode until the first initialisation."""
        return self.training and not self._is_initialized()

    def affine(self) -> tuple[Tensor, Tensor]:
        """(a, b) of shape (C,) with ``h = x * a + b``."""
        a = self.scale.reshape(-1)
        return a, a * self.loc.reshape(-1)

    def forward(self, input: Tensor, reverse: bool = False):
        if reverse:
            return self.reverse(input)
        squeeze = input.dim() == 2
        x = input[:, :, None, None] if squeeze else input
        self.maybe_initialize(x, reverse=False)
        h = self.scale * (x + self.loc)
        if squeeze:
            h = h.squeeze(-1).squeeze(-1)
        if not self.logdet:
            return h
        logdet = x.shape[2] * x.shape[3] * torch.sum(torch.log(torch.abs(self.scale)))
        return h, logdet * torch.ones(x.shape[0]).to(x)

    def reverse(self, output: Tensor) -> Tensor:
        self.maybe_initialize(output, reverse=True)
        squeeze = output.dim() == 2
        y = output[:, :, None, None] if squeeze else output
        h = y / self.scale - self.loc
        return h.squeeze(-1).squeeze(-1) if squeeze else h


class Shuffle(nn.Module):
    """Fixed random channel permutation (torch RNG); forward returns ``(x, 0)``, reverse ``x``.

    Args:
        in_channels: the channel count.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> shuffle = compvis.Shuffle(4)
        >>> x = torch.randn(2, 4, 1, 1)
        >>> torch.equal(shuffle(shuffle(x)[0], reverse=True), x)
        True
    """

    def __init__(self, in_channels: int, **kwargs):
        super().__init__()
        self.in_channels = in_channels
        idx = torch.randperm(in_channels)
        self.register_buffer("forward_shuffle_idx", idx)
        self.register_buffer("backward_shuffle_idx", torch.argsort(idx))

    def forward(self, x: Tensor, reverse: bool = False, conditioning=None):
        if not reverse:
            return x[:, self.forward_shuffle_idx, ...], 0
        return x[:, self.backward_shuffle_idx, ...]


class InvLeakyRelu(nn.Module):
    """Leaky ReLU with slope ``alpha``; like CompVis it reports log-det 0 unless
    ``exact_logdet`` (then :math:`\\log\\alpha` per negative input).

    Args:
        alpha: the slope for negative inputs.
        exact_logdet: report the true log-det.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> compvis.InvLeakyRelu(0.5)(torch.tensor([[-2.0, 2.0]]))[0].tolist()
        [[-1.0, 2.0]]
    """

    def __init__(self, alpha: float = 0.9, exact_logdet: bool = False):
        super().__init__()
        self.alpha = alpha
        self.exact_logdet = exact_logdet

    def _scaling(self, x: Tensor) -> Tensor:
        return (x >= 0).to(x) + (x < 0).to(x) * self.alpha

    def forward(self, input: Tensor, reverse: bool = False):
        if reverse:
            return self.reverse(input)
        if not self.exact_logdet:
            return input * self._scaling(input), 0.0
        negative = (input < 0).to(input).flatten(1).sum(1)
        return input * self._scaling(input), negative * torch.log(torch.as_tensor(self.alpha).to(input))

    def reverse(self, input: Tensor) -> Tensor:
        return input / self._scaling(input)


class IgnoreLeakyRelu(nn.Module):
    """Identity with the InvLeakyRelu interface.

    Args:
        alpha: ignored.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> compvis.IgnoreLeakyRelu()(torch.tensor([[-2.0]]))[0].tolist()
        [[-2.0]]
    """

    def __init__(self, alpha: float = 0.9):
        super().__init__()

    def forward(self, input: Tensor, reverse: bool = False):
        return input if reverse else (input, 0.0)

    def reverse(self, input: Tensor) -> Tensor:
        return input


def _flat(x: Tensor, name: str = "x") -> Tensor:
    if x.dim() != 4 or x.shape[2] != 1 or x.shape[3] != 1:
        raise ValueError(f"{name} must be a (B, D, 1, 1) latent, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], x.shape[1])


class _DoubleCoupling(nn.Module):
    """Two fused couplings with a half swap; ``s``/``t`` are ModuleLists of two nets each."""

    def _coefficients(self, i: int, u: Tensor, xc: Tensor | None) -> tuple[Tensor, Tensor]:
        inp = u if xc is None else torch.cat((u, xc), dim=1)
        return self.s[i](inp), self.t[i](inp)

    def couple(self, x: Tensor, xc: Tensor | None, reverse: bool,
               a: Tensor | None = None, b: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(B, D) -> (B, D) and log-det, an optional actnorm x*a + b folded into the first op."""
        D = x.shape[1]
        d1 = (D + 1) // 2
        if not reverse:
            u = x[:, :d1] if a is None else x[:, :d1] * a[:d1] + b[:d1]
            s, t = self._coefficients(0, u, xc)
            y, ld0 = coupling_forward(x, s, t, a, b, split=d1, scale="exp")
            y = torch.cat((y[:, d1:], y[:, :d1]), dim=1)
            s, t = self._coefficients(1, y[:, :d1], xc)
            out, ld1 = coupling_forward(y, s, t, split=d1, scale="exp")
            return out, ld0 + ld1
        s, t = self._coefficients(1, x[:, :d1], xc)
        w, ld1 = coupling_inverse(x, s, t, split=d1, scale="exp")
        w = torch.cat((w[:, D - d1:], w[:, : D - d1]), dim=1)
        s, t = self._coefficients(0, w[:, :d1], xc)
        out, ld0 = coupling_inverse(w, s, t, a, b, split=d1, scale="exp")
        return out, ld0 + ld1


class DoubleVectorCouplingBlock(_DoubleCoupling):
    """Unconditional double coupling on (B, D, 1, 1) latents (odd D supported).

    Args:
        in_channels: D.
        hidden_dim: the nets' width.
        hidden_depth: the nets' hidden layers.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> block = compvis.DoubleVectorCouplingBlock(5, 8)
        >>> x = torch.randn(2, 5, 1, 1)
        >>> h, logdet = block(x)
        >>> torch.allclose(block(h, reverse=True), x, atol=1e-5)
        True
    """

    def __init__(self, in_channels: int, hidden_dim: int, hidden_depth: int = 2):
        super().__init__()
        dim1 = (in_channels // 2) + (in_channels % 2)
        dim2 = in_channels // 2
        self.s = nn.ModuleList([BasicFullyConnectedNet(dim=dim1, out_dim=dim2, depth=hidden_depth,
                                                       hidden_dim=hidden_dim, use_tanh=True) for _ in range(2)])
        self.t = nn.ModuleList([BasicFullyConnectedNet(dim=dim1, out_dim=dim2, depth=hidden_depth,
                                                       hidden_dim=hidden_dim, use_tanh=False) for _ in range(2)])

    def forward(self, x: Tensor, reverse: bool = False):
        h, logdet = self.couple(_flat(x), None, reverse)
        return h[:, :, None, None] if reverse else (h[:, :, None, None], logdet)


class ConditionalDoubleVectorCouplingBlock(_DoubleCoupling):
    """Double coupling whose nets see ``cat(x_half, xc)``; ``xc`` is (B, cond_channels, 1, 1).

    Args:
        in_channels: D (even).
        cond_channels: the condition's channels.
        hidden_dim: the nets' width.
        depth: the nets' hidden layers.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> block = compvis.ConditionalDoubleVectorCouplingBlock(4, 2, 8)
        >>> x, xc = torch.randn(2, 4, 1, 1), torch.randn(2, 2, 1, 1)
        >>> torch.allclose(block(block(x, xc)[0], xc, reverse=True), x, atol=1e-5)
        True
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_dim: int, depth: int = 2):
        super().__init__()
        if in_channels % 2:
            raise ValueError(f"in_channels must be even for the conditional block, got {in_channels}")
        half = in_channels // 2
        self.s = nn.ModuleList([BasicFullyConnectedNet(dim=half + cond_channels, depth=depth, hidden_dim=hidden_dim,
                                                       use_tanh=True, out_dim=half) for _ in range(2)])
        self.t = nn.ModuleList([BasicFullyConnectedNet(dim=half + cond_channels, depth=depth, hidden_dim=hidden_dim,
                                                       use_tanh=False, out_dim=half) for _ in range(2)])

    def forward(self, x: Tensor, xc: Tensor, reverse: bool = False):
        h, logdet = self.couple(_flat(x), _flat(xc, "xc"), reverse)
        return h[:, :, None, None] if reverse else (h[:, :, None, None], logdet)


def _block_forward(norm: ActNorm, activation: nn.Module | None, coupling: _DoubleCoupling,
                   shuffle: Shuffle, x: Tensor, xc: Tensor | None):
    """ActNorm [-> activation] -> double coupling -> Shuffle; actnorm folded when nothing sits between."""
    if activation is None:
        norm.maybe_initialize(x, reverse=False)
        a, b = norm.affine()
        h, logdet = coupling.couple(_flat(x), xc, False, a, b)
    else:
        h, logdet = norm(x)
        h, ld = activation(h)
        h, ld_c = coupling.couple(_flat(h), xc, False)
        logdet = logdet + ld + ld_c
    return h[:, shuffle.forward_shuffle_idx, None, None], logdet


def _block_reverse(norm: ActNorm, activation: nn.Module | None, coupling: _DoubleCoupling,
                   shuffle: Shuffle, x: Tensor, xc: Tensor | None) -> Tensor:
    h = _flat(x)[:, shuffle.backward_shuffle_idx]
    if activation is None and not norm.needs_init():
        a, b = norm.affine()
        return coupling.couple(h, xc, True, a, b)[0][:, :, None, None]
    h = coupling.couple(h, xc, True)[0][:, :, None, None]
    if activation is not None:
        h = activation(h, reverse=True)
    return norm(h, reverse=True)


class UnconditionalFlatDoubleCouplingFlowBlock(nn.Module):
    """ActNorm (folded into the op), DoubleVectorCouplingBlock, Shuffle.

    Args:
        in_channels: D.
        hidden_dim, hidden_depth: the coupling nets' width and hidden layers.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> block = compvis.UnconditionalFlatDoubleCouplingFlowBlock(4, 8, 1)
        >>> h, logdet = block(torch.randn(16, 4, 1, 1))
        >>> h.shape, logdet.shape
        (torch.Size([16, 4, 1, 1]), torch.Size([16]))
    """

    def __init__(self, in_channels: int, hidden_dim: int, hidden_depth: int):
        super().__init__()
        self.norm_layer = ActNorm(in_channels, logdet=True)
        self.coupling = DoubleVectorCouplingBlock(in_channels, hidden_dim, hidden_depth)
        self.shuffle = Shuffle(in_channels)

    def forward(self, x: Tensor, reverse: bool = False):
        if reverse:
            return _block_reverse(self.norm_layer, None, self.coupling, self.shuffle, x, None)
        return _block_forward(self.norm_layer, None, self.coupling, self.shuffle, x, None)

    def reverse(self, out: Tensor) -> Tensor:
        return self.forward(out, reverse=True)


class ConditionalFlatDoubleCouplingFlowBlock(nn.Module):
    """ActNorm, InvLeakyRelu ('lrelu') or identity ('none'), conditional coupling, Shuffle.

    Args:
        in_channels: D (even).
        cond_channels: the condition's channels.
        hidden_dim, hidden_depth: the coupling nets' width and hidden layers.
        activation: ``"lrelu"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> block = compvis.ConditionalFlatDoubleCouplingFlowBlock(4, 2, 8, 1)
        >>> h, logdet = block(torch.randn(16, 4, 1, 1), torch.randn(16, 2, 1, 1))
        >>> h.shape
        torch.Size([16, 4, 1, 1])
    """

    def __init__(self, in_channels: int, cond_channels: int, hidden_dim: int, hidden_depth: int,
                 activation: str = "lrelu"):
        super().__init__()
        activations = {"lrelu": InvLeakyRelu, "none": IgnoreLeakyRelu}
        if activation not in activations:
            raise ValueError(f"activation must be one of {sorted(activations)}, got {activation!r}")
        self.norm_layer = ActNorm(in_channels, logdet=True)
        self.coupling = ConditionalDoubleVectorCouplingBlock(in_channels, cond_channels, hidden_dim, hidden_depth)
        self.activation = activations[activation]()
        self.shuffle = Shuffle(in_channels)

    def _activation(self) -> nn.Module | None:
        return None if isinstance(self.activation, IgnoreLeakyRelu) else self.activation

    def forward(self, x: Tensor, xcond: Tensor, reverse: bool = False):
        xc = _flat(xcond, "xcond")
        if reverse:
            return _block_reverse(self.norm_layer, self._activation(), self.coupling, self.shuffle, x, xc)
        return _block_forward(self.norm_layer, self._activation(), self.coupling, self.shuffle, x, xc)

    def reverse(self, out: Tensor, xcond: Tensor) -> Tensor:
        return self.forward(out, xcond, reverse=True)


class UnconditionalFlatCouplingFlow(nn.Module):
    """Flat flow: ``n_flows`` x (ActNorm, DoubleVectorCouplingBlock, Shuffle) on (B, D[, 1, 1]).

    Args:
        in_channels: D.
        n_flows: the number of blocks.
        hidden_dim, hidden_depth: the coupling nets' width and hidden layers.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> flow = compvis.UnconditionalFlatCouplingFlow(4, 2, 8, 1)
        >>> z, logdet = flow(torch.randn(16, 4))
        >>> z.shape, flow.sample(3).shape
        (torch.Size([16, 4, 1, 1]), torch.Size([3, 4, 1, 1]))
    """

    def __init__(self, in_channels: int, n_flows: int, hidden_dim: int, hidden_depth: int):
        super().__init__()
        self.in_channels = in_channels
        self.mid_channels = hidden_dim
        self.num_blocks = hidden_depth
        self.n_flows = n_flows
        self.sub_layers = nn.ModuleList(
            [UnconditionalFlatDoubleCouplingFlowBlock(in_channels, hidden_dim, hidden_depth) for _ in range(n_flows)])

    def forward(self, x: Tensor, reverse: bool = False):
        if x.dim() == 2:
            x = x[:, :, None, None]
        self.last_outs: list[Tensor] = []
        self.last_logdets: list[Tensor] = []
        if reverse:
            for i in reversed(range(self.n_flows)):
                x = self.sub_layers[i](x, reverse=True)
            return x
        logdet = 0.0
        for i in range(self.n_flows):
            x, logdet_ = self.sub_layers[i](x)
            logdet = logdet + logdet_
            self.last_outs.append(x)
            self.last_logdets.append(logdet)
        return x, logdet

    def reverse(self, out: Tensor) -> Tensor:
        return self(out[:, :, None, None] if out.dim() == 2 else out, reverse=True)

    def sample(self, num_samples: int, device="cpu") -> Tensor:
        return self.reverse(torch.randn(num_samples, self.in_channels, 1, 1).to(device))

    def get_last_layer(self) -> Tensor:
        return self.sub_layers[-1].coupling.t[-1].main[-1].weight


class ConditionalFlatCouplingFlow(nn.Module):
    """Flat conditional flow: an MLP embedder of the condition feeds every block.

    Args:
        in_channels: D (even).
        conditioning_dim: the condition's features.
        embedding_dim: the embedder's output features (each block's condition).
        hidden_dim, hidden_depth: the coupling nets' width and hidden layers.
        n_flows: the number of blocks.
        conditioning_option: ``"none"``, ``"parallel"`` or ``"sequential"`` (1x1 convs of the embedding).
        activation: ``"lrelu"`` or ``"none"``.
        conditioning_hidden_dim, conditioning_depth: the embedder's width and depth.
        conditioner_use_bn, conditioner_use_an: BatchNorm / ActNorm in the embedder.

    Example:
        >>> import torch
        >>> from flowkern.compat import compvis
        >>> flow = compvis.ConditionalFlatCouplingFlow(4, 3, 2, 8, 1, n_flows=2)
        >>> z, logdet = flow(torch.randn(16, 4, 1, 1), torch.randn(16, 3))
        >>> z.shape
        torch.Size([16, 4, 1, 1])
    """

    def __init__(self, in_channels: int, conditioning_dim: int, embedding_dim: int, hidden_dim: int,
                 hidden_depth: int, n_flows: int, conditioning_option: str = "none", activation: str = "lrelu",
                 conditioning_hidden_dim: int = 256, conditioning_depth: int = 2,
                 conditioner_use_bn: bool = False, conditioner_use_an: bool = False):
        super().__init__()
        if conditioning_option.lower() not in ("none", "parallel", "sequential"):
            raise ValueError(f"conditioning_option must be 'none', 'parallel' or 'sequential', "
                             f"got {conditioning_option!r}")
        self.in_channels = in_channels
        self.cond_channels = embedding_dim
        self.mid_channels = hidden_dim
        self.num_blocks = hidden_depth
        self.n_flows = n_flows
        self.conditioning_option = conditioning_option
        self.embedder = BasicFullyConnectedNet(dim=conditioning_dim, depth=conditioning_depth, out_dim=embedding_dim,
                                               hidden_dim=conditioning_hidden_dim, use_bn=conditioner_use_bn,
                                               use_an=conditioner_use_an)
        self.sub_layers = nn.ModuleList()
        if conditioning_option.lower() != "none":
            self.conditioning_layers = nn.ModuleList()
        for _ in range(n_flows):
            self.sub_layers.append(ConditionalFlatDoubleCouplingFlowBlock(
                in_channels, embedding_dim, hidden_dim, hidden_depth, activation=activation))
            if conditioning_option.lower() != "none":
                self.conditioning_layers.append(nn.Conv2d(embedding_dim, embedding_dim, 1))

    def _hconds(self, cond: Tensor) -> list[Tensor]:
        if cond.dim() == 4:
            if cond.shape[2] != 1 or cond.shape[3] != 1:
                raise ValueError("Spatial conditionings are not supported: cond must be (B, D) or (B, D, 1, 1)")
            cond = cond.squeeze(-1).squeeze(-1)
        embedding = self.embedder(cond.float())[:, :, None, None]
        option = self.conditioning_option.lower()
        hconds, hcond = [], embedding
        for i in range(self.n_flows):
            if option == "parallel":
                hcond = self.conditioning_layers[i](embedding)
            elif option == "sequential":
                hcond = self.conditioning_layers[i](hcond)
            hconds.append(hcond)
        return hconds

    def forward(self, x: Tensor, cond: Tensor, reverse: bool = False):
        hconds = self._hconds(cond)
        if reverse:
            for i in reversed(range(self.n_flows)):
                x = self.sub_layers[i](x, hconds[i], reverse=True)
            return x
        logdet = 0.0
        for i in range(self.n_flows):
            x, logdet_ = self.sub_layers[i](x, hconds[i])
            logdet = logdet + logdet_
        return x, logdet

    def reverse(self, out: Tensor, xcond: Tensor) -> Tensor:
        return self(out, xcond, reverse=True)

    def sample(self, xc: Tensor) -> Tensor:
        return self.reverse(torch.randn(xc.shape[0], self.in_channels, 1, 1).to(xc), xc)


# ---- convert(): CompVis's classes (no package: recognised by class name and attributes) --------
_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "ActNorm": ("loc", "scale", "initialized", "logdet"),
    "Shuffle": ("forward_shuffle_idx", "backward_shuffle_idx"),
    "InvLeakyRelu": ("alpha",),
    "IgnoreLeakyRelu": (),
    "BasicFullyConnectedNet": ("main",),
    "DoubleVectorCouplingBlock": ("s", "t"),
    "ConditionalDoubleVectorCouplingBlock": ("s", "t"),
    "UnconditionalFlatDoubleCouplingFlowBlock": ("norm_layer", "coupling", "shuffle"),
    "ConditionalFlatDoubleCouplingFlowBlock": ("norm_layer", "coupling", "activation", "shuffle"),
    "UnconditionalFlatCouplingFlow": ("sub_layers", "n_flows", "in_channels"),
    "ConditionalFlatCouplingFlow": ("sub_layers", "embedder", "n_flows", "conditioning_option"),
}
_DEFAULTS: dict[str, dict[str, object]] = {"ActNorm": {"allow_reverse_init": True}, "InvLeakyRelu": {"exact_logdet": False}}


def _converter(m: nn.Module):
    """convert()'s converter for a CompVis module (a class of that name with its attributes), or None."""
    name = type(m).__name__
    if type(m).__module__.split(".")[0] == "flowkern" or name not in _ATTRIBUTES:
        return None
    return _convert if all(hasattr(m, attr) for attr in _ATTRIBUTES[name]) else None


def _convert(m, *, convert_child, **kwargs):
    """The flowkern class keeps CompVis's attribute layout, so the (copied) module is
    re-classed in place and its children converted."""
    name = type(m).__name__
    for child_name, child in list(m._modules.items()):
        if child is not None:
            m._modules[child_name] = convert_child(child)
    for attr, value in _DEFAULTS.get(name, {}).items():
        if not hasattr(m, attr):
            setattr(m, attr, value)
    m.__class__ = globals()[name]
    if isinstance(m, ActNorm):
        m._sync_init_flag()
    return m
