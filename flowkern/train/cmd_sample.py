"""``flowkern sample CHECKPOINT --n 64 --temperature 0.7 --out grid.png``: a grid of samples
from a trained model (CHECKPOINT: a ``step-*.pt`` file or a training output folder, whose
newest usable checkpoint is taken)."""

from __future__ import annotations

import argparse
import sys

from .config import TrainError
from .model import draw_samples, load_trained, save_grid

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="step-*.pt checkpoint, or a flowkern train --out folder")
    parser.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    parser.add_argument("--temperature", type=float, default=0.7, help="latent temperature (default 0.7)")
    parser.add_argument("--out", default="samples.png", help="PNG file to write (default samples.png)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the latents (default 0)")
    parser.add_argument("--label", type=int, default=None,
                        help="class index for a conditional model (default: cycle through the classes)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.n < 1:
            raise TrainError(f"--n must be >= 1, got {args.n}")
        if not args.temperature >= 0:
            raise TrainError(f"--temperature must be >= 0, got {args.temperature}")
        model, config, state = load_trained(args.checkpoint)
        classes = state["data"]["classes"]
        if args.label is not None and not 0 <= args.label < max(1, len(classes)):
            raise TrainError(f"--label {args.label}: the model has classes {classes or 'none (unconditional)'}")
        if args.label is not None and not classes:
            raise TrainError("--label needs a conditional model (trained with --conditional)")
        images = draw_samples(model, args.n, args.temperature, args.seed, len(classes), args.label)
        path = save_grid(images, args.out)
    except (TrainError, OSError) as e:
        print(f"flowkern sample: error: {e}", file=sys.stderr)
        return 2
    print(f"{args.n} samples of {args.checkpoint} (step {state['step']}, temperature {args.temperature}) -> {path}")
    return 0
