"""Optional loading of the compiled extensions ``flowkern._C`` (CPU) and ``flowkern._C_cuda``.

Without them flowkern runs on the reference backend; the reason is kept in
:data:`CPP_REASON` / :data:`CUDA_REASON` and said once, as a warning, the first time
a compiled backend would have been chosen.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

__all__ = ["load_cpp", "load_cuda", "cpp_module", "CPP_REASON", "CUDA_REASON", "warn_once"]

_REBUILD = "rebuild with `pip install --no-build-isolation -e .` (or `make install`)"
CPP_REASON: str | None = "not loaded yet"
CUDA_REASON: str | None = "not loaded yet"
_warned: set[str] = set()


def _built_for() -> str | None:
    try:
        from ._build_info import TORCH_VERSION  # written by setup.py
    except ImportError:
        return None
    return TORCH_VERSION


def _try_import(name: str) -> str | None:
    try:
        importlib.import_module(f"flowkern.{name}")
    except ImportError as e:  # missing, or built against another torch
        built = _built_for()
        if built is not None and built != torch.__version__:
            return (f"flowkern.{name} was built for torch {built} but torch {torch.__version__} "
                    f"is installed; {_REBUILD}")
        return f"flowkern.{name} could not be imported ({e}); {_REBUILD}"
    return None


def load_cpp() -> bool:
    """Import ``flowkern._C`` unless ``FLOWKERN_USE_CPP=0``; True when it is loaded."""
    global CPP_REASON
    if os.environ.get("FLOWKERN_USE_CPP", "1") == "0":
        CPP_REASON = "disabled by FLOWKERN_USE_CPP=0"
    else:
        CPP_REASON = _try_import("_C")
    return CPP_REASON is None


def load_cuda() -> bool:
    """Import ``flowkern._C_cuda`` (needs ``_C`` and a CUDA build of torch)."""
    global CUDA_REASON
    if CPP_REASON is not None:
        CUDA_REASON = f"needs the CPU extension, which is unavailable: {CPP_REASON}"
    elif torch.version.cuda is None:
        CUDA_REASON = f"torch {torch.__version__} is a CPU-only build"
    else:
        CUDA_REASON = _try_import("_C_cuda")
    return CUDA_REASON is None


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def cpp_module():
    """The imported ``flowkern._C`` module (call after :func:`load_cpp` returned True)."""
    return importlib.import_module("flowkern._C")
