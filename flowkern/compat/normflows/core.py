r"""normflows' ``NormalizingFlow`` and ``MultiscaleFlow`` (see :mod:`flowkern.compat.normflows`).

``MultiscaleFlow`` runs the normalising direction as an
:class:`~flowkern.nn.graph.InvertibleProgram` (``memory_saving=True``: only the latents are saved
for backward); normflows' Gaussian bases standardise each latent inside the program."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...nn.base import zero_logdet
from ...nn.flow import standard_normal_log_prob
from ...nn.graph import InvertibleProgram, ModuleNode, Node, run_program
from ...spec import acc_dtype
from .._fused import fold_steps
from ..convert import builtin_converter
from .flows import ActNorm, AffineCouplingBlock
from .glow import GlowBlock, Squeeze, _PeerSqueeze

__all__ = ["NormalizingFlow", "MultiscaleFlow"]


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad = flag


class _StateFile:
    """normflows' ``save(path)`` / ``load(path)`` of a model: its state dict to / from a file."""

    def save(self, path):
        torch.save(self.state_dict(), path)

    def load(self, path):
        self.load_state_dict(torch.load(path))


class NormalizingFlow(_StateFile, nn.Module):
    """Base distribution ``q0`` pushed through ``flows`` (z -> x is ``forward``); an initialised
    per-channel :class:`ActNorm` and the channel-split :class:`AffineCouplingBlock` after it run as
    one fused op call.

    Args:
        q0: the base distribution (normflows' ``distributions``: ``log_prob(z)``, ``q0(n)``).
        flows: the flows, z -> x order.
        p: the target distribution (for the reverse KL).

    Example:
        >>> import torch, normflows
        >>> from flowkern.compat.normflows import AffineCouplingBlock, NormalizingFlow
        >>> base = normflows.distributions.DiagGaussian(4)
        >>> flow = NormalizingFlow(base, [AffineCouplingBlock(torch.nn.Linear(2, 4))])
        >>> flow.log_prob(torch.randn(5, 4)).shape
        torch.Size([5])
    """

    def __init__(self, q0: nn.Module, flows, p=None):
        super().__init__()
        self.q0 = q0
        self.flows = nn.ModuleList(flows)
        self.p = p

    def _foldable(self, i_norm: int, i_coupling: int) -> bool:
        norm, coupling = self.flows[i_norm], self.flows[i_coupling]
        return (isinstance(norm, ActNorm) and isinstance(coupling, AffineCouplingBlock)
                and coupling.fusable and norm.per_channel() and norm.initialized())

    def _run(self, z: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        log_det = zero_logdet(z)
        for i, i_coupling in fold_steps(len(self.flows), inverse, self._foldable):
            if i_coupling is not None:
                norm = self.flows[i]
                z, log_d = self.flows[i_coupling].fused(z, inverse, torch.exp(norm.s).reshape(-1), norm.t.reshape(-1))
            else:
                z, log_d = self.flows[i].inverse(z) if inverse else self.flows[i](z)
            log_det += log_d
        return z, log_det

    def forward(self, z):
        """z (latent) -> x."""
        return self._run(z, inverse=False)[0]

    def forward_and_log_det(self, z):
        return self._run(z, inverse=False)

    def inverse(self, x):
        """x -> z (latent)."""
        return self._run(x, inverse=True)[0]

    def inverse_and_log_det(self, x):
        return self._run(x, inverse=True)

    def log_prob(self, x):
        """log q(x) = log q0(z) + log|det dz/dx|."""
        z, log_q = self._run(x, inverse=True)
        return log_q + self.q0.log_prob(z)

    def forward_kld(self, x):
        """Forward KL estimate: -mean log q(x) over the batch."""
        return -torch.mean(self.log_prob(x))

    def sample(self, num_samples: int = 1):
        """(x, log q(x)) for ``num_samples`` draws."""
        z, log_q = self.q0(num_samples)
        x, log_det = self._run(z, inverse=False)
        return x, log_q - log_det

    def reverse_kld(self, num_samples: int = 1, beta: float = 1.0, score_fn: bool = True):
        """Reverse KL estimate against the target ``p``."""
        z, log_q = self.sample(num_samples)
        if not score_fn:
            _set_requires_grad(self, False)
            log_q = self.log_prob(z)
            _set_requires_grad(self, True)
        return torch.mean(log_q) - beta * torch.mean(self.p.log_prob(z))

    def reverse_alpha_div(self, num_samples: int = 1, alpha: float = 1, dreg: bool = False):
        r"""Alpha divergence of q from the target ``p``, estimated on samples of q, as normflows:
        :math:`\mathrm{sign}(\alpha - 1)\,\mathrm{logsumexp}(\alpha(\log p - \log q))`, or with
        ``dreg`` the doubly reparametrised estimator (arXiv 1810.04152)."""
        z, log_q = self.sample(num_samples)
        log_p = self.p.log_prob(z)
        if not dreg:
            sign = (alpha > 1) - (alpha < 1)
            return sign * torch.logsumexp(alpha * (log_p - log_q), 0)
        w_const = torch.exp(log_p - log_q).detach()
        _set_requires_grad(self, False)
        log_q = self.log_prob(z)
        _set_requires_grad(self, True)
        w = torch.exp(log_p - log_q)
        w_alpha = w_const**alpha
        w_alpha = w_alpha / torch.mean(w_alpha)
        weights = (1 - alpha) * w_alpha + alpha * w_alpha**2
        return -alpha * torch.mean(weights * torch.log(w))


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
            for flow in reversed(list(self.flows[i])):  # a ModuleList's own reversed() indexes it
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


# ---- convert(): normflows' classes as these ----------------------------------------------------
@builtin_converter("normflows.NormalizingFlow")
def _convert_flow(m, *, convert_child, **kwargs):
    return NormalizingFlow(m.q0, [convert_child(f) for f in m.flows], m.p).train(m.training)


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
