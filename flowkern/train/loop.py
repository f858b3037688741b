"""The training run behind ``flowkern train``: :func:`run` (a :class:`TrainConfig` in, a
:class:`TrainResult` out) on one process or, under ``torchrun``, on many with
DistributedDataParallel.

One step: this process's share of the global batch (:class:`~flowkern.train.data.StepSampler`),
forward under the optional autocast, loss = mean bits/dim (Theis et al. 2016; the
``n_bits`` discretisation term included), backward (gradients averaged over the processes by
DDP), gradient-norm clip, Adam, warm-up schedule; then the step's global loss and the stop
flag are summed over the processes in one all-reduce, so every process stops at the same step.
Each step re-seeds ``torch`` and ``random`` from ``(seed, step, rank)``: nothing random depends
on a stream a kill would lose.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import signal
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .checkpoint import list_checkpoints, newest_checkpoint, save_checkpoint
from .config import TrainConfig, TrainError, config_differences
from .data import STREAM_GRID, STREAM_STEP, ImageDataset, StepSampler, mix_seed, split_dataset
from .distributed import Processes, on_rank0, setup
from .model import autocast, batch_bits_per_dim, build_model, draw_samples, evaluate, save_grid

__all__ = ["TrainResult", "run", "train_step", "make_optimizer", "make_loader", "check_out"]

SAMPLE_TEMPERATURE = 0.7


@dataclass
class TrainResult:
    """What a run did: ``steps`` done in all (``start_step`` of them before this call),
    ``losses`` (global mean train bits/dim of each step this call ran), the last train and the
    final val bits/dim (None without validation images or when stopped early), the newest
    checkpoint, median images/s, ``stopped_by`` (a signal name) and the image counts."""

    steps: int
    start_step: int
    out: str
    losses: list[float] = field(default_factory=list)
    train_bits_per_dim: float | None = None
    val_bits_per_dim: float | None = None
    checkpoint: str | None = None
    images_per_s: float | None = None
    stopped_by: str | None = None
    n_train: int = 0
    n_val: int = 0
    skipped: int = 0


def check_out(out: str) -> Path:
    """Create ``out`` and prove it writable (``TrainError`` naming ``--out`` if not)."""
    p = Path(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-test-{os.getpid()}"
        probe.write_bytes(b"flowkern")
        probe.unlink()
    except OSError as e:
        raise TrainError(f"--out {out} is not a writable folder: {e.strerror or e}") from None
    return p


def _prepare(config: TrainConfig) -> dict:
    """Rank 0's checks before anything trains: output folder, images, checkpoint to resume."""
    out = check_out(config.out)
    split = split_dataset(config.folder, size=config.size, fit=config.fit, conditional=config.conditional,
                          val_fraction=config.val_fraction, seed=config.seed, skip_bad=config.skip_bad,
                          workers=max(1, min(4, config.workers)), exclude=(config.out,))
    state, path = None, None
    if list_checkpoints(out) and not config.resume:
        raise TrainError(f"--out {out} already holds checkpoints (newest {list_checkpoints(out)[-1][1].name}): "
                         "pass --resume to continue that run, or choose another --out")
    if config.resume:
        found = newest_checkpoint(out)
        if found is not None:
            state, path = found
            diffs = config_differences(state["config"], config.to_dict())
            fp = split.fingerprint()
            diffs += [f"data {k}: checkpoint {state['data'].get(k)!r}, now {v!r}" for k, v in fp.items()
                      if state["data"].get(k) != v]
            if diffs:
                raise TrainError(f"checkpoint {path} comes from a different run; refusing to resume it. "
                                 f"Differing: {'; '.join(diffs)}")
    return {"split": split, "state": state, "path": None if path is None else str(path)}


class _Stop:
    """SIGTERM / SIGINT set a flag the loop reads after each step (a second SIGINT interrupts)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self) -> _Stop:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _Metrics:
    """``metrics.jsonl`` (rank 0): one JSON object per line; a resumed run first drops the lines
    of steps after its checkpoint (written by the run that was killed)."""

    def __init__(self, path: Path, start_step: int) -> None:
        self.path = path
        kept = []
        if start_step > 0 and path.exists():
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= start_step:
                        kept.append(line)
                except (ValueError, KeyError, TypeError):
                    pass  # a line cut short by the kill
        path.write_text("".join(k + "\n" for k in kept))

    def write(self, **record) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def _peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    # VmHWM is this process's own peak; ru_maxrss survives fork + exec and reports a larger parent's
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rng_state(device: torch.device) -> dict:
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched, x: torch.Tensor, c: torch.Tensor | None,
               config: TrainConfig, device: torch.device) -> torch.Tensor:
    """One optimisation step on this process's batch; returns the batch's mean bits/dim (a
    detached scalar, not synchronised). ``model`` may be the DDP wrapper."""
    x = x.to(device, non_blocking=True)
    c = None if c is None else c.to(device, non_blocking=True)
    with autocast(config, device):
        out = model(x, c)
    loss = batch_bits_per_dim(out, math.prod(x.shape[1:]), config.n_bits)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if config.clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
    opt.step()
    sched.step()
    return loss.detach()


def make_optimizer(model: torch.nn.Module, config: TrainConfig):
    """Adam at ``config.lr`` with a linear warm-up over ``config.warmup`` steps."""
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    warm = config.warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
    return opt, sched


def _worker_ignores_stop_signals(worker_id: int) -> None:
    """A preemption's SIGTERM (or Ctrl-C's SIGINT) reaches the whole process group: the workers
    keep serving the step in flight, the main process checkpoints and then ends them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_loader(dataset: ImageDataset, sampler, config: TrainConfig, device: torch.device,
                generator: torch.Generator | None = None, batch_size: int | None = None,
                workers: int | None = None) -> DataLoader:
    """The DataLoader of a run: ``config.workers`` worker processes (which ignore SIGTERM /
    SIGINT), ``sampler.local`` images per batch, pinned memory on CUDA."""
    workers = config.workers if workers is None else workers
    return DataLoader(dataset, batch_size=batch_size or sampler.local, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", generator=generator,
                      prefetch_factor=2 if workers else None,
                      worker_init_fn=_worker_ignores_stop_signals if workers else None)


def run(config: TrainConfig) -> TrainResult:
    """Train ``config``'s flow on ``config.folder`` (module docstring); under ``torchrun`` every
    process calls this. Raises :class:`TrainError` for bad input, before training starts."""
    config = config.checked()
    procs = setup(config.device)
    try:
        if config.batch < procs.world_size or config.batch % procs.world_size:
            raise TrainError(f"--batch {config.batch} must be a multiple of the process count {procs.world_size} "
                             "(it is the global batch: each process takes --batch / processes images per step)")
        prep = on_rank0(procs, _prepare, config)
        with _Stop() as stop:
            return _train(config, procs, prep, stop)
    finally:
        procs.close()


def _say(procs: Processes, msg: str) -> None:
    if procs.is_main:
        print(msg, flush=True)


def _train(config: TrainConfig, procs: Processes, prep: dict, stop: _Stop) -> TrainResult:
    from tqdm import tqdm

    split, state, device = prep["split"], prep["state"], procs.device
    classes = split.classes
    out = Path(config.out)
    model = build_model(config, len(classes)).to(device)
    opt, sched = make_optimizer(model, config)
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
        rngs = state["rng"]
        _set_rng_state(rngs[procs.rank] if procs.rank < len(rngs) else rngs[0], device)
        if len(rngs) != procs.world_size:
            _say(procs, f"note: the checkpoint was written by {len(rngs)} process(es), this run has "
                        f"{procs.world_size}: the batches are the same, the gradient sums' rounding may differ")
    net = model
    if procs.distributed:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    result = TrainResult(steps=start, start_step=start, out=str(out), checkpoint=prep["path"],
                         n_train=len(split.train), n_val=len(split.val), skipped=len(split.skipped))
    n_params = sum(p.numel() for p in model.parameters())
    _say(procs, f"flowkern train: {len(split.train)} training / {len(split.val)} val images of {config.folder} "
                f"(split: {split.how})" + (f", {len(classes)} classes {classes}" if classes else "")
         + (f"; skipped {len(split.skipped)} unreadable: " + ", ".join(r for r, _ in split.skipped[:10])
            if split.skipped else ""))
    _say(procs, f"model {config.model} ({config.channels}, {config.size}, {config.size}), levels {config.levels}, "
                f"depth {config.depth}, hidden {config.hidden}, {n_params:,} parameters"
                f"{', memory-saving' if config.memory_saving else ''}; {procs.world_size} process(es) on {device}"
                f"{f' ({procs.backend})' if procs.backend else ''}; "
                + (f"resuming from {prep['path']} at step {start}" if state is not None else "from step 0"))
    if start >= config.steps:
        _say(procs, f"the checkpoint is at step {start} >= --steps {config.steps}: nothing to train")

    train_ds = ImageDataset(split.train, config.size, config.channels, config.fit, config.seed, config.n_bits,
                            config.image_cache)
    val_ds = ImageDataset(split.val, config.size, config.channels, config.fit, config.seed, config.n_bits,
                          config.image_cache)
    sampler = StepSampler(train_ds, config.batch, num_replicas=procs.world_size, rank=procs.rank, seed=config.seed,
                          start_step=start, end_step=config.steps)
    loader_gen = torch.Generator().manual_seed(mix_seed(config.seed, STREAM_STEP, start, -1))
    loader_gen_state = loader_gen.get_state()
    cuda = device.type == "cuda"
    loader = make_loader(train_ds, sampler, config, device, loader_gen)
    val_loader = make_loader(val_ds, list(range(procs.rank, len(val_ds), procs.world_size)), config, device,
                             batch_size=sampler.local, workers=min(config.workers, 1))
    metrics = _Metrics(out / "metrics.jsonl", start) if procs.is_main else None
    val_every = config.val_every or config.checkpoint_every
    num_dims = config.channels * config.size ** 2

    def validate(step: int) -> float | None:
        if not len(val_ds):
            return None
        bpd, n = evaluate(model, val_loader, device, config, procs)
        if metrics:
            metrics.write(step=step, split="val", bits_per_dim=bpd, images=n)
        return bpd

    def checkpoint(step: int, train_bpd: float | None, val_bpd: float | None) -> str | None:
        rngs = procs.gather(_rng_state(device))
        if not procs.is_main:
            return None
        epoch, position = divmod(step * config.batch, len(train_ds))
        payload = {
            "format": 1, "step": step, "config": config.to_dict(), "data": split.fingerprint(),
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": rngs,
            "sampler": {"step": step, "epoch": epoch, "position": position, "seed": config.seed,
                        "world_size": procs.world_size, "loader_generator": loader_gen_state},
            "metrics": {"train_bits_per_dim": train_bpd, "val_bits_per_dim": val_bpd},
            "versions": {"torch": str(torch.__version__)},
        }
        return str(save_checkpoint(out, payload, keep=config.keep))

    bar = tqdm(total=config.steps, initial=start, desc="train", unit="step", dynamic_ncols=True,
               disable=not (procs.is_main and config.progress), file=sys.stderr)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rates, done, train_bpd, val_bpd, saved_at = [], start, None, None, start
    model.train()
    t_prev = time.perf_counter()
    batches = iter(loader)
    for step in range(start, config.steps):
        x, labels = next(batches)
        t_data = time.perf_counter()
        torch.manual_seed(mix_seed(config.seed, STREAM_STEP, step, procs.rank))
        random.seed(mix_seed(config.seed, STREAM_STEP, step, procs.rank))
        loss = train_step(net, opt, sched, x, labels if classes else None, config, device)
        stats = torch.stack([loss.double(), torch.tensor(float(stop.signum is not None), dtype=torch.float64,
                                                         device=loss.device)])
        stats = procs.sum_(stats).tolist()
        done, train_bpd = step + 1, stats[0] / procs.world_size
        t = time.perf_counter()
        step_time, t_prev_data = t - t_prev, t_data - t_prev
        if not math.isfinite(train_bpd):
            raise TrainError(f"the training loss is not finite at step {done} (bits/dim {train_bpd}): lower --lr, "
                             f"lengthen --warmup or lower --clip; newest checkpoint: {result.checkpoint}")
        result.losses.append(train_bpd)
        rates.append(config.batch / step_time)
        bar.update(1)
        bar.set_postfix(bpd=f"{train_bpd:.4f}", refresh=False)
        if metrics and (done % config.log_every == 0 or done == config.steps):
            metrics.write(step=done, split="train", bits_per_dim=train_bpd, lr=sched.get_last_lr()[0],
                          step_time_s=step_time, data_wait_s=t_prev_data, images_per_s=config.batch / step_time,
                          peak_memory_mib=_peak_memory_mib(device), processes=procs.world_size)
        if procs.is_main and config.sample_every and done % config.sample_every == 0:
            grid = draw_samples(model, config.sample_n, SAMPLE_TEMPERATURE, mix_seed(config.seed, STREAM_GRID, done),
                                len(classes))
            save_grid(grid, out / f"samples-{done:08d}.png")
        stopping = stats[1] > 0
        if done % val_every == 0 and done < config.steps and not stopping:
            val_bpd = validate(done)
        if stopping or done % config.checkpoint_every == 0 or done == config.steps:
            result.checkpoint = procs.broadcast(checkpoint(done, train_bpd, val_bpd))
            saved_at = done
        if stopping:
            name = signal.Signals(stop.signum).name if stop.signum else "a signal on another process"
            result.stopped_by = name
            _say(procs, f"\nstopped by {name} after step {done}: checkpoint {result.checkpoint} "
                        "(continue with --resume)")
            break
        t_prev = time.perf_counter()
    bar.close()
    del batches
    result.steps, result.train_bits_per_dim = done, train_bpd
    result.images_per_s = statistics.median(rates) if rates else None
    if result.stopped_by is None:
        if saved_at != done:
            result.checkpoint = procs.broadcast(checkpoint(done, train_bpd, val_bpd))
        result.val_bits_per_dim = validate(done)
        if procs.is_main:
            if result.val_bits_per_dim is not None:
                print(f"step {done}: train bits/dim {train_bpd if train_bpd is not None else float('nan'):.5f}; "
                      f"checkpoint {result.checkpoint}")
                print(f"final val bits/dim ({len(val_ds)} images): {result.val_bits_per_dim:.5f}", flush=True)
            else:
                print(f"checkpoint {result.checkpoint}")
                print("no validation images (--val-fraction 0, no val/ folder); final train bits/dim: "
                      f"{train_bpd if train_bpd is not None else float('nan'):.5f}", flush=True)
    return result
