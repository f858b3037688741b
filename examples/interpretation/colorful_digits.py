"""ColorfulDigits: scikit-learn's real 8x8 handwritten digits, upsampled and coloured.

Known factors of every image: ``digit`` (0-9, the handwriting label), ``colour`` (one of
:data:`COLOURS`) and a residual ``style`` (the writer's stroke, foreground brightness,
background level and a small shift).

Writer split (documented proxy): ``load_digits`` is the UCI optdigits test set, written by
13 people and stored in writer order, but it carries no writer id. We cut the 1797 samples
into :data:`N_WRITER_BLOCKS` = 13 contiguous index blocks (one per presumed writer) and hold
out the last ``test_blocks`` blocks; train and test therefore never share a source digit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from flowkern._checks import check_choice, check_int, check_number

__all__ = [
    "COLOURS",
    "COLOUR_NAMES",
    "DIGIT_WORDS",
    "FACTORS",
    "N_WRITER_BLOCKS",
    "ColorfulDigits",
    "NuisanceParams",
    "load_gray_digits",
    "render",
    "random_deform",
    "random_nuisance",
    "writer_split",
]

COLOUR_NAMES: tuple[str, ...] = ("red", "green", "blue", "yellow", "magenta", "cyan")
COLOURS = torch.tensor([
    [0.95, 0.15, 0.12],
    [0.15, 0.80, 0.20],
    [0.20, 0.35, 1.00],
    [0.95, 0.90, 0.15],
    [0.90, 0.20, 0.90],
    [0.15, 0.90, 0.90],
])
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven",
                                "eight", "nine")
FACTORS: tuple[str, ...] = ("digit", "colour")
N_WRITER_BLOCKS = 13


def load_gray_digits(size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as (N, 1, size, size) intensities in [0, 1] (bilinear upsampling) and labels."""
    if size not in (8, 16, 32):
        raise ValueError(f"size must be 8, 16 or 32, got {size!r}")
    from sklearn.datasets import load_digits

    d = load_digits()
    gray = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        gray = F.interpolate(gray, size=(size, size), mode="bilinear", align_corners=False)
    return gray.clamp_(0.0, 1.0), torch.from_numpy(d.target.astype(np.int64))


def writer_split(n: int, split: str, test_blocks: int = 3) -> np.ndarray:
    """Indices of ``split`` ('train' | 'test') under the contiguous writer-block proxy."""
    check_choice("split", split, ("train", "test"))
    check_int("test_blocks", test_blocks, 1, N_WRITER_BLOCKS - 1)
    block = np.minimum(np.arange(n) * N_WRITER_BLOCKS // n, N_WRITER_BLOCKS - 1)
    is_test = block >= N_WRITER_BLOCKS - test_blocks
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def random_deform(gray: torch.Tensor, generator: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Small random affine warps of (N, 1, S, S) intensities (augmentation of the writer style):
    rotation +-12 deg, scale 0.9-1.1, shear +-0.15, each times ``strength``; bilinear, zero fill."""
    strength = check_number("strength", strength, minimum=0)
    n = gray.shape[0]
    u = (torch.rand(n, 3, generator=generator) * 2 - 1) * strength
    ang, scale, shear = u[:, 0] * math.radians(12), 1 + 0.1 * u[:, 1], 0.15 * u[:, 2]
    cos, sin, zero = torch.cos(ang) / scale, torch.sin(ang) / scale, torch.zeros(n)
    theta = torch.stack([torch.stack([cos, -sin + shear, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(gray.shape), align_corners=False)
    return F.grid_sample(gray, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0, 1)


@dataclass
class NuisanceParams:
    """Per-image nuisance variables: colour index, brightness, background level, shift (dy, dx)."""

    colour: torch.Tensor
    brightness: torch.Tensor
    background: torch.Tensor
    shift: torch.Tensor


def random_nuisance(n: int, generator: torch.Generator, max_shift: int = 1) -> NuisanceParams:
    """Draw colour uniformly from :data:`COLOURS`, brightness in [0.7, 1], background in [0, 0.3]."""
    return NuisanceParams(
        colour=torch.randint(len(COLOUR_NAMES), (n,), generator=generator),
        brightness=0.7 + 0.3 * torch.rand(n, generator=generator),
        background=0.3 * torch.rand(n, generator=generator),
        shift=torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator),
    )


def render(gray: torch.Tensor, p: NuisanceParams) -> torch.Tensor:
    """Colour (N, 1, S, S) intensities g: ``x = bg * (1 - g) + brightness * colour * g``, shifted.

    The shift moves the digit by whole pixels with zero (background) fill.
    """
    if gray.dim() != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must have shape (N, 1, S, S), got {tuple(gray.shape)}")
    n, _, s, _ = gray.shape
    m = int(p.shift.abs().max()) if n else 0
    if m:
        padded = F.pad(gray, (m, m, m, m))
        rows = (m - p.shift[:, 0]).view(n, 1, 1) + torch.arange(s).view(1, s, 1)
        cols = (m - p.shift[:, 1]).view(n, 1, 1) + torch.arange(s).view(1, 1, s)
        gray = padded[torch.arange(n).view(n, 1, 1), 0, rows, cols].unsqueeze(1)
    fg = (COLOURS[p.colour] * p.brightness[:, None]).view(n, 3, 1, 1)
    bg = p.background.view(n, 1, 1, 1)
    return bg * (1.0 - gray) + fg * gray


class ColorfulDigits(torch.utils.data.Dataset):
    """Coloured real digits with known factors and IIN pair sampling.

    Each source digit of the split is rendered ``copies`` times with independent nuisances; with
    ``deform > 0`` every copy but the first is also warped by :func:`random_deform` (training-set
    augmentation: more handwriting variety for the same writers; labels unchanged).
    Attributes: ``images`` (N, 3, S, S) in [0, 1], ``digits`` (N,), ``colours`` (N,),
    ``source`` (N,) index into ``load_digits``, ``nuisance`` (:class:`NuisanceParams`).
    """

    def __init__(self, split: str = "train", *, size: int = 16, copies: int | None = None,
                 seed: int = 0, test_blocks: int = 3, deform: float = 0.0) -> None:
        copies = (4 if split == "train" else 2) if copies is None else copies
        check_int("copies", copies, minimum=1)
        gray, labels = load_gray_digits(size)
        idx = torch.from_numpy(writer_split(len(labels), split, test_blocks))
        g = torch.Generator().manual_seed(seed * 2 + (split == "test"))
        self.split, self.size = split, size
        self.source = idx.repeat(copies)
        self.gray = gray[self.source]
        if deform > 0 and copies > 1:
            self.gray[len(idx):] = random_deform(self.gray[len(idx):], g, deform)
        self.digits = labels[self.source]
        self.nuisance = random_nuisance(len(self.source), g)
        self.colours = self.nuisance.colour
        self.images = render(self.gray, self.nuisance)
        self._source_gray = gray
        self._by = {
            "digit": [torch.nonzero(self.digits == k).flatten() for k in range(10)],
            "colour": [torch.nonzero(self.colours == k).flatten() for k in range(len(COLOUR_NAMES))],
        }

    def rerender(self, idx: torch.Tensor, generator: torch.Generator, deform: float = 1.0) -> torch.Tensor:
        """Fresh renders (N, 3, S, S) of images ``idx``: the same source digit and colour label,
        a new :func:`random_deform` warp of strength ``deform`` and new brightness, background and
        shift (on-the-fly augmentation: ``digits[idx]`` and ``colours[idx]`` stay their labels)."""
        if not isinstance(idx, torch.Tensor) or idx.dtype != torch.long or idx.dim() != 1:
            raise TypeError(f"idx must be a 1-d torch.long tensor, got {idx!r:.60}")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise ValueError(f"idx must index the {len(self)} images, got values in "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        gray = self._source_gray[self.source[idx]]
        if deform != 0:
            gray = random_deform(gray, generator, deform)
        p = random_nuisance(len(idx), generator)
        p.colour = self.colours[idx]  # indexing copies
        return render(gray, p)

    def __len__(self) -> int:
        return len(self.digits)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.images[i], int(self.digits[i]), int(self.colours[i])

    def labels(self, factor: str) -> torch.Tensor:
        """Labels of ``factor`` ('digit' | 'colour') for every image."""
        check_choice("factor", factor, FACTORS)
        return self.digits if factor == "digit" else self.colours

    def pair_indices(self, n: int, factor: str, generator: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` index pairs (a, b) sharing ``factor``; b is drawn from a's group with a different
        source digit (so the residual style is not shared). Other factors are independent."""
        labels = self.labels(factor)
        a = torch.randint(len(self), (n,), generator=generator)
        b = torch.empty_like(a)
        for k, group in enumerate(self._by[factor]):
            sel = torch.nonzero(labels[a] == k).flatten()
            if len(sel) == 0:
                continue
            b[sel] = group[torch.randint(len(group), (len(sel),), generator=generator)]
        clash = self.source[a] == self.source[b]
        if clash.any():  # redraw clashes once from the group; rare and harmless if any remain
            for i in torch.nonzero(clash).flatten().tolist():
                group = self._by[factor][int(labels[a[i]])]
                b[i] = group[torch.randint(len(group), (1,), generator=generator)]
        return a, b

    def factor_pairs(self, n: int, generator: torch.Generator, weights: tuple[float, ...] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IIN training pairs: each pair shares one factor drawn from :data:`FACTORS` with probabilities
        proportional to ``weights`` (default uniform).

        Returns (idx_a, idx_b, factor) with factor[i] the index into FACTORS of the shared factor.
        """
        w = torch.ones(len(FACTORS)) if weights is None else torch.tensor(weights, dtype=torch.float)
        if w.shape != (len(FACTORS),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(FACTORS)} non-negative numbers with a positive sum, "
                             f"got {weights!r}")
        factor = torch.multinomial(w, n, replacement=True, generator=generator)
        a = torch.empty(n, dtype=torch.long)
        b = torch.empty(n, dtype=torch.long)
        for k, name in enumerate(FACTORS):
            sel = torch.nonzero(factor == k).flatten()
            a[sel], b[sel] = self.pair_indices(len(sel), name, generator)
        return a, b, factor
