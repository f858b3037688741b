"""Network-to-network translation with conditional INNs (Net2Net) and the shared training loop."""

from .net2net import BatchFn, Net2Net
from .training import EpochBatches, LossFn, train_steps

__all__ = ["Net2Net", "BatchFn", "EpochBatches", "LossFn", "train_steps"]
