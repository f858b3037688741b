"""Network-to-network translation with conditional INNs (Net2Net); trained by :mod:`flowkern.training`."""

from .net2net import BatchFn, Net2Net

__all__ = ["Net2Net", "BatchFn"]
