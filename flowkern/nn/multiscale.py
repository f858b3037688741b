r"""Multi-scale image flows (RealNVP, Glow): factor-out, learned priors and the container
(the builders :func:`~flowkern.nn.build_glow`, :func:`~flowkern.nn.build_realnvp` are in
:mod:`flowkern.nn.builders`).

A multi-scale flow runs levels of [Squeeze, K steps, Split] (Dinh et al. 2017, Sec. 3.6;
Kingma & Dhariwal 2018, Fig. 2): each level trades resolution for channels, and its
:class:`Split` lets half the channels leave as a latent while the other half goes on,

.. math:: x \to h_1 \to (h_1', z_1) \to h_2 \to \dots \to z_L,\qquad
          \log p(x) = \textstyle\sum_l \log p(z_l \mid h_l', c) + \log|\det J|.

**Latents are standardised.** A Gaussian prior :math:`N(\mu, \sigma^2)` on a latent z — Glow's
learned conditional prior of a split (:math:`\mu, \log\sigma` from a zero-initialised conv of the
kept half, and of the condition), or its learned top prior — is written as the invertible map
:math:`\varepsilon = (z - \mu) / \sigma` with log-det :math:`-\sum\log\sigma`, so
:meth:`MultiScaleFlow.forward` returns :math:`\varepsilon_l` and the log-det including the priors'
terms, and :math:`\log p(x) = \sum_l \log N(\varepsilon_l; 0, I) + \log|\det J|`. Sampling at
temperature T draws :math:`\varepsilon \sim N(0, T^2 I)`, i.e. :math:`z = \mu + T\sigma\varepsilon`
as in Glow. A split prior is an affine coupling (passive: the kept half) and runs on the fused op.

With ``memory_saving=True`` the backward rebuilds every level's input from its outputs and the
factored-out latents (:mod:`flowkern.nn.graph`): the bytes saved for backward are the latents
(and the condition), constant in the depth K and in the number of levels.

References: L. Dinh, J. Sohl-Dickstein, S. Bengio, *Density estimation using Real NVP*, ICLR 2017;
D. P. Kingma, P. Dhariwal, *Glow: Generative Flow with Invertible 1x1 Convolutions*, NeurIPS 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._checks import check_bool, check_choice, check_int, check_number
from ..spec import acc_dtype
from .base import InvertibleModule, check_condition, check_floating, check_like_model, first_floating, zero_logdet
from .conditional import ConditionalAffineCoupling
from .coupling import AffineCoupling
from .flow import standard_normal_log_prob
from .graph import InvertibleProgram, ModuleNode, Node, run_program
from .image import ZeroConv2d, bits_per_dim


SPLIT_PRIORS = ("learned", "normal")



# ---- factor-out ---------------------------------------------------------------------------------
class _GaussianParams(nn.Module):
    r"""Zero-initialised conv of the kept half (and condition) -> (mean, log sigma), returned as the
    fused op's ``(s_raw, t)`` of :math:`\varepsilon = z e^{s} + t`: :math:`s = -\log\sigma`,
    :math:`t = -\mu / \sigma`."""

    def __init__(self, in_channels: int, latent_channels: int, kernel_size: int, logscale_factor: float) -> None:
        super().__init__()
        self.conv = ZeroConv2d(in_channels, 2 * latent_channels, kernel_size, logscale_factor)
        self.latent_channels = latent_channels

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(v)
        n = self.latent_channels
        mean, log_std = h[:, :n], h[:, n:]
        s_raw = -log_std
        return s_raw, -mean * torch.exp(s_raw)


class Split(nn.Module):
    r"""Factor-out (Dinh et al. 2017, Sec. 3.6; Glow's ``split2d``): channels [0, keep) go on,
    channels [keep, C) leave as a latent, standardised by its prior (module docstring).

    ``forward(x, c) -> (kept, latent, logdet)``, ``inverse(kept, latent, c) -> (x, logdet)``.

    Args:
        channels: C of the (B, C, H, W) input.
        keep: channels that go on (default C // 2).
        prior: ``"learned"`` (Glow: mean and log-std from a zero-initialised 3x3 conv of the kept
            half, and of the condition) or ``"normal"`` (standard normal, log-det 0).
        cond_channels: channels of a condition (vector or map) the learned prior sees; 0: none.
        kernel_size, logscale_factor: of the prior's :class:`~flowkern.nn.ZeroConv2d`.

    Reference: Kingma & Dhariwal 2018, Sec. 3 and the reference code's ``split2d_prior``.

    Example:
        >>> split = Split(4)
        >>> kept, latent, logdet = split(torch.randn(2, 4, 3, 3))
        >>> tuple(kept.shape), tuple(latent.shape)
        ((2, 2, 3, 3), (2, 2, 3, 3))
    """

    def __init__(self, channels: int, keep: int | None = None, prior: str = "learned", *, cond_channels: int = 0,
                 kernel_size: int = 3, logscale_factor: float = 3.0) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=2)
        self.keep = channels // 2 if keep is None else check_int("keep", keep, minimum=1, maximum=channels - 1)
        self.prior = check_choice("prior", prior, SPLIT_PRIORS)
        self.cond_channels = check_int("cond_channels", cond_channels, minimum=0)
        self.coupling: AffineCoupling | None = None
        if prior == "learned":
            net = _GaussianParams(self.keep + self.cond_channels, channels - self.keep, kernel_size, logscale_factor)
            kw = dict(scale="exp", split=self.keep, passive="first")
            self.coupling = (ConditionalAffineCoupling(channels, self.cond_channels, net, **kw) if self.cond_channels
                             else AffineCoupling(channels, net, **kw))
        elif self.cond_channels:
            raise ValueError("cond_channels needs prior='learned' (the standard normal prior has no parameters)")

    def output_shapes(self, shape: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-sample shapes of (kept, latent) for an input of per-sample shape (C, *S)."""
        C, *S = shape
        if C != self.channels:
            raise ValueError(f"Split expects {self.channels} channels, got per-sample shape {tuple(shape)}")
        return (self.keep, *S), (C - self.keep, *S)

    def _check(self, x: object, name: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[1] != self.channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must have shape (B, {self.channels}, *S), got {got}")
        return x

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(kept, standardised latent, log-det of the standardisation)."""
        self._check(x, "x")
        if self.coupling is None:
            return x[:, :self.keep], x[:, self.keep:], zero_logdet(x)
        y, ld = self.coupling(x, c)
        return y[:, :self.keep], y[:, self.keep:], ld

    def inverse(self, kept: torch.Tensor, latent: torch.Tensor, c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x = [kept | mu + sigma * latent] and the inverse log-det."""
        y = torch.cat((kept, latent), 1)
        self._check(y, "cat(kept, latent)")
        if self.coupling is None:
            return y, zero_logdet(y)
        return self.coupling.inverse(y, c)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, keep={self.keep}, prior={self.prior!r}, cond_channels={self.cond_channels}"


class _SplitNode(Node):
    """A :class:`Split` in a program: one slot in, (kept, latent) out; its memory-saving step is its
    prior coupling's (one subnet evaluation), on the concatenated outputs."""

    def __init__(self, split: Split, inputs, outputs) -> None:
        super().__init__(inputs, outputs)
        self.split = split

    def modules(self):
        return (self.split,)

    def run(self, xs, conds):
        kept, latent, ld = self.split(xs[0], conds[0] if conds else None)
        return [kept, latent], ld

    def invert(self, ys, conds):
        x, ld = self.split.inverse(ys[0], ys[1], conds[0] if conds else None)
        return [x], ld

    def invert_and_backprop(self, ys, conds, grad_ys, grad_logdet, grads):
        y, g_y = torch.cat(ys, 1), torch.cat(grad_ys, 1)
        if self.split.coupling is None:
            return [y], [g_y], [None] * len(conds)
        x, g_x, g_c = self.split.coupling.invert_and_backprop(y, conds[0] if conds else None, g_y, grad_logdet, grads)
        return [x], [g_x], [g_c, *[None] * (len(conds) - 1)]


# ---- priors of a whole latent -------------------------------------------------------------------
class AffinePrior(InvertibleModule):
    r"""A diagonal Gaussian prior :math:`N(\mu, \sigma^2)` on a latent z, as the invertible
    standardisation :math:`\varepsilon = (z - \mu) e^{-\log\sigma}`, log-det
    :math:`-\sum \log\sigma` (module docstring). Subclasses implement :meth:`mean_log_std`
    (tensors broadcastable to z).

    Example:
        >>> class Fixed(AffinePrior):
        ...     def mean_log_std(self, z, c):
        ...         return torch.ones(1, 1), torch.zeros(1, 1)  # N(1, 1)
        >>> eps, logdet = Fixed()(torch.ones(2, 3))
        >>> eps.abs().max().item(), logdet.abs().tolist()
        (0.0, [0.0, 0.0])
    """

    def mean_log_std(self, z: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    @staticmethod
    def _logdet(log_std: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        ls = log_std.to(acc_dtype(z.dtype))
        if ls.shape[0] == 1:  # shared by the batch: count the broadcast copies
            per = ls.sum() * (math.prod(z.shape[1:]) // max(1, math.prod(ls.shape[1:])))
            return per.expand(z.shape[0])
        return ls.expand(z.shape).flatten(1).sum(1)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.mean_log_std(z, c)
        return (z - mean) * torch.exp(-log_std), -self._logdet(log_std, z)

    def inverse(self, eps: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.mean_log_std(eps, c)
        return torch.addcmul(mean, eps, torch.exp(log_std)), self._logdet(log_std, eps)


class LearnedPrior(AffinePrior):
    r"""Glow's prior of the last latent: a learned mean and log-std per channel ("learntop"),
    plus, for a conditional flow, a zero-initialised linear map of the condition ("ycond").

    Args:
        channels: C of the (B, C, H, W) latent.
        cond_channels: size of the condition vector (B, cond_channels) (a map (B, F, H, W) is
            averaged over space); 0: unconditional.

    Reference: Kingma & Dhariwal 2018, the reference code's ``prior`` with ``learntop``/``ycond``.

    Example:
        >>> eps, logdet = LearnedPrior(3)(torch.randn(2, 3, 4, 4))  # starts as N(0, I)
        >>> logdet.abs().tolist()
        [0.0, 0.0]
    """

    def __init__(self, channels: int, cond_channels: int = 0) -> None:
        super().__init__()
        self.channels = check_int("channels", channels, minimum=1)
        self.cond_channels = check_int("cond_channels", cond_channels, minimum=0)
        self.mean = nn.Parameter(torch.zeros(channels))
        self.log_std = nn.Parameter(torch.zeros(channels))
        self.cond = None
        if self.cond_channels:
            self.cond = nn.Linear(self.cond_channels, 2 * channels)
            nn.init.zeros_(self.cond.weight)
            nn.init.zeros_(self.cond.bias)

    def mean_log_std(self, z: torch.Tensor, c: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if z.dim() < 2 or z.shape[1] != self.channels:
            raise ValueError(f"z must have shape (B, {self.channels}, *S), got {tuple(z.shape)}")
        view = (1, self.channels, *([1] * (z.dim() - 2)))
        mean, log_std = self.mean.to(z.dtype).reshape(view), self.log_std.to(z.dtype).reshape(view)
        if self.cond is None:
            return mean, log_std
        if c is None:
            raise ValueError(f"c (the condition, shape (B, {self.cond_channels})) is required by this LearnedPrior")
        if c.dim() > 2:
            c = c.flatten(2).mean(2)
        if c.dim() != 2 or c.shape != (z.shape[0], self.cond_channels):
            raise ValueError(f"c must have shape ({z.shape[0]}, {self.cond_channels}), got {tuple(c.shape)}")
        h = self.cond(c).to(z.dtype).reshape(z.shape[0], 2 * self.channels, *([1] * (z.dim() - 2)))
        return mean + h[:, :self.channels], log_std + h[:, self.channels:]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, cond_channels={self.cond_channels}"


# ---- the container ------------------------------------------------------------------------------
def check_image_shape(shape: object, name: str = "shape") -> tuple[int, int, int]:
    """``shape`` as a per-sample image shape (C, H, W) of positive ints; ``ValueError`` naming ``name``."""
    if not isinstance(shape, (tuple, list)) or len(shape) != 3 or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape):
        raise ValueError(f"{name} must be a per-sample image shape (C, H, W) of positive ints, got {shape!r}")
    return tuple(shape)


class MultiScaleFlow(nn.Module):
    r"""Levels of invertible layers with factor-outs (module docstring).

    ``forward(x, c) -> (latents, logdet)``: ``latents`` lists the standardised latents in the
    order they leave (each level's :class:`Split`, then the last level's output through
    ``prior``); ``inverse(latents, c) -> (x, logdet)``; :meth:`log_prob`, :meth:`sample`,
    :meth:`bits_per_dim`, :meth:`reconstruction_error`.

    Args:
        levels: per level, a sequence of :class:`~flowkern.nn.InvertibleModule` s and
            :class:`Split` s, e.g. ``[Squeeze(), *K steps, Split(C)]``.
        prior: an :class:`~flowkern.nn.InvertibleModule` standardising the last latent
            (e.g. :class:`LearnedPrior`), or None for a standard normal.
        embedder: module applied to the condition once per call (e.g. :class:`~flowkern.nn.OneHot`
            for class labels); implies ``conditional``.
        conditional: the layers take a condition c (required in every call).
        memory_saving: O(1)-activation-memory backward (only the latents are saved).
        memory_saving_chunk: with ``memory_saving``, run the forward and backward on batch chunks
            of this many samples, so that only one chunk's working set (a level's tensors and one
            subnet's activations) is alive at a time: the peak memory of very large images then
            falls to the latents plus one chunk's working set (None: the whole batch at once). The
            memory/time trade: smaller chunks, lower peak, longer step (smaller matrix products);
            the gradients are the same up to summation order.
        event_shape: per-sample input shape (C, H, W); recorded at the first forward if not given.

    References: Dinh et al. 2017 (RealNVP), Sec. 3.6; Kingma & Dhariwal 2018 (Glow), Fig. 2.

    Example:
        >>> from flowkern.nn import GlowStep, Squeeze
        >>> flow = MultiScaleFlow([[Squeeze(), GlowStep(4, hidden=8), Split(4)], [Squeeze(), GlowStep(8, hidden=8)]],
        ...                       LearnedPrior(8), memory_saving=True)
        >>> x = torch.rand(2, 1, 8, 8)
        >>> flow.nll_loss(x).backward()
        >>> [tuple(z.shape) for z in flow(x)[0]], tuple(flow.sample(3).shape)
        ([(2, 2, 4, 4), (2, 8, 2, 2)], (3, 1, 8, 8))
    """

    memory_saving_chunk: int | None = None  # class default: whole-model pickles from before the option load

    def __init__(self, levels: Sequence[Sequence[nn.Module]], prior: nn.Module | None = None, *,
                 embedder: nn.Module | None = None, conditional: bool = False, memory_saving: bool = False,
                 memory_saving_chunk: int | None = None, event_shape: Sequence[int] | None = None) -> None:
        super().__init__()
        built = []
        for i, level in enumerate(levels):
            level = list(level)
            for j, m in enumerate(level):
                if not isinstance(m, (InvertibleModule, Split)):
                    raise TypeError(f"levels[{i}][{j}] must be an InvertibleModule or a Split, got {type(m).__name__}")
            built.append(nn.ModuleList(level))
        if not built:
            raise ValueError("levels must hold at least one level")
        if prior is not None and not isinstance(prior, InvertibleModule):
            raise TypeError(f"prior must be an InvertibleModule (e.g. LearnedPrior) or None, got {type(prior).__name__}")
        if embedder is not None and not callable(embedder):
            raise TypeError(f"embedder must be a callable nn.Module, got {type(embedder).__name__}")
        self.levels = nn.ModuleList(built)
        self.prior = prior
        self.embedder = embedder
        self.conditional = check_bool("conditional", conditional) or embedder is not None
        self.memory_saving = check_bool("memory_saving", memory_saving)
        self.memory_saving_chunk = None if memory_saving_chunk is None else check_int(
            "memory_saving_chunk", memory_saving_chunk, minimum=1)
        self.event_shape = None if event_shape is None else check_image_shape(tuple(event_shape), "event_shape")
        self.condition_shape: tuple[int, ...] | None = None

    # ---- structure ------------------------------------------------------------------------------
    def program(self) -> InvertibleProgram:
        """The network as an :class:`~flowkern.nn.graph.InvertibleProgram`: slot 0 is x, the
        outputs are the latents in order."""
        nodes: list[Node] = []
        cur, nxt, latents = 0, 1, []
        for level in self.levels:
            for m in level:
                if isinstance(m, Split):
                    nodes.append(_SplitNode(m, (cur,), (nxt, nxt + 1)))
                    latents.append(nxt + 1)
                    cur, nxt = nxt, nxt + 2
                else:
                    nodes.append(ModuleNode(m, (cur,), (nxt,)))
                    cur, nxt = nxt, nxt + 1
        if self.prior is not None:
            nodes.append(ModuleNode(self.prior, (cur,), (nxt,)))
            cur = nxt
        return InvertibleProgram(nodes, (0,), (*latents, cur))

    def latent_shapes(self, event_shape: Sequence[int] | None = None) -> list[tuple[int, ...]]:
        """Per-sample shapes of the latents for inputs of per-sample shape ``event_shape``
        (default: the flow's); ValueError naming the shape if it does not fit (e.g. odd sizes)."""
        shape = event_shape if event_shape is not None else self.event_shape
        if shape is None:
            raise RuntimeError("event_shape is unknown: pass event_shape to the constructor or run a forward first")
        shape = check_image_shape(tuple(shape), "event_shape")
        cur, out = tuple(shape), []
        for i, level in enumerate(self.levels):
            for j, m in enumerate(level):
                try:
                    if isinstance(m, Split):
                        cur, latent = m.output_shapes(cur)
                        out.append(latent)
                    elif hasattr(m, "output_shape"):
                        cur = tuple(m.output_shape(cur))
                    elif getattr(m, "channels", cur[0]) != cur[0]:
                        raise ValueError(f"{type(m).__name__} expects {m.channels} channels")
                except ValueError as e:
                    raise ValueError(f"input of per-sample shape {tuple(shape)} does not fit levels[{i}][{j}] "
                                     f"({type(m).__name__}) at per-sample shape {cur}: {e}") from None
        return out + [cur]

    # ---- conditions -----------------------------------------------------------------------------
    def _conds(self, c: torch.Tensor | None) -> tuple:
        if not self.conditional:
            if c is not None:
                raise ValueError("c must be None: this MultiScaleFlow is unconditional")
            return ()
        check_condition(c, "this conditional MultiScaleFlow")
        if self.condition_shape is None:
            self.condition_shape = tuple(c.shape[1:])
        return (c if self.embedder is None else self.embedder(c),)

    def _check_x(self, x: object) -> torch.Tensor:
        if check_floating(x).dim() != 4:
            raise ValueError(f"x must be an image batch of shape (B, C, H, W), got {tuple(x.shape)}")
        if self.event_shape is not None and x.shape[1] != self.event_shape[0]:
            raise ValueError(f"x must have {self.event_shape[0]} channels (event shape {self.event_shape}), "
                             f"got shape {tuple(x.shape)}")
        return check_like_model(x, self, "x")

    # ---- directions -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Standardised latents and log|det| (B,) of x -> latents, the priors' terms included."""
        self._check_x(x)
        if self.event_shape is None:
            self.latent_shapes(tuple(x.shape[1:]))  # raises naming the shape if it does not fit
            self.event_shape = tuple(x.shape[1:])
        elif tuple(x.shape[2:]) != self.event_shape[1:]:
            self.latent_shapes(tuple(x.shape[1:]))
        return run_program(self.program(), [x], self._conds(c), self.memory_saving, self.memory_saving_chunk)

    def inverse(self, latents: Sequence[torch.Tensor], c: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x from the latents (as :meth:`forward` returns them) and log|det| of latents -> x."""
        program = self.program()
        if not isinstance(latents, (list, tuple)) or len(latents) != len(program.outputs):
            n = len(latents) if isinstance(latents, (list, tuple)) else type(latents).__name__
            raise ValueError(f"latents must be a list of {len(program.outputs)} tensors (one per factor-out, "
                             f"then the last level's), got {n}")
        for i, z in enumerate(latents):
            check_like_model(check_floating(z, f"latents[{i}]"), self, f"latents[{i}]")
        xs, logdet = program.invert(list(latents), self._conds(c))
        return xs[0], logdet

    def log_prob(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) (B,) in nats: standard normal latents plus the log-det."""
        latents, logdet = self(x, c)
        return logdet + sum(standard_normal_log_prob(z) for z in latents)

    standard_normal_log_prob = staticmethod(standard_normal_log_prob)  # the old name of the module function

    @staticmethod
    def nll(latents: Sequence[torch.Tensor], logdet: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of -log p(x) from a forward's ``(latents, logdet)`` (e.g. through DDP)."""
        return -(logdet + sum(standard_normal_log_prob(z) for z in latents)).mean()

    def nll_loss(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Mean over the batch of -log p(x) (nats)."""
        return self.nll(*self(x, c))

    def bits_per_dim(self, x: torch.Tensor, c: torch.Tensor | None = None, n_bits: int = 8) -> torch.Tensor:
        """Bits per dimension (B,) of dequantised x in a unit-width range, with the n_bits
        discretisation term (:func:`flowkern.nn.bits_per_dim`)."""
        return bits_per_dim(self.log_prob(x, c), math.prod(x.shape[1:]), n_bits)

    @torch.no_grad()
    def sample(self, n: int, c: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """n images from latents eps ~ N(0, temperature^2 I) (Glow's temperature sampling)."""
        n = check_int("n", n, minimum=0)  # n = 0: an empty batch (0, C, H, W)
        temperature = check_number("temperature", temperature, minimum=0.0)
        if isinstance(c, torch.Tensor) and c.shape[0] != n:
            raise ValueError(f"c must have batch size n={n}, got {tuple(c.shape)}")
        ref = first_floating(self)
        dtype, device = (ref.dtype, ref.device) if ref is not None else (torch.float32, None)
        latents = [temperature * torch.randn(n, *s, dtype=dtype, device=device) for s in self.latent_shapes()]
        return self.inverse(latents, c)[0]

    @torch.no_grad()
    def reconstruction_error(self, x: torch.Tensor, c: torch.Tensor | None = None) -> float:
        """max |inverse(forward(x)) - x| (the reconstruction check; eval-mode forward)."""
        latents, _ = self(x, c)
        diff = self.inverse(latents, c)[0] - x
        return diff.abs().max().item() if diff.numel() else 0.0

    def extra_repr(self) -> str:
        return (f"levels={len(self.levels)}, conditional={self.conditional}, memory_saving={self.memory_saving}, "
                f"event_shape={self.event_shape}")
