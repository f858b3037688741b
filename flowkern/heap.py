"""glibc heap settings for CPU training loops (opt-in, process-wide).

PyTorch's CPU tensors come from ``malloc``. With glibc's defaults, a block of >= 128 KiB is
mapped on its own (the threshold then adapts upward to the largest block freed, at most
32 MiB) and a free region of more than twice that threshold at the top of the heap is given
back to the system. A training step frees its activations in backward, so the heap top is
given back after every step and the next forward touches fresh pages: the kernel maps and
zero-fills each 4 KiB page on first touch. Measured on the 2-core CI VM: ~2.6 us per page, and
4,400-7,600 such page faults per step of the IIN flow in ``bench/bench_flows.py`` (10-20 ms
of a ~200 ms step).

:func:`keep_freed_memory` raises both thresholds (``mallopt(M_MMAP_THRESHOLD)``,
``mallopt(M_TRIM_THRESHOLD)``), so freed blocks stay in the heap for the next step — what
PyTorch's CPU performance guide gets by swapping in jemalloc or tcmalloc. The price is that the
process keeps its peak heap; :func:`release_freed_memory` (``malloc_trim(0)``) returns the free
part, like ``torch.cuda.empty_cache``. Both are no-ops returning False where the C library is not
glibc.
"""

from __future__ import annotations

import ctypes
import functools
import sys

__all__ = ["MMAP_THRESHOLD_MAX", "keep_freed_memory", "release_freed_memory"]

# glibc's mallopt parameter numbers (malloc.h) and its upper bound for M_MMAP_THRESHOLD on
# 64-bit systems (HEAP_MAX_SIZE / 2); mallopt's value is a C int.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20
_INT_MAX = 2**31 - 1


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None)
    if not all(hasattr(libc, name) for name in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
        return None  # musl and other C libraries: no glibc tunables
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    return libc


def _check_bytes(name: str, value: object, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
        raise ValueError(f"{name} must be an int in [1, {upper}] bytes, got {value!r}")
    return value


def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int = MMAP_THRESHOLD_MAX) -> bool:
    """Serve allocations below ``mmap_threshold`` bytes from the heap and give free heap back to
    the system only beyond ``trim_threshold`` bytes (module docstring). Returns True when glibc
    accepted both settings, False on other C libraries (nothing changed)."""
    trim = _check_bytes("trim_threshold", trim_threshold, _INT_MAX)
    mmap = _check_bytes("mmap_threshold", mmap_threshold, MMAP_THRESHOLD_MAX)
    libc = _glibc()
    if libc is None:
        return False
    return libc.mallopt(_M_MMAP_THRESHOLD, mmap) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, trim) == 1


def release_freed_memory() -> bool:
    """Give the heap's free memory back to the system now (``malloc_trim(0)``); True if glibc
    released any, False if there was none to release or the C library is not glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
