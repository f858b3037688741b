"""Tile shapes and launch configs of the Triton coupling kernels.

Heuristic (x viewed as (B, C, S), memory order b, c, s): a tile holds about
``TILE_ELEMS`` elements, filled innermost-first so loads stay contiguous:
BLOCK_S takes up to 1024 positions, BLOCK_C the channels that still fit, BLOCK_B the
samples that still fit (vectors, S = 1, get tiles of many rows x all channels).
num_warps grows with the tile (one warp per ~256 elements, 1..8).

On a GPU the kernels are wrapped in ``triton.autotune`` over ``AUTOTUNE_CONFIGS``
(num_warps / num_stages around the heuristic tile, keyed on the shape); the tile
itself stays heuristic because the partial-sum buffers are sized from it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TILE_ELEMS", "Tiles", "pick_tiles", "AUTOTUNE_WARPS", "AUTOTUNE_STAGES"]

TILE_ELEMS = 4096
AUTOTUNE_WARPS = (2, 4, 8)
AUTOTUNE_STAGES = (1, 2)


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclass(frozen=True)
class Tiles:
    """Block sizes, number of blocks per axis and the heuristic num_warps."""

    BLOCK_B: int
    BLOCK_C: int
    BLOCK_S: int
    n_bblk: int
    n_cblk: int
    n_sblk: int
    num_warps: int

    @property
    def n_programs(self) -> int:
        return self.n_bblk * self.n_cblk * self.n_sblk


def pick_tiles(B: int, C: int, S: int, tile_elems: int = TILE_ELEMS) -> Tiles:
    """Tile of ~``tile_elems`` elements for x of shape (B, C, S) (module docstring)."""
    bs = min(_pow2_at_least(S), 1024, tile_elems)
    bc = min(_pow2_at_least(C), max(1, tile_elems // bs))
    bb = min(_pow2_at_least(B), max(1, tile_elems // (bs * bc)))
    warps = min(8, max(1, (bb * bc * bs) // 256))
    cdiv = lambda n, d: -(-n // d)  # noqa: E731
    return Tiles(bb, bc, bs, cdiv(B, bb), cdiv(C, bc), cdiv(S, bs), warps)
