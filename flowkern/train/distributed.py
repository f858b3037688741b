"""Processes of a training run: one, or many under ``torchrun`` (``WORLD_SIZE`` / ``RANK`` /
``LOCAL_RANK`` in the environment), with the process-group backend chosen by the device (gloo
on the CPU, NCCL on CUDA). Rank 0 checks the input and reads the checkpoint; what it finds (or
the error) is broadcast, so every process stops with the same message instead of hanging.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .config import TrainError

__all__ = ["Processes", "setup", "on_rank0"]


@dataclass
class Processes:
    """This process's place in the run: ``rank`` of ``world_size`` on ``device``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None
    owns_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, obj):
        """``obj`` as rank 0 has it, on every process."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        """Every process's ``obj``, in rank order (on every process)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over the processes."""
        if self.distributed:
            dist.all_reduce(t)
        return t

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Processes:
    """Join the process group ``torchrun`` describes (or an existing one), or run alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainError("--device cuda: no CUDA device is available")
    if cuda:
        if local >= torch.cuda.device_count():
            raise TrainError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) on this node")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if dist.is_available() and dist.is_initialized():
        return Processes(dist.get_rank(), dist.get_world_size(), local, dev, dist.get_backend(), False)
    if world == 1:
        return Processes(0, 1, 0, dev, None, False)
    backend = "nccl" if cuda else "gloo"
    kwargs = {"device_id": dev} if cuda else {}
    dist.init_process_group(backend, **kwargs)
    return Processes(dist.get_rank(), dist.get_world_size(), local, dev, backend, True)


def on_rank0(procs: Processes, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` on rank 0, its result broadcast to every process; a
    :class:`TrainError` it raises is raised on every process with the same message."""
    result = None
    if procs.is_main:
        try:
            result = ("ok", fn(*args, **kwargs))
        except TrainError as e:
            result = ("error", type(e).__name__, str(e))
            if not procs.distributed:
                raise
        except BaseException:
            if procs.distributed:
                procs.broadcast(("error", "RuntimeError", "rank 0 failed (see its traceback)"))
            raise
    result = procs.broadcast(result)
    if result[0] == "error":
        from .checkpoint import CheckpointError

        raise (CheckpointError if result[1] == "CheckpointError" else TrainError)(result[2])
    return result[1]
