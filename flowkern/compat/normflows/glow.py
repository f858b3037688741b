r"""normflows' Glow: ``GlowBlock``, ``Squeeze`` and ``MultiscaleFlow`` (see
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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.base import zero_logdet
from ...nn.coupling import AffineCoupling as _OpCoupling
from ...nn.flow import standard_normal_log_prob
from ...nn.graph import InvertibleProgram, ModuleNode, Node, run_program
from ...nn.image import GlowStep, channels_last_call
from ...nn.squeeze import Squeeze as _Squeeze2x2
from ...nn.squeeze import squeeze2x2, unsqueeze2x2
from ...spec import acc_dtype
from .._peer import RankError, ShapeError
from ..convert import builtin_converter
from .flows import SCALE_MAPS, ActNorm, AffineCouplingBlock, Flow, Invertible1x1Conv, _StateFile

__all__ = ["GlowBlock", "Squeeze", "MultiscaleFlow"]


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
        super().__init__(channels, coupling.param_map, scale="sigmoid" if coupling.scale_map == "sigmoid_inv" else "exp",
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

    @classmethod
    def from_flows(cls, flows: Sequence[nn.Module]) -> "GlowBlock":
        """A block around already built (converted) children."""
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block.flows = nn.ModuleList(flows)
        return block

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
        convolution and a per-channel actnorm."""
        if len(self.flows) != 3:
            return False
        block, conv, norm = self.flows
        return (isinstance(block, AffineCouplingBlock) and block.fusable and block.flows[1].scale_map in SCALE_MAPS
                and isinstance(conv, Invertible1x1Conv) and isinstance(norm, ActNorm) and norm.s.dim() == 4
                and norm.per_channel() and norm.s.shape[1] == conv.num_channels)

    def extra_repr(self) -> str:
        return ""  # normflows' repr: the children only

    @property
    def channels(self) -> int:
        return self.flows[-1].s.shape[1]

    @property
    def actnorm(self) -> ActNorm:
        return self.flows[2]

    @property
    def invconv(self) -> Invertible1x1Conv:
        return self.flows[1]

    @property
    def coupling(self) -> _NormalizingCoupling:
        return _NormalizingCoupling(self.flows[0], self.channels)

    def folded(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """W' = W diag(e^{-s}), b' = -W (t e^{-s}) of the normalising direction in ``like``'s dtype,
        and its per-position log-det -sum s + log|det W|."""
        _, conv, norm = self.flows
        a = torch.exp(-norm.s).reshape(-1)
        W, ld_w = conv.weight_and_logdet()
        W = W.to(like.dtype)
        acc = acc_dtype(like.dtype)
        return W * a.to(like.dtype), W @ (-norm.t.reshape(-1) * a).to(like.dtype), -norm.s.to(acc).sum() + ld_w.to(acc)


class _NFNode(Node):
    """A normflows flow (``forward``: z -> x) in the normalising direction: ``run`` is its
    ``inverse``; several inputs / outputs are passed as lists (``Merge``)."""

    def __init__(self, flow: nn.Module, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.flow = flow

    def modules(self):
        return (self.flow,)

    @staticmethod
    def _pack(vs):
        return vs[0] if len(vs) == 1 else list(vs)

    @staticmethod
    def _unpack(v):
        return list(v) if isinstance(v, (list, tuple)) else [v]

    def run(self, xs, conds):
        out, ld = self.flow.inverse(self._pack(xs))
        return self._unpack(out), ld

    def invert(self, ys, conds):
        out, ld = self.flow(self._pack(ys))
        return self._unpack(out), ld


class _GlowBlockNode(_NFNode):
    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        if not self.flow.fusable:
            return super().invert_and_backprop(ys, conds, grad_ys, grad_logdet, grads)
        x, g_x, _ = self.flow.invert_and_backprop(ys[0], None, grad_ys[0], grad_logdet, grads)
        return [x], [g_x], [None] * len(conds)


def _nf_node(flow: nn.Module, inputs, outputs) -> Node:
    if isinstance(flow, GlowBlock):
        return _GlowBlockNode(flow, inputs, outputs)
    if isinstance(flow, Squeeze):
        return ModuleNode(_PeerSqueeze(), inputs, outputs)
    return _NFNode(flow, inputs, outputs)


class _GaussianBaseNode(Node):
    r"""A normflows Gaussian base as the standardisation :math:`\varepsilon = (z - \mu) e^{-\log\sigma}`
    (log-det :math:`-\sum\log\sigma`), its parameters read from the user's base module (temperature
    included); the class labels or one-hot vectors are the program's condition."""

    _KINDS = {"DiagGaussian": ("loc", "log_scale"), "ClassCondDiagGaussian": ("loc", "log_scale", "num_classes"),
              "GlowBase": ("loc", "loc_logs", "log_scale", "log_scale_logs", "logscale_factor")}

    def __init__(self, base: nn.Module, class_cond: bool, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.base, self.class_cond = base, class_cond

    @classmethod
    def supports(cls, base: nn.Module) -> bool:
        attrs = cls._KINDS.get(type(base).__name__)
        return (attrs is not None and type(base).__module__.split(".")[0] == "normflows"
                and all(hasattr(base, a) for a in attrs))

    def modules(self):
        return (self.base,)

    def _one_hot(self, y: Tensor, num_classes: int, like: Tensor) -> Tensor:
        if y.dim() == 1:
            return F.one_hot(y.long(), num_classes).to(like.dtype)
        return y.to(like.dtype)

    def mean_log_std(self, z: Tensor, conds) -> tuple[Tensor, Tensor]:
        q, kind = self.base, type(self.base).__name__
        y = conds[0] if conds else None
        if kind == "DiagGaussian":
            mean, log_std = q.loc, q.log_scale
        elif kind == "ClassCondDiagGaussian":
            if y is None:
                raise ValueError("y (the classes) is required by the class-conditional base ClassCondDiagGaussian")
            oh = self._one_hot(y, q.num_classes, q.loc)
            mean = (oh @ q.loc.reshape(-1, q.num_classes).T).reshape(z.shape)
            log_std = (oh @ q.log_scale.reshape(-1, q.num_classes).T).reshape(z.shape)
        else:  # GlowBase: per-channel parameters, optionally class-conditional
            mean = q.loc * torch.exp(q.loc_logs * q.logscale_factor)
            log_std = q.log_scale * torch.exp(q.log_scale_logs * q.logscale_factor)
            if q.class_cond:
                if y is None:
                    raise ValueError("y (the classes) is required by the class-conditional base GlowBase")
                oh = self._one_hot(y, q.num_classes, q.loc)
                view = (z.shape[0], q.shape[0], *([1] * (z.dim() - 2)))
                mean = mean + (oh @ q.loc_cc).reshape(view)
                log_std = log_std + (oh @ q.log_scale_cc).reshape(view)
        if getattr(q, "temperature", None) is not None:
            log_std = log_std + math.log(q.temperature)
        return mean.to(z.dtype), log_std.to(z.dtype)

    @staticmethod
    def _logdet(log_std: Tensor, z: Tensor) -> Tensor:
        ls = log_std.to(acc_dtype(z.dtype))
        if ls.shape[0] == 1:
            return (ls.sum() * (math.prod(z.shape[1:]) // math.prod(ls.shape[1:]))).expand(z.shape[0])
        return ls.expand(z.shape).flatten(1).sum(1)

    def run(self, xs, conds):
        mean, log_std = self.mean_log_std(xs[0], conds)
        return [(xs[0] - mean) * torch.exp(-log_std)], -self._logdet(log_std, xs[0])

    def invert(self, ys, conds):
        mean, log_std = self.mean_log_std(ys[0], conds)
        return [torch.addcmul(mean, ys[0], torch.exp(log_std))], self._logdet(log_std, ys[0])


class MultiscaleFlow(_StateFile, nn.Module):
    """normflows' ``MultiscaleFlow`` (same constructor, methods and ``state_dict`` keys) on an
    invertible program; ``memory_saving=True`` saves only the latents for backward in
    :meth:`log_prob` / :meth:`inverse_and_log_det` (and so in ``forward_kld``).

    Args:
        q0: the base distribution of each level's latent.
        flows: each level's flows (z -> x order), level 0 the coarsest.
        merges: the :class:`~flowkern.compat.normflows.Merge` joining each level > 0 with its latent.
        transform: a last flow on x (e.g. a logit transform), or None.
        class_cond: the bases take class labels ``y``.
        memory_saving: save only the latents for backward in the normalising direction.
        memory_saving_chunk: with ``memory_saving``, run on batch chunks of this many samples
            (:func:`flowkern.nn.graph.run_program`'s ``chunk``).

    Example:
        >>> import torch, normflows
        >>> from flowkern.compat.normflows import GlowBlock, MultiscaleFlow, Squeeze
        >>> flow = MultiscaleFlow([normflows.distributions.DiagGaussian((12, 2, 2))], [[GlowBlock(12, 8), Squeeze()]],
        ...                       [], class_cond=False, memory_saving=True)
        >>> flow.log_prob(torch.rand(2, 3, 4, 4)).shape
        torch.Size([2])
    """

    def __init__(self, q0, flows, merges, transform=None, class_cond=True, memory_saving: bool = False,
                 memory_saving_chunk: int | None = None):
        super().__init__()
        self.q0 = nn.ModuleList(q0)
        self.num_levels = len(self.q0)
        self.flows = torch.nn.ModuleList([nn.ModuleList(flow) for flow in flows])
        self.merges = torch.nn.ModuleList(merges)
        self.transform = transform
        self.class_cond = class_cond
        self.memory_saving = bool(memory_saving)
        self.memory_saving_chunk = memory_saving_chunk  # see flowkern.nn.MultiScaleFlow

    def program(self) -> InvertibleProgram:
        """The normalising direction x -> [z_0, ..., z_{L-1}] as a program (slot 0 is x)."""
        nodes: list[Node] = []
        cur, nxt = 0, 1
        if self.transform is not None:
            nodes.append(_NFNode(self.transform, (cur,), (nxt,)))
            cur, nxt = nxt, nxt + 1
        latents: dict[int, int] = {}
        for i in range(len(self.q0) - 1, -1, -1):
            for flow in reversed(self.flows[i]):
                nodes.append(_nf_node(flow, (cur,), (nxt,)))
                cur, nxt = nxt, nxt + 1
            if i > 0:
                nodes.append(_NFNode(self.merges[i - 1], (cur,), (nxt, nxt + 1)))
                latents[i] = nxt + 1
                cur, nxt = nxt, nxt + 2
            else:
                latents[0] = cur
        return InvertibleProgram(nodes, (0,), [latents[i] for i in range(len(self.q0))])

    def forward_kld(self, x, y=None):
        return -torch.mean(self.log_prob(x, y))

    def forward(self, x, y=None):
        return -self.log_prob(x, y)

    def forward_and_log_det(self, z):
        xs, log_det = self.program().invert(list(z))
        return xs[0], log_det

    def inverse_and_log_det(self, x):
        return run_program(self.program(), [x], (), self.memory_saving, self.memory_saving_chunk)

    def log_prob(self, x, y=None):
        """log q(x): with normflows' Gaussian bases (``DiagGaussian``, ``ClassCondDiagGaussian``,
        ``GlowBase``) each latent is standardised inside the program (so memory saving keeps only
        the standardised latents); other bases score the latents with their own ``log_prob``."""
        program = self.program()
        if all(_GaussianBaseNode.supports(q) for q in self.q0):
            nodes = list(program.nodes)
            outs, nxt = [], 1 + max(max(n.outputs) for n in nodes) if nodes else 1
            for q, slot in zip(self.q0, program.outputs):
                nodes.append(_GaussianBaseNode(q, self.class_cond, (slot,), (nxt,)))
                outs.append(nxt)
                nxt += 1
            conds = (y,) if self.class_cond and y is not None else ()
            eps, log_q = run_program(InvertibleProgram(nodes, program.inputs, outs), [x], conds, self.memory_saving,
                                     self.memory_saving_chunk)
            for e in eps:
                log_q = log_q + standard_normal_log_prob(e)
            return log_q
        z, log_q = run_program(program, [x], (), self.memory_saving, self.memory_saving_chunk)
        for i, z_i in enumerate(z):
            log_q = log_q + (self.q0[i].log_prob(z_i, y) if self.class_cond else self.q0[i].log_prob(z_i))
        return log_q

    def sample(self, num_samples=1, y=None, temperature=None):
        if temperature is not None:
            self.set_temperature(temperature)
        z, log_q = [], 0
        for q in self.q0:
            z_, log_q_ = q(num_samples, y) if self.class_cond else q(num_samples)
            z.append(z_)
            log_q = log_q + log_q_
        x, log_det = self.forward_and_log_det(z)
        if temperature is not None:
            self.reset_temperature()
        return x, log_q - log_det

    def set_temperature(self, temperature):
        for q0 in self.q0:
            if hasattr(q0, "temperature"):
                q0.temperature = temperature
            else:
                raise NotImplementedError("One base function does not support temperature annealed sampling")

    def reset_temperature(self):
        self.set_temperature(None)


@builtin_converter("normflows.MultiscaleFlow")
def _convert_multiscale(m, *, convert_child, memory_saving: bool = False, memory_saving_chunk: int | None = None,
                           **kwargs):
    flows = [[convert_child(f) for f in level] for level in m.flows]
    merges = [convert_child(g) for g in m.merges]
    q0 = [convert_child(q) for q in m.q0]
    transform = None if m.transform is None else convert_child(m.transform)
    new = MultiscaleFlow(q0, flows, merges, transform, m.class_cond, memory_saving=memory_saving,
                         memory_saving_chunk=memory_saving_chunk)
    return new.train(m.training)


@builtin_converter("normflows.flows.GlowBlock")
def _convert_glow_block(m, *, convert_child, **kwargs):
    return GlowBlock.from_flows([convert_child(f) for f in m.flows]).train(m.training)


@builtin_converter("normflows.flows.Squeeze")
def _convert_squeeze(m, *, convert_child, **kwargs):
    return Squeeze().train(m.training)
