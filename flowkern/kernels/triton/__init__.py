"""Triton backend of the fused coupling op.

Importing this package does not import triton (``TRITON_INTERPRET`` must be settable
before triton's first import); :mod:`.backend` loads :mod:`.ops` on first use.
"""

from .backend import register, why_unavailable

__all__ = ["register", "why_unavailable"]
