"""flowkern: fused invertible-flow kernels and the interpretation tools built on them."""

from . import backends, ops
from .ops import coupling_forward, coupling_inverse

__version__ = "0.1.0"

__all__ = ["backends", "ops", "coupling_forward", "coupling_inverse", "__version__"]
