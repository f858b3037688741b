r"""Peers' multi-scale image flows on flowkern: normflows' ``MultiscaleFlow`` (Glow), nflows'
``MultiscaleCompositeTransform`` and FrEIA's ``GraphINN``, with the O(1)-memory backward.

:func:`flowkern.compat.convert` turns these models into the classes here (registered with
:func:`~flowkern.compat.register_converter` when this module is imported): same names, call
signatures, return conventions and ``state_dict`` keys as the peer's, the children converted to
flowkern's adapters, and the network run as an :class:`~flowkern.nn.graph.InvertibleProgram`
in the normalising direction. With ``memory_saving=True`` (an argument of the converters, or the
attribute of the converted model) the training direction saves only the latents for backward:
the user's Glow trains in constant activation memory without a changed line.

* normflows (Glow, ``examples/glow.ipynb``): :class:`MultiscaleFlow`, :class:`GlowBlock`,
  :class:`Squeeze`; ``Merge`` and the coupling, 1x1 conv and actnorm children are
  :mod:`flowkern.compat.normflows`' adapters; the Gaussian bases stay the user's modules and
  score the latents. A Glow block in the normalising direction (actnorm, 1x1 conv, coupling, as
  normflows' ``inverse``) runs as one 1x1 convolution (the actnorm folded into the weight) and one
  fused op call; its memory-saving step evaluates the subnet once.
* nflows: :class:`MultiscaleCompositeTransform`, :class:`SqueezeTransform` (the rest of the
  transforms through :mod:`flowkern.compat.nflows` or as they are).
* FrEIA: :class:`GraphINN` (any graph: split, concat, several outputs, conditions),
  :class:`IRevNetDownsampling`, :class:`HaarDownsampling`, :class:`Split`, :class:`Concat`,
  :class:`Flatten`; couplings through :mod:`flowkern.compat.freia`.

This module imports no peer: peers are matched by dotted class name, and the peer-specific
adapters are imported when a model is converted. Its classes subclass ``nn.Module`` (not the
peers' base classes).

References: Kingma & Dhariwal 2018 (Glow); Dinh et al. 2017 (RealNVP); normflows
(Stimper et al. 2023), nflows (Durkan et al. 2020), FrEIA (Ardizzone et al. 2018-2022).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.base import ParamGrads, backprop_block
from ..nn.graph import InvertibleProgram, ModuleNode, Node, run_program
from ..nn.image import autocast_off, backprop_folded_conv, channels_last_call, conv1x1
from ..nn.squeeze import Squeeze as _Squeeze2x2
from ..nn.squeeze import squeeze2x2, unsqueeze2x2
from ..ops import coupling_forward, coupling_inverse
from ..spec import acc_dtype
from ._fused import params_dtype_device
from ._peer import NodeError, PeerError, RankError, ShapeError
from .convert import register_converter

__all__ = [
    "MultiscaleFlow",
    "GlowBlock",
    "Squeeze",
    "MultiscaleCompositeTransform",
    "SqueezeTransform",
    "GraphINN",
    "IRevNetDownsampling",
    "HaarDownsampling",
    "Split",
    "Concat",
    "Flatten",
]


def _adapter(peer: str):
    return importlib.import_module(f"{__package__}.{peer}")



class _PermutationNode(Node):
    """A node with no parameters and no log-det whose inverse is cheap: the memory-saving step
    applies the inverse to the outputs and to their grads (no re-run)."""

    def __init__(self, forward_fn, inverse_fn, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.forward_fn, self.inverse_fn = forward_fn, inverse_fn

    def run(self, xs, conds):
        return list(self.forward_fn(xs)), None

    def invert(self, ys, conds):
        return list(self.inverse_fn(ys)), None

    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        return list(self.inverse_fn(ys)), list(self.inverse_fn(grad_ys)), [None] * len(conds)


# =================================================================================================
# normflows
# =================================================================================================
class Squeeze(nn.Module):
    """normflows' ``Squeeze``: ``forward`` (z -> x) is depth-to-space, (B, 4C, H, W) -> (B, C, 2H, 2W);
    ``inverse`` is space-to-depth in Glow's channel order (:class:`flowkern.nn.Squeeze`)."""

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


class _ConvNet2d(nn.Module):
    """normflows' ``nets.ConvNet2d`` (same ``state_dict`` keys): conv layers with LeakyReLU,
    optional actnorm after each hidden conv, the last layer zero-initialised."""

    def __init__(self, channels, kernel_size, leaky=0.0, init_zeros=True, actnorm=False, weight_std=None):
        super().__init__()
        nf = _adapter("normflows")
        layers: list[nn.Module] = []
        for i in range(len(kernel_size) - 1):
            conv = nn.Conv2d(channels[i], channels[i + 1], kernel_size[i], padding=kernel_size[i] // 2,
                             bias=not actnorm)
            if weight_std is not None:
                conv.weight.data.normal_(mean=0.0, std=weight_std)
            layers.append(conv)
            if actnorm:
                layers.append(_NetActNorm(nf.ActNorm((channels[i + 1], 1, 1))))
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


_SIGMOID_SHIFT = 2.0  # normflows' sigmoid scale maps use sigmoid(u + 2)


class GlowBlock(nn.Module):
    r"""normflows' ``GlowBlock`` (same constructor and ``state_dict`` keys): ``flows`` =
    [AffineCouplingBlock, Invertible1x1Conv, ActNorm], ``forward`` z -> x, ``inverse`` x -> z.

    In the normalising direction (``inverse``) the actnorm :math:`(x - t) e^{-s}` and the 1x1
    convolution W are one convolution with weight :math:`W\,\mathrm{diag}(e^{-s})` and bias
    :math:`-W(t e^{-s})`, and the coupling :math:`y_2 = (x_2 - \text{shift})\,\sigma(u + 2)` one
    fused op call (the op's inverse with :math:`s = -\log\sigma(u + 2)`, t = shift); blocks the
    fused path does not cover (checkerboard split, no scale, one channel) run their children.
    """

    def __init__(self, channels, hidden_channels, scale=True, scale_map="sigmoid", split_mode="channel", leaky=0.0,
                 init_zeros=True, use_lu=True, net_actnorm=False):
        super().__init__()
        nf = _adapter("normflows")
        num_param = 2 if scale else 1
        if split_mode == "channel":
            sizes = ((channels + 1) // 2, hidden_channels, hidden_channels, num_param * (channels // 2))
        elif split_mode == "channel_inv":
            sizes = (channels // 2, hidden_channels, hidden_channels, num_param * ((channels + 1) // 2))
        elif "checkerboard" in split_mode:
            sizes = (channels, hidden_channels, hidden_channels, num_param * channels)
        else:
            raise NotImplementedError("Mode " + split_mode + " is not implemented.")
        param_map = _ConvNet2d(sizes, (3, 1, 3), leaky, init_zeros, actnorm=net_actnorm)
        flows: list[nn.Module] = [nf.AffineCouplingBlock(param_map, scale, scale_map, split_mode)]
        if channels > 1:
            flows.append(nf.Invertible1x1Conv(channels, use_lu))
        flows.append(nf.ActNorm((channels, 1, 1)))
        self.flows = nn.ModuleList(flows)

    @classmethod
    def from_flows(cls, flows: Sequence[nn.Module]) -> "GlowBlock":
        """A block around already built (converted) children."""
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        block.flows = nn.ModuleList(flows)
        return block

    # ---- normflows API ----------------------------------------------------------------------
    def forward(self, z):
        if self.fusable():
            return self.denormalize(z)
        log_det_tot = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for flow in self.flows:
            z, log_det = flow(z)
            log_det_tot = log_det_tot + log_det
        return z, log_det_tot

    def inverse(self, z):
        if self.fusable():
            return self.normalize(z)
        log_det_tot = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for flow in reversed(self.flows):
            z, log_det = flow.inverse(z)
            log_det_tot = log_det_tot + log_det
        return z, log_det_tot

    # ---- the fused path ---------------------------------------------------------------------
    def fusable(self) -> bool:
        """Whether the block runs as folded conv + fused op: a channel-split coupling with scale,
        a 1x1 conv and a per-channel actnorm."""
        key = tuple(id(f) for f in self.flows)
        cached = self.__dict__.get("_fusable_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        ok = self._check_fusable()
        self.__dict__["_fusable_cache"] = (key, ok)
        return ok

    def _check_fusable(self) -> bool:
        if len(self.flows) != 3:
            return False
        block, conv, norm = self.flows
        split = getattr(block, "flows", [None])[0]
        coupling = getattr(block, "flows", [None, None])[1]
        return (getattr(split, "mode", None) in ("channel", "channel_inv") and getattr(coupling, "scale", False)
                and getattr(coupling, "scale_map", None) in ("exp", "sigmoid", "sigmoid_inv")
                and hasattr(conv, "num_channels") and hasattr(norm, "s") and norm.s.dim() == 4
                and norm.s.numel() == norm.s.shape[1] == conv.num_channels)

    def _ensure_init(self, x: Tensor) -> None:
        norm = self.flows[2]
        done = norm.initialized() if hasattr(norm, "initialized") else bool(norm.data_dep_init_done > 0)
        if not done:  # normflows initialises the actnorm on its first call, here the inverse
            norm.inverse(x)

    def folded(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """W' = W diag(e^{-s}), b' = -W (t e^{-s}) of the normalising direction, and its
        per-position log-det -sum s + log|det W|."""
        _, conv, norm = self.flows
        a = torch.exp(-norm.s).reshape(-1)
        b = -norm.t.reshape(-1) * a
        acc = acc_dtype(like.dtype)
        if conv.use_lu:  # W = P L U, as normflows' _assemble_W, with cached triangular masks
            lower, upper = self._masks(conv.num_channels, conv.L)
            U = conv.U * upper + torch.diag(conv.sign_S * torch.exp(conv.log_S))
            W = conv.P @ (conv.L * lower + conv.eye) @ U
            ld_w = conv.log_S.to(acc).sum()
        else:
            W = conv.W
            ld_w = torch.slogdet(conv.W.to(acc))[1]
        W = W.to(like.dtype)
        return W * a.to(like.dtype), W @ b.to(like.dtype), -norm.s.to(acc).sum() + ld_w

    def _masks(self, n: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Strictly lower / strictly upper triangular 0-1 masks (cached per size, dtype, device)."""
        cache = self.__dict__.setdefault("_mask_cache", {})
        key = (n, like.dtype, like.device)
        if key not in cache:
            ones = torch.ones(n, n, dtype=like.dtype, device=like.device)
            cache[key] = (torch.tril(ones, -1), torch.triu(ones, 1))
        return cache[key]

    def _split(self, channels: int) -> tuple[int, str]:
        return (channels + 1) // 2, "first" if self.flows[0].flows[0].mode == "channel" else "second"

    def _coupling_args(self, u_p: Tensor) -> tuple[Tensor, Tensor, dict]:
        """(s_raw, t, op kwargs) of the normalising coupling as the op's *inverse*."""
        coupling = self.flows[0].flows[1]
        param = channels_last_call(coupling.param_map, u_p)
        if param.dtype != u_p.dtype:  # autocast ran the subnet in lower precision
            param = param.to(u_p.dtype)
        shift, scale_ = param[:, 0::2], param[:, 1::2]
        if coupling.scale_map == "exp":
            return scale_, shift, dict(scale="exp")
        if coupling.scale_map == "sigmoid":
            return -F.logsigmoid(scale_ + _SIGMOID_SHIFT), shift, dict(scale="exp")
        return scale_, shift, dict(scale="sigmoid")

    @staticmethod
    def _part(v: Tensor, split: int, passive: str) -> Tensor:
        return v[:, :split] if passive == "first" else v[:, split:]

    def normalize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x -> z (normflows' ``inverse``) and its log-det, as folded conv + one op call."""
        self._ensure_init(x)
        with autocast_off(x):
            w, b, ld = self.folded(x)
            u = conv1x1(x, w, b)
        split, passive = self._split(x.shape[1])
        s_raw, t, kw = self._coupling_args(self._part(u, split, passive))
        y, ld_c = coupling_inverse(u, s_raw, t, split=split, passive=passive, **kw)
        return y, ld_c + math.prod(x.shape[2:]) * ld

    def denormalize(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """z -> x (normflows' ``forward``): the op's forward, then the folded conv's inverse."""
        split, passive = self._split(y.shape[1])
        s_raw, t, kw = self._coupling_args(self._part(y, split, passive))
        u, ld_c = coupling_forward(y, s_raw, t, split=split, passive=passive, **kw)
        self._ensure_init(u)
        with autocast_off(u):
            w, b, ld = self.folded(u)
            x = conv1x1(u - b.reshape(1, -1, 1, 1), torch.linalg.inv(w.double()).to(w.dtype))
        return x, ld_c - math.prod(y.shape[2:]) * ld

    def invert_and_backprop(self, y: Tensor, grad_y: Tensor, grad_logdet: Tensor, grads: ParamGrads
                            ) -> tuple[Tensor, Tensor]:
        """Memory-saving step of the normalising direction: one subnet evaluation serves the
        rebuild of u and the re-run of the op; the folded conv in closed form."""
        split, passive = self._split(y.shape[1])
        with torch.enable_grad():
            u_p = self._part(y, split, passive).detach().requires_grad_(True)
            s_raw, t, kw = self._coupling_args(u_p)
        with torch.no_grad():
            u, _ = coupling_forward(y, s_raw.detach(), t.detach(), split=split, passive=passive, **kw)
        with torch.enable_grad():  # the op re-run on u itself; the subnet's grad joins on its passive part
            u_leaf = u.detach().requires_grad_(True)
            out, ld_c = coupling_inverse(u_leaf, s_raw, t, split=split, passive=passive, **kw)
            (grad_u, g_p), _ = backprop_block(self.flows[0], (out, ld_c), (grad_y, grad_logdet), (u_leaf, u_p), None,
                                              grads)
        self._part(grad_u, split, passive).add_(g_p)
        with torch.enable_grad(), autocast_off(u):
            w, b, ld = self.folded(u)
        x, grad_x = backprop_folded_conv(u, grad_u, grad_logdet, w, b, ld, (self.flows[1], self.flows[2]), grads)
        return x, grad_x


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
        if not self.flow.fusable():
            return super().invert_and_backprop(ys, conds, grad_ys, grad_logdet, grads)
        x, g_x = self.flow.invert_and_backprop(ys[0], grad_ys[0], grad_logdet, grads)
        return [x], [g_x], [None] * len(conds)


def _nf_node(flow: nn.Module, inputs, outputs) -> Node:
    if isinstance(flow, GlowBlock):
        return _GlowBlockNode(flow, inputs, outputs)
    if isinstance(flow, Squeeze):
        return ModuleNode(_PeerSqueeze(), inputs, outputs)
    return _NFNode(flow, inputs, outputs)


def _standard_normal_log_prob(e: Tensor) -> Tensor:
    ee = e.flatten(1)
    return -0.5 * (ee * ee).sum(1) - 0.5 * ee.shape[1] * math.log(2 * math.pi)


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


class MultiscaleFlow(nn.Module):
    """normflows' ``MultiscaleFlow`` (same constructor, methods and ``state_dict`` keys) on an
    invertible program; ``memory_saving=True`` saves only the latents for backward in
    :meth:`log_prob` / :meth:`inverse_and_log_det` (and so in ``forward_kld``)."""

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
                log_q = log_q + _standard_normal_log_prob(e)
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

    def save(self, path):
        torch.save(self.state_dict(), path)

    def load(self, path):
        self.load_state_dict(torch.load(path))

    def set_temperature(self, temperature):
        for q0 in self.q0:
            if hasattr(q0, "temperature"):
                q0.temperature = temperature
            else:
                raise NotImplementedError("One base function does not support temperature annealed sampling")

    def reset_temperature(self):
        self.set_temperature(None)


def _convert_nf_multiscale(m, *, convert_child, memory_saving: bool = False, memory_saving_chunk: int | None = None,
                           **kwargs):
    flows = [[convert_child(f) for f in level] for level in m.flows]
    merges = [convert_child(g) for g in m.merges]
    q0 = [convert_child(q) for q in m.q0]
    transform = None if m.transform is None else convert_child(m.transform)
    new = MultiscaleFlow(q0, flows, merges, transform, m.class_cond, memory_saving=memory_saving,
                         memory_saving_chunk=memory_saving_chunk)
    return new.train(m.training)


def _relu_for_zero_leak(net: nn.Module) -> None:
    """``LeakyReLU(0.0)`` (normflows' ConvNet2d default) is ReLU: swap it in, in place after a
    convolution (whose backward does not need its output); same numbers, fewer passes."""
    for seq in net.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i, layer in enumerate(list(seq)):
            if type(layer) is nn.LeakyReLU and layer.negative_slope == 0.0:
                seq[i] = nn.ReLU(inplace=i > 0 and type(seq[i - 1]) is nn.Conv2d)


def _convert_nf_glow_block(m, *, convert_child, **kwargs):
    block = GlowBlock.from_flows([convert_child(f) for f in m.flows]).train(m.training)
    coupling = getattr(block.flows[0], "flows", [None, None])[1]
    if isinstance(getattr(coupling, "param_map", None), nn.Module):
        _relu_for_zero_leak(coupling.param_map)
    return block


def _convert_nf_squeeze(m, *, convert_child, **kwargs):
    return Squeeze().train(m.training)


# =================================================================================================
# nflows
# =================================================================================================
class SqueezeTransform(nn.Module):
    """nflows' ``SqueezeTransform`` (forward: space-to-depth, channel c f^2 + f i + j)."""

    def __init__(self, factor: int = 2):
        super().__init__()
        if isinstance(factor, bool) or not isinstance(factor, int) or factor <= 1:
            raise ValueError("Factor must be an integer > 1.")
        self.factor = factor

    def get_output_shape(self, c, h, w):
        return (c * self.factor * self.factor, h // self.factor, w // self.factor)

    def forward(self, inputs, context=None):
        if inputs.dim() != 4:
            raise ValueError("Expecting inputs with 4 dimensions")
        B, c, h, w = inputs.shape
        f = self.factor
        if h % f != 0 or w % f != 0:
            raise ValueError(f"Input image size not compatible with the factor: inputs have shape {tuple(inputs.shape)}, "
                             f"factor {f}")
        if f == 2:
            out = squeeze2x2(inputs, "glow")
        else:
            out = inputs.reshape(B, c, h // f, f, w // f, f).permute(0, 1, 3, 5, 2, 4).reshape(B, c * f * f, h // f,
                                                                                                 w // f)
        return out, inputs.new_zeros(B)

    def inverse(self, inputs, context=None):
        if inputs.dim() != 4:
            raise ValueError("Expecting inputs with 4 dimensions")
        B, c, h, w = inputs.shape
        f = self.factor
        if c < f * f or c % (f * f) != 0:
            raise ValueError(f"Invalid number of channel dimensions: inputs have shape {tuple(inputs.shape)}")
        if f == 2:
            out = unsqueeze2x2(inputs, "glow")
        else:
            out = inputs.reshape(B, c // f ** 2, f, f, h, w).permute(0, 1, 4, 2, 5, 3).reshape(B, c // f ** 2, h * f,
                                                                                                  w * f)
        return out, inputs.new_zeros(B)


class _NflowsNode(Node):
    """An nflows transform (forward: x -> z, ``context`` keyword) as a node."""

    def __init__(self, transform: nn.Module, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.transform = transform

    def modules(self):
        return (self.transform,)

    def run(self, xs, conds):
        y, ld = self.transform(xs[0], context=conds[0] if conds else None)
        return [y], ld

    def invert(self, ys, conds):
        x, ld = self.transform.inverse(ys[0], context=conds[0] if conds else None)
        return [x], ld


def _nflows_nodes(transform: nn.Module, cur: int, nxt: int) -> tuple[list[Node], int, int]:
    """Nodes of one nflows transform (composites flattened, so each layer is its own step)."""
    if type(transform).__name__ == "CompositeTransform" and hasattr(transform, "_transforms"):
        nodes: list[Node] = []
        for t in transform._transforms:
            more, cur, nxt = _nflows_nodes(t, cur, nxt)
            nodes += more
        return nodes, cur, nxt
    if isinstance(transform, SqueezeTransform) and transform.factor == 2:
        return [ModuleNode(_Squeeze2x2("glow"), (cur,), (nxt,))], nxt, nxt + 1
    return [_NflowsNode(transform, (cur,), (nxt,))], nxt, nxt + 1


class MultiscaleCompositeTransform(nn.Module):
    """nflows' ``MultiscaleCompositeTransform`` (same API and ``state_dict`` keys): after every
    transform but the last, the first half along ``split_dim`` leaves as output and the second
    half goes on; outputs are flattened and concatenated. ``memory_saving=True`` saves only the
    outputs for backward."""

    def __init__(self, num_transforms, split_dim=1, memory_saving: bool = False):
        super().__init__()
        if isinstance(split_dim, bool) or not isinstance(split_dim, int) or split_dim < 1:
            raise TypeError("Split dimension must be a positive integer.")
        self._transforms = nn.ModuleList()
        self._output_shapes = []
        self._num_transforms = num_transforms
        self._split_dim = split_dim
        self.memory_saving = bool(memory_saving)

    def add_transform(self, transform, transform_output_shape):
        if len(self._transforms) == self._num_transforms:
            raise RuntimeError(f"Adding more than {self._num_transforms} transforms is not allowed.")
        if (self._split_dim - 1) >= len(transform_output_shape):
            raise ValueError("No split_dim in output shape")
        if transform_output_shape[self._split_dim - 1] < 2:
            raise ValueError(f"Size of dimension {self._split_dim} must be at least 2.")
        self._transforms.append(transform)
        if len(self._transforms) != self._num_transforms:
            output_shape = list(transform_output_shape)
            output_shape[self._split_dim - 1] = (output_shape[self._split_dim - 1] + 1) // 2
            hidden_shape = list(transform_output_shape)
            hidden_shape[self._split_dim - 1] = hidden_shape[self._split_dim - 1] // 2
            self._output_shapes.append(tuple(output_shape))
            return tuple(hidden_shape)
        self._output_shapes.append(tuple(transform_output_shape))
        return None

    def program(self) -> InvertibleProgram:
        """x -> the per-transform outputs (unflattened), as a program (slot 0 is x)."""
        nodes: list[Node] = []
        cur, nxt, outs = 0, 1, []
        d = self._split_dim
        for k, transform in enumerate(self._transforms):
            more, cur, nxt = _nflows_nodes(transform, cur, nxt)
            nodes += more
            if k < len(self._transforms) - 1:
                nodes.append(_PermutationNode(lambda v, d=d, k=k: self._split_level(v[0], d, k),
                                              lambda v, d=d: [torch.cat(v, dim=d)], (cur,), (nxt, nxt + 1)))
                outs.append(nxt)
                cur, nxt = nxt + 1, nxt + 2
        outs.append(cur)
        return InvertibleProgram(nodes, (0,), outs)

    def _split_level(self, v: Tensor, d: int, k: int) -> list[Tensor]:
        """The factor-out after transform k, with nflows' check of the output's shape (an
        ``assert`` there: ``PeerError`` is that AssertionError and a ValueError)."""
        out, hidden = torch.chunk(v, 2, dim=d)
        if tuple(out.shape[1:]) != tuple(self._output_shapes[k]):
            raise PeerError(f"the output of transform {k} has per-sample shape {tuple(out.shape[1:])}, but "
                            f"{tuple(self._output_shapes[k])} was registered with add_transform: the input's "
                            "shape does not fit the network")
        return [out, hidden]

    def _check(self, inputs):
        if self._split_dim >= inputs.dim():
            raise ValueError("No split_dim in inputs.")
        if self._num_transforms != len(self._transforms):
            raise RuntimeError(f"Expecting exactly {self._num_transforms} transform(s) to be added.")

    def forward(self, inputs, context=None):
        self._check(inputs)
        conds = () if context is None else (context,)
        outs, logabsdet = run_program(self.program(), [inputs], conds, self.memory_saving)
        B = inputs.shape[0]
        return torch.cat([o.reshape(B, math.prod(o.shape[1:])) for o in outs], dim=-1), logabsdet.to(inputs.dtype)

    def inverse(self, inputs, context=None):
        if inputs.dim() != 2:
            raise ValueError("Expecting NxD inputs")
        if self._num_transforms != len(self._transforms):
            raise RuntimeError(f"Expecting exactly {self._num_transforms} transform(s) to be added.")
        B = inputs.shape[0]
        sizes = [int(np.prod(s)) for s in self._output_shapes]
        parts = torch.split(inputs, sizes, dim=1)
        outs = [p.reshape(B, *s) for p, s in zip(parts, self._output_shapes)]
        conds = () if context is None else (context,)
        xs, logabsdet = self.program().invert(outs, conds)
        return xs[0], logabsdet.to(inputs.dtype)


def _convert_nflows_multiscale(m, *, convert_child, memory_saving: bool = False, **kwargs):
    new = MultiscaleCompositeTransform(m._num_transforms, m._split_dim, memory_saving=memory_saving)
    new._transforms = nn.ModuleList([convert_child(t) for t in m._transforms])
    new._output_shapes = list(m._output_shapes)
    return new.train(m.training)


def _convert_nflows_squeeze(m, *, convert_child, **kwargs):
    return SqueezeTransform(m.factor).train(m.training)


# =================================================================================================
# FrEIA
# =================================================================================================
class _FreiaModule(nn.Module):
    """Base of the FrEIA-protocol modules here: ``forward(x_tuple, c=None, rev=False, jac=True)
    -> (tuple, log|det J|)``, ``dims_in`` / ``dims_c``, ``output_dims``."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__()
        self.dims_in = [tuple(d) for d in dims_in]
        self.dims_c = [tuple(d) for d in (dims_c or [])]

    @staticmethod
    def _zero_jac(v: Tensor) -> Tensor:
        return torch.zeros(v.shape[0], dtype=v.dtype, device=v.device)


class IRevNetDownsampling(_FreiaModule):
    """FrEIA's ``IRevNetDownsampling`` (``legacy_backend=False``): 2x2 space-to-depth, output
    channel 4c + 2i + j (Glow's order, :func:`flowkern.nn.squeeze.squeeze2x2`); the fixed
    ``downsample_kernel`` is kept as FrEIA's (non-trainable) parameter."""

    def __init__(self, dims_in, dims_c=None, legacy_backend: bool = False):
        super().__init__(dims_in, dims_c)
        if legacy_backend:
            raise ValueError("IRevNetDownsampling: only legacy_backend=False is converted (its channel order is "
                             "Glow's squeeze); keep the peer's module for the legacy backend")
        self.channels = self.dims_in[0][0]
        self.block_size, self.block_size_sq, self.legacy_backend = 2, 4, False
        kernel = torch.zeros(4, 1, 2, 2)
        kernel[0, 0, 0, 0] = kernel[1, 0, 0, 1] = kernel[2, 0, 1, 0] = kernel[3, 0, 1, 1] = 1
        self.downsample_kernel = nn.Parameter(torch.cat([kernel] * self.channels, 0), requires_grad=False)

    def forward(self, x, c=None, jac=True, rev=False):
        out = unsqueeze2x2(x[0], "glow") if rev else squeeze2x2(x[0], "glow")
        return (out,), 0.0

    def output_dims(self, input_dims):
        if len(input_dims) != 1 or len(input_dims[0]) != 3:
            raise ValueError(f"i-RevNet downsampling needs one (C, H, W) input, got {input_dims}")
        c, w, h = input_dims[0]
        if w % 2 or h % 2:
            raise ValueError(f"i-RevNet downsampling needs an even height and width, got input dims {tuple(input_dims[0])}")
        return ((c * 4, w // 2, h // 2),)


class HaarDownsampling(_FreiaModule):
    r"""FrEIA's ``HaarDownsampling``: per channel, the 2x2 Haar wavelets (average, vertical,
    horizontal, diagonal) times ``0.5 * rebalance``, optionally grouped by wavelet; log-det
    :math:`D(\log 16 + 4\log f)/4` per sample."""

    def __init__(self, dims_in, dims_c=None, order_by_wavelet: bool = False, rebalance: float = 1.0):
        super().__init__(dims_in, dims_c)
        if rebalance == 0:
            raise ValueError("'rebalance' argument must be != 0.")
        self.in_channels = self.dims_in[0][0]
        self.fac_fwd = 0.5 * rebalance
        self.jac_fwd = (np.log(16.0) + 4 * np.log(self.fac_fwd)) / 4.0
        self.fac_rev = 0.5 / rebalance
        self.jac_rev = (np.log(16.0) + 4 * np.log(self.fac_rev)) / 4.0
        w = torch.ones(4, 1, 2, 2)
        w[1, 0, 0, 1] = w[1, 0, 1, 1] = -1
        w[2, 0, 1, 0] = w[2, 0, 1, 1] = -1
        w[3, 0, 1, 0] = w[3, 0, 0, 1] = -1
        self.haar_weights = nn.Parameter(torch.cat([w] * self.in_channels, 0), requires_grad=False)
        self.permute = order_by_wavelet
        if self.permute:
            perm = torch.tensor([i + 4 * j for i in range(4) for j in range(self.in_channels)])
            self.perm, self.perm_inv = perm, torch.argsort(perm)

    def forward(self, x, c=None, jac=True, rev=False):
        inp = x[0]
        ndims = math.prod(inp.shape[1:])  # (not inp[0]: an empty batch has no sample 0)
        if not rev:
            out = F.conv2d(inp, self.haar_weights, bias=None, stride=2, groups=self.in_channels)
            if self.permute:
                out = out[:, self.perm]
            return (out * self.fac_fwd,), ndims * self.jac_fwd
        x_perm = inp[:, self.perm_inv] if self.permute else inp
        out = F.conv_transpose2d(x_perm * self.fac_rev, self.haar_weights, stride=2, groups=self.in_channels)
        return (out,), ndims * self.jac_rev

    def output_dims(self, input_dims):
        if len(input_dims) != 1 or len(input_dims[0]) != 3:
            raise ValueError(f"HaarDownsampling needs one (C, H, W) input, got {input_dims}")
        c, w, h = input_dims[0]
        if w % 2 or h % 2:
            raise ValueError(f"HaarDownsampling needs an even height and width, got input dims {tuple(input_dims[0])}")
        return ((c * 4, w // 2, h // 2),)


class Split(_FreiaModule):
    """FrEIA's graph ``Split``: one tensor into sections along ``dim`` (0: channels)."""

    def __init__(self, dims_in, section_sizes=None, n_sections: int = 2, dim: int = 0):
        super().__init__(dims_in)
        self.dim = dim
        length = self.dims_in[0][dim]
        if section_sizes is None:
            self.split_size_or_sections = ([length // n_sections + 1] * (length % n_sections)
                                           + [length // n_sections] * (n_sections - length % n_sections))
        else:
            self.split_size_or_sections = section_sizes

    def forward(self, x, rev=False, jac=True):
        if rev:
            return [torch.cat(x, dim=self.dim + 1)], 0
        return torch.split(x[0], self.split_size_or_sections, dim=self.dim + 1), 0

    def output_dims(self, input_dims):
        return [tuple(input_dims[0][j] if j != self.dim else size for j in range(len(input_dims[0])))
                for size in self.split_size_or_sections]


class Concat(_FreiaModule):
    """FrEIA's graph ``Concat``: several tensors into one along ``dim`` (0: channels)."""

    def __init__(self, dims_in, dim: int = 0):
        super().__init__(dims_in)
        self.dim = dim
        self.split_size_or_sections = [d[dim] for d in self.dims_in]

    def forward(self, x, rev=False, jac=True):
        if rev:
            return torch.split(x[0], self.split_size_or_sections, dim=self.dim + 1), 0
        return [torch.cat(x, dim=self.dim + 1)], 0

    def output_dims(self, input_dims):
        total = sum(d[self.dim] for d in input_dims)
        return [tuple(input_dims[0][j] if j != self.dim else total for j in range(len(input_dims[0])))]


class Flatten(_FreiaModule):
    """FrEIA's ``Flatten``: (B, *shape) -> (B, prod(shape))."""

    def __init__(self, dims_in, dims_c=None):
        super().__init__(dims_in, dims_c)
        self.input_shape = self.dims_in[0]
        self.output_shape = (int(np.prod(self.dims_in[0])),)

    def forward(self, x, c=None, jac=True, rev=False):
        if not rev:
            return (x[0].flatten(1),), 0.0  # (not reshape(B, -1): ambiguous for B = 0)
        return (x[0].reshape(x[0].shape[0], *self.input_shape),), 0.0

    def output_dims(self, input_dims):
        return (self.output_shape,)


class _FreiaNode(Node):
    """A FrEIA-protocol module of a graph as a node; ``cond_idx`` picks its conditions."""

    def __init__(self, module: nn.Module, inputs, outputs, cond_idx: Sequence[int]) -> None:
        super().__init__(inputs, outputs)
        self.module, self.cond_idx = module, tuple(cond_idx)

    def modules(self):
        return (self.module,)

    def _call(self, vs, conds, rev):
        try:
            if self.cond_idx:
                out, jac = self.module(tuple(vs), c=[conds[i] for i in self.cond_idx], rev=rev, jac=True)
            else:
                out, jac = self.module(tuple(vs), rev=rev, jac=True)
        except RuntimeError:
            raise
        except (ValueError, IndexError, AssertionError) as e:  # FrEIA: RuntimeError for any node's error
            raise NodeError(f"{type(self.module).__name__} node ({'inverse' if rev else 'forward'}): {e}") from e
        return list(out), jac

    def run(self, xs, conds):
        return self._call(xs, conds, False)

    def invert(self, ys, conds):
        return self._call(ys, conds, True)

    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        if isinstance(self.module, (IRevNetDownsampling, Split, Concat, Flatten)):
            xs, _ = self._call(ys, conds, True)  # permutations: the inverse maps the grads too
            gxs, _ = self._call(grad_ys, conds, True)
            return xs, gxs, [None] * len(conds)
        return super().invert_and_backprop(ys, conds, grad_ys, grad_logdet, grads)


def _topological(node_list) -> list:
    """Nodes ordered so that every node comes after the nodes it reads from: the given order if it
    is one (FrEIA's own sorted list), else a stable reordering."""
    seen: set[int] = set()
    for n in node_list:
        if not all(id(p) in seen for p, _ in n.inputs):
            break
        seen.add(id(n))
    else:
        return list(node_list)
    placed: set[int] = set()
    order, pending = [], list(node_list)
    while pending:
        ready = [n for n in pending if all(id(p) in placed for p, _ in n.inputs)]
        if not ready:
            raise ValueError("the graph's nodes have a cycle or read from a node outside node_list")
        for n in ready:
            placed.add(id(n))
            order.append(n)
        pending = [n for n in pending if id(n) not in placed]
    return order


class GraphINN(nn.Module):
    """FrEIA's ``GraphINN`` (same node list, call signature and ``state_dict`` keys), run as an
    invertible program; ``memory_saving=True`` saves only the outputs (and conditions) for
    backward in the forward direction."""

    def __init__(self, node_list, force_tuple_output: bool = False, verbose: bool = False,
                 memory_saving: bool = False):
        super().__init__()
        kinds = {id(n): type(n).__name__ for n in node_list}
        self.in_nodes = [n for n in node_list if kinds[id(n)] == "InputNode"]
        self.out_nodes = [n for n in node_list if kinds[id(n)] == "OutputNode"]
        self.condition_nodes = [n for n in node_list if kinds[id(n)] == "ConditionNode"]
        self.node_list = _topological(node_list)
        self.dims_in = [n.output_dims[0] for n in self.in_nodes]
        self.dims_c = [n.output_dims[0] for n in self.condition_nodes]
        self.global_out_shapes = [n.input_dims[0] for n in self.out_nodes]
        self.force_tuple_output = force_tuple_output
        self.module_list = nn.ModuleList([n.module for n in self.node_list if n.module is not None])
        self.memory_saving = bool(memory_saving)
        if verbose:
            print(self)

    def _special(self, node) -> bool:
        return node in self.in_nodes or node in self.out_nodes or node in self.condition_nodes

    def program(self) -> InvertibleProgram:
        """The forward direction: inputs -> outputs (FrEIA's node order)."""
        slots: dict[tuple[int, int], int] = {}

        def slot(node, idx) -> int:
            return slots.setdefault((id(node), idx), len(slots))

        ins = [slot(n, 0) for n in self.in_nodes]
        nodes: list[Node] = []
        for node in self.node_list:
            if self._special(node):
                continue
            nodes.append(_FreiaNode(node.module, [slot(p, i) for p, i in node.inputs],
                                    [slot(node, j) for j in range(len(node.outputs))],
                                    [self.condition_nodes.index(cn) for cn in node.conditions]))
        outs = [slot(*n.inputs[0]) for n in self.out_nodes]
        return InvertibleProgram(nodes, ins, outs)

    def forward(self, x_or_z, c=None, rev: bool = False, jac: bool = True, intermediate_outputs: bool = False,
                x=None):
        if x is not None:
            x_or_z = x
        if torch.is_tensor(x_or_z):
            x_or_z = (x_or_z,)
        if torch.is_tensor(c):
            c = (c,)
        c = tuple(c or ())
        starts = self.out_nodes if rev else self.in_nodes
        if len(x_or_z) != len(starts):
            raise ValueError(f"Got {len(x_or_z)} inputs, but expected {len(starts)}.")
        if len(c) != len(self.condition_nodes):
            raise ValueError(f"Got {len(c)} conditions, but expected {len(self.condition_nodes)}.")
        if intermediate_outputs:
            return self._interpret(list(x_or_z), c, rev, jac)
        program = self.program()
        if rev:
            out, log_jac = program.invert(list(x_or_z), c)
        else:
            out, log_jac = run_program(program, list(x_or_z), c, self.memory_saving)
        ref = x_or_z[0]
        log_jac = log_jac.to(ref.dtype) if jac else torch.zeros(ref.shape[0], dtype=ref.dtype, device=ref.device)
        if len(out) == 1 and not self.force_tuple_output:
            return out[0], log_jac
        return tuple(out), log_jac

    def _interpret(self, xs, c, rev, jac):
        """Node by node with every intermediate kept (``intermediate_outputs=True``)."""
        outs, jacs = {}, {}
        for tensor, node in zip(xs, self.out_nodes if rev else self.in_nodes):
            outs[node, 0] = tensor
        for tensor, node in zip(c, self.condition_nodes):
            outs[node, 0] = tensor
        for node in (reversed(self.node_list) if rev else self.node_list):
            if self._special(node):
                continue
            mod_in = tuple(outs[p, i] for p, i in (node.outputs if rev else node.inputs))
            if node.conditions:
                res, j = node.module(mod_in, c=[outs[cn, 0] for cn in node.conditions], rev=rev, jac=jac)
            else:
                res, j = node.module(mod_in, rev=rev, jac=jac)
            for k, v in enumerate(res):
                outs[node, k] = v
            if jac:
                jacs[node] = j
        for node in (self.in_nodes if rev else self.out_nodes):
            outs[node, 0] = outs[(node.outputs if rev else node.inputs)[0]]
        return outs, jacs

    def get_node_by_name(self, name):
        return next((n for n in self.node_list if n.name == name), None)

    def get_module_by_name(self, name):
        node = self.get_node_by_name(name)
        return None if node is None else node.module


def _convert_freia_graph(m, *, convert_child, memory_saving: bool = False, **kwargs):
    for node in m.node_list:
        if node.module is not None:
            node.module = convert_child(node.module)
    new = GraphINN(m.node_list, m.force_tuple_output, memory_saving=memory_saving)
    # FrEIA keeps its input, output and condition nodes apart from the sorted node list
    new.in_nodes, new.out_nodes = list(m.in_nodes), list(m.out_nodes)
    new.condition_nodes = list(m.condition_nodes)
    new.dims_in = [n.output_dims[0] for n in new.in_nodes]
    new.dims_c = [n.output_dims[0] for n in new.condition_nodes]
    new.global_out_shapes = [n.input_dims[0] for n in new.out_nodes]
    return new.train(m.training)


def _finish(new: nn.Module, peer: nn.Module) -> nn.Module:
    """The peer's dtype, device, state (same keys, strict) and train/eval mode."""
    dtype, device = params_dtype_device(peer)
    if dtype is not None:
        new.to(device=device, dtype=dtype)
    new.load_state_dict(peer.state_dict(), strict=True)
    return new.train(peer.training)


def _convert_freia_irevnet(m, *, convert_child, **kwargs):
    if m.legacy_backend:
        return m  # its channel order differs; the peer's module runs as it is
    return _finish(IRevNetDownsampling(m.dims_in, getattr(m, "dims_c", None)), m)


def _convert_freia_haar(m, *, convert_child, **kwargs):
    new = HaarDownsampling(m.dims_in, getattr(m, "dims_c", None), order_by_wavelet=m.permute,
                           rebalance=m.fac_fwd / 0.5)
    return _finish(new, m)


def _convert_freia_split(m, *, convert_child, **kwargs):
    new = Split(m.dims_in, section_sizes=list(m.split_size_or_sections), dim=m.dim)
    return new.train(m.training)


def _convert_freia_concat(m, *, convert_child, **kwargs):
    return Concat(m.dims_in, dim=m.dim).train(m.training)


def _convert_freia_flatten(m, *, convert_child, **kwargs):
    return Flatten(m.dims_in, getattr(m, "dims_c", None)).train(m.training)


for _name, _fn in (
    ("normflows.MultiscaleFlow", _convert_nf_multiscale),
    ("normflows.core.MultiscaleFlow", _convert_nf_multiscale),
    ("normflows.flows.GlowBlock", _convert_nf_glow_block),
    ("normflows.flows.Squeeze", _convert_nf_squeeze),
    ("nflows.transforms.MultiscaleCompositeTransform", _convert_nflows_multiscale),
    ("nflows.transforms.SqueezeTransform", _convert_nflows_squeeze),
    ("FrEIA.framework.GraphINN", _convert_freia_graph),
    ("FrEIA.modules.IRevNetDownsampling", _convert_freia_irevnet),
    ("FrEIA.modules.HaarDownsampling", _convert_freia_haar),
    ("FrEIA.modules.Split", _convert_freia_split),
    ("FrEIA.modules.Concat", _convert_freia_concat),
    ("FrEIA.modules.Flatten", _convert_freia_flatten),
):
    register_converter(_name, _fn)
