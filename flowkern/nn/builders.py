"""Ready-made flows: :func:`build_flow`, the flat coupling flow of the CompVis
iin / net2net / invariances code (``FlatCouplingFlow`` / ``ConditionalFlatCouplingFlow``), and the
multi-scale image flows :func:`build_glow` (Kingma & Dhariwal 2018) and :func:`build_realnvp`
(Dinh et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .._checks import check_bool, check_choice, check_int
from .actnorm import ActNorm
from .conditional import ConditionalAffineCoupling
from .coupling import AffineCoupling
from .double import DoubleAffineCoupling
from .flow import ConditionalFlow, Flow
from .image import CheckerboardCoupling, ConvSubnet, GlowStep, OneHot
from .multiscale import SPLIT_PRIORS, LearnedPrior, MultiScaleFlow, Split, check_image_shape
from .permute import Shuffle
from .squeeze import Squeeze

__all__ = ["build_flow", "build_glow", "build_realnvp"]


def build_flow(dim: int, n_blocks: int, hidden: int, depth: int = 2, cond_channels: int = 0, clamp: float = 2.0,
               scale: str = "tanh", memory_saving: bool = False, embedder: nn.Module | None = None
               ) -> Flow | ConditionalFlow:
    """``n_blocks`` x [ActNorm, DoubleAffineCoupling, Shuffle(seed=block index)] on vectors (B, dim).

    Args:
        dim: D of the (B, D) input (>= 2).
        n_blocks: number of blocks.
        hidden, depth: the coupling MLPs' width and hidden-layer count.
        cond_channels: > 0 (or an ``embedder``) gives a :class:`ConditionalFlow`: the condition
            size the couplings see, i.e. the embedder's ``out_dim`` when one is given (0 with an
            embedder takes its ``out_dim``).
        clamp, scale: the couplings' scale function.
        memory_saving: O(1)-activation-memory backward.
        embedder: applied to the condition once per call.

    Example:
        >>> import torch
        >>> flow = build_flow(4, n_blocks=2, hidden=8)
        >>> z, logdet = flow(torch.randn(3, 4))
        >>> len(flow.blocks), tuple(z.shape)
        (6, (3, 4))
    """
    for name, v in (("dim", dim), ("n_blocks", n_blocks), ("hidden", hidden)):
        check_int(name, v, minimum=1)
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a coupling flow, got {dim}")
    check_int("cond_channels", cond_channels, minimum=0)
    if embedder is not None:
        out_dim = getattr(embedder, "out_dim", None)
        if cond_channels == 0:
            if not isinstance(out_dim, int):
                raise ValueError("cond_channels must be given when the embedder has no int out_dim attribute")
            cond_channels = out_dim
        elif out_dim is not None and out_dim != cond_channels:
            raise ValueError(f"cond_channels ({cond_channels}) must equal embedder.out_dim ({out_dim})")
    blocks: list[nn.Module] = []
    for i in range(n_blocks):
        blocks += [
            ActNorm(dim),
            DoubleAffineCoupling(dim, hidden, depth, cond_channels=cond_channels, clamp=clamp, scale=scale),
            Shuffle(dim, seed=i),
        ]
    if cond_channels > 0:
        return ConditionalFlow(blocks, embedder=embedder, memory_saving=memory_saving, event_shape=(dim,))
    return Flow(blocks, memory_saving=memory_saving, event_shape=(dim,))


def _condition_size(num_classes: int, cond_channels: int) -> tuple[int, nn.Module | None]:
    num_classes = check_int("num_classes", num_classes, minimum=0)
    cond_channels = check_int("cond_channels", cond_channels, minimum=0)
    if num_classes and cond_channels:
        raise ValueError("give num_classes (class labels) or cond_channels (a condition vector), not both")
    if num_classes:
        return num_classes, OneHot(num_classes)
    return cond_channels, None


def _check_divisible(shape: tuple[int, int, int], levels: int) -> None:
    f = 2 ** levels
    if shape[1] % f or shape[2] % f:
        raise ValueError(f"shape {shape}: height and width must be divisible by 2**levels = {f} "
                         f"({levels} squeezes), got H={shape[1]}, W={shape[2]}")


def build_glow(shape: Sequence[int], levels: int = 3, depth: int = 32, hidden: int = 512, *,
               num_classes: int = 0, cond_channels: int = 0, split_prior: str = "learned", learn_top: bool = True,
               actnorm_in_subnet: bool = False, memory_saving: bool = False, seed: int = 0) -> MultiScaleFlow:
    """Glow (Kingma & Dhariwal 2018, Fig. 2): ``levels`` x [Squeeze, ``depth`` x
    :class:`~flowkern.nn.GlowStep`, :class:`Split`] (no split after the last level) and a
    :class:`LearnedPrior` on the last latent.

    Args:
        shape: per-sample image shape (C, H, W); H and W divisible by 2**levels.
        levels: number of levels L.
        depth: steps per level K.
        hidden: width of the coupling subnets.
        num_classes: class-conditional (labels (B,) as c, one-hot embedded) if > 0.
        cond_channels: conditional on a vector c (B, cond_channels) if > 0.
        split_prior: ``"learned"`` (Glow's conditional prior) or ``"normal"``.
        learn_top: a learned prior on the last latent (always on for a conditional flow).
        actnorm_in_subnet: actnorm inside the coupling subnets (Glow's ``conv2d``).
        memory_saving: O(1)-activation-memory backward.
        seed: seeds the 1x1 convolutions' orthogonal inits (step k of level l gets seed + l*depth + k).

    Example:
        >>> import torch
        >>> glow = build_glow((3, 8, 8), levels=2, depth=1, hidden=8, num_classes=2)
        >>> bpd = glow.bits_per_dim(torch.rand(2, 3, 8, 8), torch.tensor([0, 1]))
        >>> tuple(bpd.shape)
        (2,)
    """
    shape = check_image_shape(tuple(shape) if isinstance(shape, (list, tuple)) else shape)
    levels = check_int("levels", levels, minimum=1)
    depth = check_int("depth", depth, minimum=1)
    hidden = check_int("hidden", hidden, minimum=1)
    check_choice("split_prior", split_prior, SPLIT_PRIORS)
    _check_divisible(shape, levels)
    cond, embedder = _condition_size(num_classes, cond_channels)
    split_cond = cond if split_prior == "learned" else 0
    C = shape[0]
    built = []
    for lvl in range(levels):
        C *= 4
        level: list[nn.Module] = [Squeeze("glow")]
        level += [GlowStep(C, hidden, cond_channels=cond, actnorm_in_subnet=actnorm_in_subnet,
                           seed=seed + lvl * depth + k) for k in range(depth)]
        if lvl < levels - 1:
            level.append(Split(C, prior=split_prior, cond_channels=split_cond))
            C //= 2
        built.append(level)
    prior = LearnedPrior(C, cond) if (check_bool("learn_top", learn_top) or cond) else None
    return MultiScaleFlow(built, prior, embedder=embedder, conditional=bool(cond), memory_saving=memory_saving,
                          event_shape=shape)


def build_realnvp(shape: Sequence[int], levels: int = 2, hidden: int = 64, *, n_checker: int = 3,
                  n_channel: int = 3, n_final: int = 4, num_classes: int = 0, cond_channels: int = 0,
                  scale: str = "tanh", clamp: float = 2.0, actnorm: bool = True,
                  memory_saving: bool = False) -> MultiScaleFlow:
    """RealNVP (Dinh et al. 2017, Sec. 3.6 and 4.1): per level, ``n_checker`` checkerboard couplings
    (alternating masks), a squeeze, ``n_channel`` channel couplings (alternating halves) and a
    factor-out of half the channels under a standard normal; the last level is ``n_final``
    checkerboard couplings.

    The image is kept in :class:`~flowkern.nn.Squeeze` ``"checkerboard"`` order from the start of
    each level, so the checkerboard couplings are channel splits on the fused op and RealNVP's
    squeeze is that layout (the last latent is a fixed permutation of RealNVP's, which a standard
    normal does not see). Batch normalisation is replaced by actnorm (``actnorm``).

    Args:
        shape: per-sample image shape (C, H, W); H and W divisible by 2**levels.
        levels: number of levels (the last without factor-out).
        hidden: width of the coupling subnets (:class:`~flowkern.nn.ConvSubnet`).
        n_checker, n_channel, n_final: couplings per level as above.
        num_classes, cond_channels: class or vector condition into every coupling.
        scale, clamp: the couplings' bounded scale function.
        actnorm: an actnorm before every coupling.
        memory_saving: O(1)-activation-memory backward.

    Example:
        >>> import torch
        >>> flow = build_realnvp((1, 8, 8), levels=2, hidden=8, n_checker=1, n_channel=1, n_final=1)
        >>> [tuple(z.shape) for z in flow(torch.rand(2, 1, 8, 8))[0]]
        [(2, 2, 4, 4), (2, 8, 2, 2)]
    """
    shape = check_image_shape(tuple(shape) if isinstance(shape, (list, tuple)) else shape)
    levels = check_int("levels", levels, minimum=1)
    hidden = check_int("hidden", hidden, minimum=1)
    for name, v in (("n_checker", n_checker), ("n_channel", n_channel)):
        check_int(name, v, minimum=0)
    check_int("n_final", n_final, minimum=1)
    _check_divisible(shape, levels)
    cond, embedder = _condition_size(num_classes, cond_channels)
    actnorm = check_bool("actnorm", actnorm)
    C = shape[0]
    built = []

    def coupling_kw():
        return dict(scale=scale, clamp=clamp)

    for lvl in range(levels):
        last = lvl == levels - 1
        level: list[nn.Module] = [Squeeze("checkerboard")]
        for k in range(n_final if last else n_checker):
            if actnorm:
                level.append(ActNorm(4 * C))
            level.append(CheckerboardCoupling(C, ConvSubnet(C + cond, 2 * C, hidden), parity=k % 2,
                                              cond_channels=cond, **coupling_kw()))
        if not last:
            for k in range(n_channel):
                if actnorm:
                    level.append(ActNorm(4 * C))
                passive = "first" if k % 2 == 0 else "second"
                net = ConvSubnet(2 * C + cond, 4 * C, hidden)
                level.append(ConditionalAffineCoupling(4 * C, cond, net, passive=passive, **coupling_kw()) if cond
                             else AffineCoupling(4 * C, net, passive=passive, **coupling_kw()))
            level.append(Split(4 * C, prior="normal"))
            C *= 2
        built.append(level)
    return MultiScaleFlow(built, None, embedder=embedder, conditional=bool(cond), memory_saving=memory_saving,
                          event_shape=shape)
