"""Ready-made flows: :func:`build_flow`, the flat coupling flow of the CompVis
iin / net2net / invariances code (``FlatCouplingFlow`` / ``ConditionalFlatCouplingFlow``)."""

from __future__ import annotations

from torch import nn

from .._checks import check_int
from .actnorm import ActNorm
from .double import DoubleAffineCoupling
from .flow import ConditionalFlow, Flow
from .permute import Shuffle

__all__ = ["build_flow"]


def build_flow(
    dim: int,
    n_blocks: int,
    hidden: int,
    depth: int = 2,
    cond_channels: int = 0,
    clamp: float = 2.0,
    scale: str = "tanh",
    memory_saving: bool = False,
    embedder: nn.Module | None = None,
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
