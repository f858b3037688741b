"""The C++ CPU backend's cache of large output blocks (``csrc/cpu/output_cache.h``).

Outputs of >= 8 MiB are recycled instead of being mapped (and zero-filled by the OS page by
page) on every call; at most ``FLOWKERN_CPU_CACHE_MB`` (default 1024) MiB of freed blocks are
held. Like ``torch.cuda.empty_cache``, :func:`empty_cache` returns them to the system.
"""

from __future__ import annotations

import torch

from .. import _extension

__all__ = ["cached_bytes", "empty_cache"]


def cached_bytes() -> int:
    """Bytes of freed output blocks the cache holds (0 without the C++ extension)."""
    return int(torch.ops.flowkern.cpu_output_cache_bytes()) if _extension.load_cpp() else 0


def empty_cache() -> int:
    """Free every cached block; returns the bytes released."""
    return int(torch.ops.flowkern.cpu_output_cache_clear()) if _extension.load_cpp() else 0
