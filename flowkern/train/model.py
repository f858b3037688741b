"""The trained model: building it from a config, loading it from a checkpoint, its bits/dim on
a set of images, and sample grids as PNG files."""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

from ..nn import MultiScaleFlow, bits_per_dim, build_glow, build_realnvp
from .checkpoint import newest_checkpoint, read_checkpoint
from .config import TrainConfig, TrainError

__all__ = ["build_model", "load_trained", "evaluate", "batch_bits_per_dim", "autocast", "save_grid", "draw_samples"]


def build_model(config: TrainConfig, num_classes: int = 0) -> MultiScaleFlow:
    """The flow of ``config`` (``torch`` seeded with ``config.seed`` first, so every process
    builds the same weights); class-conditional on ``num_classes`` labels if > 0."""
    torch.manual_seed(config.seed)
    shape = (config.channels, config.size, config.size)
    if config.model == "glow":
        model = build_glow(shape, levels=config.levels, depth=config.depth, hidden=config.hidden,
                           num_classes=num_classes, memory_saving=config.memory_saving, seed=config.seed)
    else:
        model = build_realnvp(shape, levels=config.levels, hidden=config.hidden, n_checker=config.depth,
                              n_channel=config.depth, n_final=config.depth + 1, num_classes=num_classes,
                              memory_saving=config.memory_saving)
    if config.memory_saving_chunk:
        model.memory_saving_chunk = config.memory_saving_chunk  # MultiScaleFlow's documented option
    return model


def load_trained(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[MultiScaleFlow, TrainConfig, dict]:
    """(model in eval mode, its config, the checkpoint payload) from a checkpoint file, or from
    the newest usable checkpoint of a training output folder."""
    p = Path(path)
    if p.is_dir():
        found = newest_checkpoint(p)
        if found is None:
            raise TrainError(f"CHECKPOINT {p} is a folder without step-*.pt checkpoints")
        state = found[0]
    elif not p.exists():
        raise TrainError(f"CHECKPOINT {p} does not exist")
    else:
        state = read_checkpoint(p)
    config = TrainConfig.from_dict(state["config"])
    model = build_model(config, len(state["data"]["classes"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config, state


def autocast(config: TrainConfig, device: torch.device):
    """The forward's autocast context of ``config.autocast``."""
    if config.autocast == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batch_bits_per_dim(out: tuple[list[torch.Tensor], torch.Tensor], num_dims: int, n_bits: int) -> torch.Tensor:
    """Mean bits/dim of a batch (a scalar) from a flow forward's ``(latents, logdet)``
    (:meth:`MultiScaleFlow.nll`, then :func:`flowkern.nn.bits_per_dim`, affine in log p)."""
    return bits_per_dim(-MultiScaleFlow.nll(*out), num_dims, n_bits)


@torch.no_grad()
def evaluate(model: MultiScaleFlow, loader, device: torch.device, config: TrainConfig, procs=None) -> tuple[float, int]:
    """(mean bits/dim, image count) over the batches of ``loader`` (pairs (x, labels)), summed
    over the processes when ``procs`` is distributed. The model is put back in its mode."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    try:
        for x, c in loader:
            x = x.to(device)
            c = c.to(device) if model.conditional else None
            with autocast(config, device):
                bpd = batch_bits_per_dim(model(x, c), math.prod(x.shape[1:]), config.n_bits)
            total[0] += bpd.double() * x.shape[0]
            total[1] += x.shape[0]
    finally:
        model.train(was_training)
    if procs is not None:
        procs.sum_(total)
    n = int(total[1].item())
    return (total[0].item() / n if n else float("nan")), n


@torch.no_grad()
def draw_samples(model: MultiScaleFlow, n: int, temperature: float, seed: int, num_classes: int = 0,
                 label: int | None = None) -> torch.Tensor:
    """``n`` samples (on the CPU, clamped to [0, 1]) drawn with a private RNG seeded by ``seed``
    (the global one is left as it was); a conditional model cycles through the classes (or
    draws ``label`` only)."""
    device = next(model.parameters()).device
    c = None
    if num_classes:
        c = (torch.full((n,), label) if label is not None else torch.arange(n) % num_classes).to(device)
    devices = [device] if device.type == "cuda" else []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            x = model.sample(n, c, temperature=temperature)
    finally:
        model.train(was_training)
    return x.float().clamp(0, 1).cpu()


def save_grid(images: torch.Tensor, path: str | os.PathLike, pad: int = 2) -> Path:
    """Write images (N, C, H, W) in [0, 1] as a near-square grid PNG (atomically)."""
    from PIL import Image

    n, c, h, w = images.shape
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    arr = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
    mode = "RGB" if c == 3 else "L"
    data = (arr if c == 3 else arr[..., 0]).contiguous().numpy().tobytes()
    img = Image.frombytes(mode, (arr.shape[1], arr.shape[0]), data)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
