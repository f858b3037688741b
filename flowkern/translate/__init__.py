"""Network-to-network translation with conditional INNs (Net2Net)."""

from .net2net import BatchFn, Net2Net

__all__ = ["Net2Net", "BatchFn"]
