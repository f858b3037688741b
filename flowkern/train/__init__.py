"""Train a multi-scale flow (Glow / RealNVP of :mod:`flowkern.nn`) on a folder of images, on one
process or many (``torchrun``), with checkpoints that survive a kill: the library behind
``flowkern train``, ``flowkern sample`` and ``flowkern eval`` (docs/training.md).

::

    from flowkern.train import TrainConfig, run
    result = run(TrainConfig(folder="photos/", out="runs/photos", size=32, steps=2000))
    result.val_bits_per_dim

Modules: :mod:`.config` (settings and flags), :mod:`.data` (images, split, step-indexed
sampler), :mod:`.checkpoint` (atomic, verified files), :mod:`.distributed` (processes),
:mod:`.model` (build / load / evaluate / sample), :mod:`.loop` (the run); the sub-commands in
:mod:`.cmd_train`, :mod:`.cmd_sample`, :mod:`.cmd_eval`. (:mod:`flowkern.training` is the small
in-memory loop of the interpretation layer, unrelated.)
"""

from .checkpoint import CheckpointError, list_checkpoints, newest_checkpoint, read_checkpoint, save_checkpoint
from .config import TrainConfig, TrainError
from .data import ImageDataset, StepSampler, split_dataset
from .loop import TrainResult, run, train_step
from .model import build_model, draw_samples, evaluate, load_trained, save_grid

__all__ = [
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "run",
    "train_step",
    "CheckpointError",
    "save_checkpoint",
    "read_checkpoint",
    "list_checkpoints",
    "newest_checkpoint",
    "split_dataset",
    "ImageDataset",
    "StepSampler",
    "build_model",
    "load_trained",
    "evaluate",
    "draw_samples",
    "save_grid",
]
