"""Which implementations of the fused op exist, which one runs, and why.

Default choice per device:

* CPU tensors:  ``cpu`` (C++ extension) → ``reference``
* CUDA tensors: ``cuda`` (CUDA C++ extension) → ``triton`` → ``reference``

``use("name")`` (a context manager) or ``set_default("name")`` forces one backend;
the ``FLOWKERN_BACKEND`` environment variable sets the initial default. Forcing a
backend that cannot run raises :class:`BackendUnavailableError` saying why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "register",
    "available",
    "select",
    "get",
    "use",
    "set_default",
    "describe",
    "choice_cache",
    "forced",
]

AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


class BackendUnavailableError(RuntimeError):
    """A backend was forced that is not available for the tensor's device."""


@dataclass(frozen=True)
class Backend:
    """One implementation of the op.

    forward(x, s_raw, t, a, b, cfg, check) -> (y, logdet[, err]);
    inverse(y, s_raw, t, a, b, cfg) -> (x, logdet). ``why_unavailable(device_type)``
    returns None when the backend can run on that device type, else the reason.
    ``forward_packed(x, h, a, b, cfg, check)`` / ``inverse_packed(y, h, a, b, cfg)`` take the
    packed subnet output h = [s_raw | t]; None means "split h into views and call forward".
    ``forward_packed_grads(grad_y, grad_logdet, x, h, a, b, cfg) -> (grad_x, grad_h, grad_a,
    grad_b)`` is the backward of ``forward_packed`` as a plain call (None: not provided).
    ``checks_args``: the ops check the argument rules themselves, with the messages of
    :mod:`flowkern.ops.spec` (the C++ backends, ``csrc/ops_check.h``).
    """

    name: str
    forward: Callable
    inverse: Callable
    why_unavailable: Callable[[str], str | None]
    forward_packed: Callable | None = None
    inverse_packed: Callable | None = None
    forward_packed_grads: Callable | None = None
    checks_args: bool = False


_REGISTRY: dict[str, Backend] = {}
_forced: list[str | None] = [os.environ.get("FLOWKERN_BACKEND") or None]


_CHOICE: dict[tuple[str | None, str], Backend] = {}  # (name or None, device type) -> backend
_CHOICE_CACHES: list[dict] = [_CHOICE]  # every cache of what select chose; cleared by register


def register(backend: Backend) -> None:
    _REGISTRY[backend.name] = backend
    for cache in _CHOICE_CACHES:
        cache.clear()


def choice_cache() -> dict:
    """A new dict that :func:`register` clears: for callers that cache what :func:`select` chose."""
    cache: dict = {}
    _CHOICE_CACHES.append(cache)
    return cache


def forced() -> str | None:
    """The backend forced by :func:`use` / :func:`set_default` (None: automatic choice)."""
    return _forced[-1]


def get(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def available(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """Map each backend name to None (can run on ``device``) or the reason it cannot."""
    dev = torch.device(device).type
    return {name: b.why_unavailable(dev) for name, b in sorted(_REGISTRY.items())}


def select(device: torch.device, backend: str | None = None) -> Backend:
    """The backend that runs for a tensor on ``device`` (explicit > forced > automatic; a choice
    that succeeded is remembered per (name, device type) until the next :func:`register`: ops
    call this on every call)."""
    name = backend or _forced[-1]
    dev = device.type
    chosen = _CHOICE.get((name, dev))
    if chosen is not None:
        return chosen
    if name is not None:
        chosen = get(name)
        reason = chosen.why_unavailable(dev)
        if reason is not None:
            raise BackendUnavailableError(f"backend {name!r} cannot run on {dev} tensors: {reason}")
    else:
        chosen = next((b for b in map(_REGISTRY.get, AUTO_ORDER.get(dev, ("reference",)))
                       if b is not None and b.why_unavailable(dev) is None), None)
        if chosen is None:
            raise BackendUnavailableError(f"no flowkern backend can run on {dev} tensors")
    _CHOICE[(name, dev)] = chosen
    return chosen


def set_default(name: str | None) -> None:
    """Force ``name`` for every later call (None restores automatic choice)."""
    if name is not None:
        get(name)
    _forced[0] = name


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Force backend ``name`` inside the ``with`` block."""
    get(name)
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def describe() -> str:
    """A human-readable table of backends per device, with reasons."""
    lines = []
    for dev in ("cpu", "cuda"):
        for name, reason in available(dev).items():
            lines.append(f"{dev:5s} {name:10s} {'available' if reason is None else 'unavailable: ' + reason}")
    return "\n".join(lines)
