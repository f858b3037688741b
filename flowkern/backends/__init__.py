"""Which implementations of the fused coupling op exist, which one runs, and why.

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
    "available",
    "select",
    "get",
    "use",
    "set_default",
    "describe",
]

AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


class BackendUnavailableError(RuntimeError):
    """A backend was forced that is not available for the tensor's device."""


@dataclass(frozen=True)
class Backend:
    """One implementation of the op.

    ``run(input, s_raw, t, a, b, cfg, inverse, check) -> (out, logdet, err)`` with autograd
    (err is (B,) with ``check``, else empty or None); ``t is None`` means ``s_raw`` is a packed
    subnet output h = [s_raw | t]; ``cfg`` is the six config scalars in schema order
    (:attr:`flowkern.spec.CouplingConfig.schema_args`). The backend checks its arguments (the
    compiled ops in C++, the others with :func:`flowkern.spec.check_call`), raising TypeError /
    ValueError naming the argument. ``why_unavailable(device_type)`` is None when the backend can
    run on that device type, else the reason.
    """

    name: str
    run: Callable
    why_unavailable: Callable[[str], str | None]


def _registry() -> dict[str, Backend]:
    from . import compiled, reference, triton

    found = [reference.BACKEND, *compiled.BACKENDS, triton.BACKEND]
    return {b.name: b for b in found}


_REGISTRY: dict[str, Backend] = _registry()
_forced: list[str | None] = [os.environ.get("FLOWKERN_BACKEND") or None]


def get(name: str) -> Backend:
    if name not in _REGISTRY:
        raise ValueError(f"backend must be one of {sorted(_REGISTRY)}, got {name!r}")
    return _REGISTRY[name]


def available(device: str | torch.device = "cpu") -> dict[str, str | None]:
    """Map each backend name to None (can run on ``device``) or the reason it cannot."""
    dev = torch.device(device).type
    return {name: b.why_unavailable(dev) for name, b in sorted(_REGISTRY.items())}


def select(device: torch.device, backend: str | None = None) -> Backend:
    """The backend that runs for a tensor on ``device``: ``backend`` if given, else the forced
    one (:func:`use`, :func:`set_default`), else the first available in :data:`AUTO_ORDER`."""
    name = backend or _forced[-1]
    dev = device.type
    if name is not None:
        chosen = get(name)
        reason = chosen.why_unavailable(dev)
        if reason is not None:
            raise BackendUnavailableError(f"backend {name!r} cannot run on {dev} tensors: {reason}")
        return chosen
    for candidate in AUTO_ORDER.get(dev, ("reference",)):
        chosen = _REGISTRY[candidate]
        if chosen.why_unavailable(dev) is None:
            return chosen
    raise BackendUnavailableError(f"no flowkern backend can run on {dev} tensors")


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
