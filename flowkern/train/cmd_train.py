"""``flowkern train FOLDER --out DIR ...``: train a Glow / RealNVP on an image folder
(:func:`flowkern.train.run`); ``torchrun --nproc_per_node N -m flowkern train ...`` for many
processes. The last line printed is the final val bits/dim."""

from __future__ import annotations

import argparse
import signal
import sys

from .config import TrainError, add_arguments, config_from_args
from .loop import run as run_training

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    """0 when the run completed, 2 on bad input, 128 + signal number when stopped by SIGTERM / SIGINT
    (after writing its checkpoint)."""
    try:
        result = run_training(config_from_args(args))
    except TrainError as e:
        print(f"flowkern train: error: {e}", file=sys.stderr, flush=True)
        return 2
    if result.stopped_by is not None:
        return 128 + int(getattr(signal, result.stopped_by, signal.SIGTERM))
    return 0
