"""PNG image grids with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["save_grid"]


def save_grid(images: torch.Tensor, path: str | Path, *, scale: int = 3, pad: int = 1) -> Path:
    """Write a (rows, cols, 3, H, W) or (N, 3, H, W) tensor in [0, 1] as one PNG grid.

    Each image is upscaled ``scale`` times (nearest) and separated by ``pad`` white pixels.
    """
    from PIL import Image

    if images.dim() == 4:
        images = images.unsqueeze(0)
    if images.dim() != 5 or images.shape[2] not in (1, 3):
        raise ValueError(f"images must have shape (rows, cols, C, H, W) or (N, C, H, W), got {tuple(images.shape)}")
    rows, cols, _, h, w = images.shape
    x = images.detach().float().clamp(0, 1).expand(rows, cols, 3, h, w)
    x = x.repeat_interleave(scale, dim=3).repeat_interleave(scale, dim=4)
    hs, ws = h * scale + pad, w * scale + pad
    canvas = torch.ones(3, rows * hs + pad, cols * ws + pad)
    for r in range(rows):
        for c in range(cols):
            canvas[:, pad + r * hs: pad + r * hs + h * scale, pad + c * ws: pad + c * ws + w * scale] = x[r, c]
    arr = (canvas.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path
