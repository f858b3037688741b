"""Checkpoints that survive a kill: written atomically, verified on read, the last K kept.

File format (``step-00001000.pt``): one header line ``FLOWKERN-CHECKPOINT 1 <length> <sha256>\\n``
followed by ``length`` bytes of :func:`torch.save` output whose SHA-256 is ``sha256``. A file cut
short (the process killed while copying it, a full disk) or altered is reported by name and
reason, and the newest intact one before it is used. The payload is a dict (read with
``torch.load(weights_only=True)``):

``format`` (1), ``step`` (steps done), ``config`` (:class:`~flowkern.train.config.TrainConfig`
as a dict), ``data`` (the data split's fingerprint), ``model``, ``optimizer``, ``scheduler``
(state dicts), ``rng`` (one dict per process: ``torch``, ``cuda``, ``python`` generator states),
``sampler`` (``step``, ``epoch``, ``position`` in the epoch, ``seed``, ``world_size``, and the
``loader_generator`` state), ``metrics`` (the last train / val bits/dim), ``versions``.

Writing: the bytes go to ``.step-N.pt.tmp`` in the same folder, are flushed and fsync'ed, renamed
over ``step-N.pt`` (atomic on POSIX) and the folder is fsync'ed; then all but the newest ``keep``
checkpoints are deleted.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
from pathlib import Path

import torch

from .config import TrainError

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "list_checkpoints", "newest_checkpoint",
           "prune_checkpoints", "checkpoint_name"]

MAGIC = b"FLOWKERN-CHECKPOINT"
VERSION = 1
NAME = re.compile(r"^step-(\d+)\.pt$")


class CheckpointError(TrainError):
    """A checkpoint file that cannot be used: the message names the file and why."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(folder: str | os.PathLike, state: dict, keep: int | None = None) -> Path:
    """Write ``state`` (must hold ``step``) atomically as ``folder/step-N.pt``; keep the newest
    ``keep`` checkpoints. Returns the path."""
    folder = Path(folder)
    buf = io.BytesIO()
    torch.save(state, buf)
    payload = buf.getbuffer()
    header = b"%s %d %d %s\n" % (MAGIC, VERSION, len(payload), hashlib.sha256(payload).hexdigest().encode())
    path = folder / checkpoint_name(int(state["step"]))
    tmp = folder / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(folder)
    if keep is not None:
        prune_checkpoints(folder, keep)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """The payload of one checkpoint file; ``CheckpointError`` naming the file if it is missing,
    not a flowkern checkpoint, truncated or corrupt."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = f.readline(200)
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"checkpoint {path} cannot be read: {e}") from None
    parts = header.split()
    if len(parts) != 4 or parts[0] != MAGIC:
        raise CheckpointError(f"checkpoint {path} is not a flowkern training checkpoint (no "
                              f"{MAGIC.decode()} header; {len(header) + len(data)} bytes)")
    if int(parts[1]) != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {int(parts[1])}, this flowkern reads {VERSION}")
    length = int(parts[2])
    if len(data) != length:
        raise CheckpointError(f"checkpoint {path} is truncated: {len(data)} of {length} payload bytes")
    if hashlib.sha256(data).hexdigest().encode() != parts[3]:
        raise CheckpointError(f"checkpoint {path} is corrupt: its SHA-256 does not match the header")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as e:  # an intact file torch cannot load: report it as unusable
        raise CheckpointError(f"checkpoint {path} cannot be loaded: {type(e).__name__}: {e}") from None


def list_checkpoints(folder: str | os.PathLike) -> list[tuple[int, Path]]:
    """``(step, path)`` of the ``step-N.pt`` files in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), folder / m.group(0)) for m in map(NAME.match, os.listdir(folder)) if m]
    return sorted(found)


def newest_checkpoint(folder: str | os.PathLike, map_location: str | torch.device = "cpu", warn=None
                      ) -> tuple[dict, Path] | None:
    """The newest checkpoint of ``folder`` that reads intact, with its path; each newer one that
    does not is reported through ``warn`` (default: stderr) by name and reason. None if the folder
    has no checkpoints; ``CheckpointError`` listing them if none is usable."""
    warn = warn or (lambda msg: print(msg, file=sys.stderr, flush=True))
    found = list_checkpoints(folder)
    errors = []
    for _, path in reversed(found):
        try:
            return read_checkpoint(path, map_location), path
        except CheckpointError as e:
            errors.append(str(e))
            warn(f"flowkern train: skipping {e}; trying the previous checkpoint")
    if errors:
        raise CheckpointError(f"no usable checkpoint in {folder}: " + "; ".join(errors))
    return None


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints of ``folder`` (and stale temp files)."""
    folder = Path(folder)
    for _, path in list_checkpoints(folder)[:-keep]:
        path.unlink(missing_ok=True)
    for name in os.listdir(folder):
        if name.startswith(".step-") and name.endswith(".pt.tmp"):
            (folder / name).unlink(missing_ok=True)
