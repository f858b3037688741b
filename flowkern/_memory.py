"""Give the C heap's free pages back to the operating system.

glibc serves allocations below its mmap threshold (which rises to 32 MiB as large blocks are
freed) from heap arenas that shrink only from the top. When a chunked memory-saving backward
(:func:`flowkern.nn.graph.run_program` with ``chunk``) frees one batch chunk's tensors, their
pages stay resident in the arena's interior holes and count in the process's RSS until
``malloc_trim`` releases them; the next chunk then allocates into fresh pages instead of the
process's peak growing with every chunk's leftover holes. Elsewhere (musl, macOS, Windows)
:func:`release_free_memory` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_memory() -> bool:
    """Return the heap's free pages to the OS (glibc ``malloc_trim(0)``); True if any were."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
