"""``flowkern eval CHECKPOINT FOLDER``: a trained model's bits/dim on every image of FOLDER
(centre crops at the training size, the same fixed dequantisation noise every time); the last
number printed is the bits/dim."""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.data import DataLoader

from .config import TrainError
from .data import ImageDataset, find_images, scan_images
from .model import evaluate, load_trained

__all__ = ["add_arguments", "run", "evaluate_folder"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="step-*.pt checkpoint, or a flowkern train --out folder")
    parser.add_argument("folder", help="image folder (PNG / JPEG, recursive)")
    parser.add_argument("--batch", type=int, default=32, help="evaluation batch (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the dequantisation noise (default 0)")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images (counted)")


def evaluate_folder(checkpoint: str, folder: str, batch: int = 32, workers: int = 2, seed: int = 0,
                    skip_bad: bool = False) -> tuple[float, int, int]:
    """(bits/dim, images evaluated, images skipped) of a checkpoint's model on ``folder``.
    A conditional model is evaluated with the labels of the class subfolders."""
    from pathlib import Path

    if batch < 1:
        raise TrainError(f"--batch must be >= 1, got {batch}")
    model, config, state = load_trained(checkpoint)
    root = Path(folder)
    if not root.is_dir():
        raise TrainError(f"FOLDER {folder} does not exist or is not a directory")
    files = find_images(root)
    if not files:
        raise TrainError(f"FOLDER {folder} holds no PNG / JPEG images")
    classes = state["data"]["classes"]
    labels = [0] * len(files)
    if classes:
        names = [f.relative_to(root).parts[0] if len(f.relative_to(root).parts) > 1 else None for f in files]
        unknown = sorted({str(n) for n in names if n not in classes})
        if unknown:
            raise TrainError(f"the model is conditional on classes {classes}; FOLDER {folder} has images outside "
                             f"them (first-level folders / loose files: {unknown})")
        labels = [classes.index(n) for n in names]
    records, bad = scan_images(root, files, labels, config.size, config.fit, skip_bad, max(1, workers))
    ds = ImageDataset(records, config.size, config.channels, config.fit, seed, config.n_bits)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers)
    bpd, n = evaluate(model, loader, torch.device("cpu"), config)
    return bpd, n, len(bad)


def run(args: argparse.Namespace) -> int:
    try:
        bpd, n, skipped = evaluate_folder(args.checkpoint, args.folder, args.batch, args.workers, args.seed,
                                          args.skip_bad)
    except (TrainError, OSError) as e:
        print(f"flowkern eval: error: {e}", file=sys.stderr)
        return 2
    extra = f", {skipped} unreadable skipped" if skipped else ""
    print(f"{args.folder}: {n} images{extra}; bits/dim: {bpd:.5f}")
    return 0
