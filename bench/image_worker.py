"""The image-flow workloads and one measurement of them, run in a fresh process.

    python bench/image_worker.py '{"mode": "step", "impl": "flowkern", "config": {...}, "threads": 2}'

prints one JSON line. The model is normflows' notebook Glow (``examples/image/notebook_glow.py``,
the one builder the image example uses too), its actnorms initialised on one sample; flowkern's
is ``flowkern.compat.convert`` of it (the same weights). ``bench/bench_image.py`` launches this
file once per measurement; ``bench/ab_worker.py`` builds its Glow workloads with
:func:`build_models`. flowkern is imported inside the functions, from wherever ``sys.path``
finds it (``bench/ab.py`` points it at the tree being measured).
"""

from __future__ import annotations

import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "examples" / "image"))
from notebook_glow import notebook_glow  # noqa: E402

__all__ = ["Config", "CONFIGS", "QUICK", "LARGE", "IMPLS", "PER_SAMPLE", "implementation", "build_models", "worker"]

# implementations: normflows, its conversion (standard / memory-saving / under torch.compile)
IMPLS = ("normflows", "flowkern", "flowkern-ms", "flowkern-compile")
PER_SAMPLE = "flowkern-ms-chunk1"  # memory-saving, the batch one sample at a time (memory_saving_chunk=1)
PAIRED = ("normflows", "flowkern", "flowkern-ms")  # the implementations a paired process steps in turn


@dataclass(frozen=True)
class Config:
    """One image workload: the notebook Glow at ``size`` x ``size``, batch and timed steps."""
    name: str
    size: int
    levels: int = 3
    depth: int = 8
    hidden: int = 64
    batch: int = 32
    steps: int = 5
    classes: int = 10
    heap: str = ""  # extra glibc variables ("NAME=value ...") of the timed processes; no memory rows


NO_MMAP = "MALLOC_MMAP_MAX_=0"  # no block with a mapping of its own (docs/cpu-training.md)
LARGE = Config("128x128, K=2, hidden 64", 128, depth=2, hidden=64, batch=32)
CONFIGS = [
    Config("notebook Glow 32x32, hidden 64", 32, hidden=64, batch=32),
    Config("notebook Glow 32x32, hidden 256", 32, hidden=256, batch=32),
    Config("64x64, K=2, hidden 64", 64, depth=2, hidden=64, batch=16),
    LARGE,
    replace(LARGE, name=f"{LARGE.name}, {NO_MMAP}", heap=NO_MMAP),
]
QUICK = [
    Config("quick 16x16, hidden 16", 16, levels=2, depth=2, hidden=16, batch=8, steps=2),
    Config("quick 32x32, hidden 32", 32, levels=2, depth=1, hidden=32, batch=8, steps=2),
]


def implementation(key: str) -> tuple[str, int | None]:
    """The implementation and ``memory_saving_chunk`` behind a table key."""
    return ("flowkern-ms", 1) if key == PER_SAMPLE else (key, None)


def vm_rss(pid: int | str = "self", key: str = "VmRSS") -> int:
    """The process's resident set (``VmRSS``) or its peak (``VmHWM``), in bytes. The peak is read
    here, not from ``ru_maxrss``: that survives ``exec`` and would report the parent's peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def build_models(cfg: Config, impls: list[str], chunk: int | None = None):
    """``({impl: model}, x, y)``: the notebook Glow with its actnorms initialised, one model per
    implementation (flowkern's: ``convert`` of it, the same weights; copies when there are several)
    and the batch (x uniform in [0, 1), y class labels)."""
    import torch

    from flowkern.compat import convert

    peer = notebook_glow(cfg.size, cfg.levels, cfg.depth, cfg.hidden, num_classes=cfg.classes)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=g)
    y = torch.randint(0, cfg.classes, (cfg.batch,), generator=g)
    with torch.no_grad():  # actnorm init (normflows: on the first call), on one sample so that the
        peer.log_prob(x[:1], y[:1])  # init pass adds nothing to the peak RSS of large images
    models = {}
    for impl in impls:
        src = peer if len(impls) == 1 else copy.deepcopy(peer)
        kw = {} if chunk is None else {"memory_saving_chunk": chunk}
        models[impl] = src if impl == "normflows" else convert(src, memory_saving=impl == "flowkern-ms", **kw)
    return models, x, y


def paired(cfg: Config, rounds: int) -> dict:
    """normflows, flowkern and memory-saving in one process, one step each per round in a rotating
    order (after two warm-up rounds): each implementation's step times in ms, round by round."""
    import torch

    models, x, y = build_models(cfg, list(PAIRED))
    steps = {}
    for impl, model in models.items():
        opt = torch.optim.Adam(model.parameters(), lr=1e-5)

        def step(model=model, opt=opt):
            opt.zero_grad(set_to_none=True)
            model.forward_kld(x, y).backward()
            opt.step()

        steps[impl] = step
    times: dict[str, list[float]] = {k: [] for k in PAIRED}
    for r in range(rounds + 2):
        for impl in PAIRED[r % 3:] + PAIRED[:r % 3]:
            t0 = time.perf_counter()
            steps[impl]()
            if r >= 2:
                times[impl].append((time.perf_counter() - t0) * 1e3)
    return {"paired_ms": times}


def conv_floor(cfg: Config) -> dict:
    """Every convolution of the step (each block's 1x1 convolution and its subnet's three),
    forward + grad-input + grad-weight, back to back, NCHW and channels-last; median over rounds."""
    import torch
    import torch.nn.functional as F

    shapes = []  # (channels in, channels out, kernel, spatial)
    C = 3
    for lvl in range(cfg.levels):
        C, S = C * 4, cfg.size // 2 ** (lvl + 1)
        for _ in range(cfg.depth):
            shapes += [(C, C, 1, S), ((C + 1) // 2, cfg.hidden, 3, S), (cfg.hidden, cfg.hidden, 1, S),
                       (cfg.hidden, 2 * (C // 2), 3, S)]
        C //= 2
    g = torch.Generator().manual_seed(0)
    res = {}
    for fmt in ("nchw", "channels_last"):
        mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
        ops = []
        for cin, cout, k, S in shapes:
            x = torch.randn(cfg.batch, cin, S, S, generator=g).contiguous(memory_format=mf)
            w = torch.randn(cout, cin, k, k, generator=g).contiguous(memory_format=mf)
            b = torch.randn(cout, generator=g)
            go = torch.randn(cfg.batch, cout, S, S, generator=g).contiguous(memory_format=mf)
            ops.append((x, w, b, go, k // 2))

        def run(ops=ops):
            for x, w, b, go, p in ops:
                F.conv2d(x, w, b, padding=p)
                torch.ops.aten.convolution_backward(go, x, w, [w.shape[0]], [1, 1], [p, p], [1, 1], False, [0, 0], 1,
                                                    [True, True, True])

        run()
        run()
        times = []
        for _ in range(max(3, cfg.steps)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        res[fmt] = statistics.median(times) * 1e3
    return {"floor_nchw_ms": res["nchw"], "floor_cl_ms": res["channels_last"]}


def worker(job: dict) -> dict:
    """One measurement: ``job['mode']`` 'step' times one implementation's training step, 'memory'
    runs one step for its peak RSS and then counts the bytes saved for backward, 'floor' times the
    convolutions, 'paired' steps three implementations in turn."""
    import torch
    from bench_flows import minor_faults

    from flowkern.check import saved_bytes

    torch.set_num_threads(job["threads"])
    cfg = Config(**job["config"])
    if job["mode"] == "floor":
        return conv_floor(cfg)
    if job["mode"] == "paired":
        return paired(cfg, job["rounds"])
    impl = job["impl"]
    models, x, y = build_models(cfg, [impl], job.get("chunk"))
    model = models[impl]
    loss_fn = torch.compile(model.forward_kld) if impl == "flowkern-compile" else model.forward_kld
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    base_rss = vm_rss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        return loss

    out: dict = {"impl": impl, "config": cfg.name}
    t0 = time.perf_counter()
    loss = step()
    compile_s = time.perf_counter() - t0 if impl == "flowkern-compile" else None
    if job["mode"] == "step":
        step()
        times = []
        faults = minor_faults()
        for _ in range(cfg.steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        faults = (minor_faults() - faults) / cfg.steps
        out.update(step_ms=statistics.median(times) * 1e3, step_ms_min=min(times) * 1e3, compile_s=compile_s,
                   faults_per_step=faults)
    else:  # one step: its peak, then (after the peak was read) the bytes saved for backward
        out.update(base_rss=base_rss, peak_rss=vm_rss(key="VmHWM"))
        if impl != "flowkern-compile" and job.get("saved", True):
            opt.zero_grad(set_to_none=True)
            out["saved_per_sample"] = saved_bytes(lambda: model.forward_kld(x, y)) / cfg.batch
    out["loss"] = float(loss)
    return out


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
