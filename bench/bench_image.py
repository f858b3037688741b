"""Multi-scale image flows: one Glow training step (forward + backward + Adam) of normflows'
notebook Glow beside its flowkern conversion — standard, memory-saving and under
``torch.compile`` — with the same architecture and the same weights, on CPU in float32.

Model: normflows' ``examples/glow.ipynb`` Glow (L levels of K ``GlowBlock`` s and a ``Squeeze``,
``Merge`` between levels, ``ClassCondDiagGaussian`` bases over 10 classes), its actnorms
initialised on one sample; flowkern's is ``flowkern.compat.convert`` of it (the same weights).
Every implementation steps with ``torch.optim.Adam``.

Each measurement runs in a fresh subprocess (one at a time). A process's step time is the median
over its timed steps after two warm-up steps, in the environment ``make bench`` sets, and its page
faults per step the minor faults (``getrusage``) of those steps over their number; each
implementation runs in ``--rounds`` processes (default 3), alternating with the others in a
seeded random order per round, and a cell is the median over its processes. The machine's speed
drifts between processes and between seconds (a shared VM), so each configuration also runs
``--rounds`` *paired* processes: normflows, flowkern and memory-saving (copies of the same
weights) take one step each per round, in an order rotating every round, for 3 x steps rounds
after two warm-up rounds; a round's ratio is normflows' (or memory-saving's) step time over
flowkern's in that round, and the paired table gives the median and quartiles over the rounds
of all paired processes. The paired processes run twice per configuration: in ``make bench``'s
environment and under glibc's default heap (``MALLOC_*`` and ``GLIBC_TUNABLES`` removed, as a user who
has not read the README's "CPU training" note runs normflows), and the speed targets are judged
on these, per heap; the three models share one heap there, so the absolute times are the
separate processes'. Memory is measured
by separate one-step processes under glibc's default heap for every implementation (the
``MALLOC_*`` variables of the README's "CPU training" note, and ``GLIBC_TUNABLES``, are removed: their 1 GiB trim
threshold keeps freed heap resident and would measure the setting, not the model): ``peak RSS``
is the process's ``VmHWM``; ``step RSS`` subtracts the RSS after the model, the optimizer and
the batch were built (the interpreter and torch alone are about 0.5 GiB). Bytes saved for
backward: tensors packed by autograd during the forward + loss
(:func:`flowkern.check.saved_bytes`: each saved storage once, whole), per sample.

Conv floor: every convolution of the step — each block's 1x1 convolution and its subnet's three
convolutions — forward, grad-input and grad-weight, on tensors of the step's shapes, run back to
back: what the step costs if everything but the convolutions were free; timed NCHW (as
normflows runs them) and channels-last (as flowkern's subnets run on CPU). The memory-saving
step re-runs the subnets' forward, a third of the floor: the bound beside its ratio is
``1 + conv_floor / 3 / standard step``.

The last row repeats the 128x128 configuration with ``MALLOC_MMAP_MAX_=0`` added to the timed
processes' environment (why: the note :func:`table` prints under the step table); glibc then
serves its 32 MiB blocks from the heap, which grows towards the trim threshold instead (freed
large blocks are reused poorly for aligned allocations).

Peak RSS with the batch: the 128x128 configuration at batches 32 to 256, normflows beside
memory-saving one sample at a time, one step per fresh process. The process before the step
(about 0.7 GiB, of which ``import torch`` alone is 0.5 GiB) is in both peaks, so the whole-process
ratio falls towards the step-RSS ratio only as the batch grows.

Largest resolution at batch 8 within the memory budget (8 GiB): square images, sides multiple of
32; each size is one training step in a fresh subprocess whose RSS is watched (and the process
killed above the budget); normflows' size is searched, flowkern's memory-saving mode
(``memory_saving_chunk=1``) is tried at four times normflows' side.

Run ``python bench/bench_image.py [--quick]``; ``main(argv)`` is the entry point.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ab import default_heap_env  # the default-heap rule (ab.py: stdlib only)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

__all__ = ["Config", "CONFIGS", "QUICK", "main"]

GIB = 2 ** 30
IMPLS = ("normflows", "flowkern", "flowkern-ms", "flowkern-compile")
CHUNK1 = "flowkern-ms-chunk1"  # memory-saving one sample at a time (memory_saving_chunk=1), at 128x128 and up
MEMORY_KEYS = ("normflows", "flowkern", "flowkern-ms", CHUNK1)
PAIRED = ("normflows", "flowkern", "flowkern-ms")  # stepping in turn in one process (module docstring)
DEFAULT_HEAP = "glibc default heap"  # the paired processes run in make bench's environment and without it
HEAPS = ("make bench heap", DEFAULT_HEAP)


def _impl_chunk(key: str) -> tuple[str, int | None]:
    """The worker's implementation and ``memory_saving_chunk`` behind a table key."""
    return ("flowkern-ms", 1) if key == CHUNK1 else (key, None)


@dataclass(frozen=True)
class Config:
    name: str
    size: int
    levels: int = 3
    depth: int = 8
    hidden: int = 64
    batch: int = 32
    steps: int = 5
    classes: int = 10
    heap: str = ""  # extra glibc variables ("NAME=value ...") of the timed processes; no memory rows


NO_MMAP = "MALLOC_MMAP_MAX_=0"  # the 128x128 row again, no block with a mapping of its own (module docstring)


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
# peak RSS with the batch: the 128x128 configuration from its table batch up (quick: the last quick one)
BATCHES = (LARGE, (32, 64, 128, 256))
QUICK_BATCHES = (QUICK[-1], (4, 8))


# ---- the worker: one measurement in a fresh process ------------------------------------------------
def _vm_rss(pid: int | str = "self", key: str = "VmRSS") -> int:
    """The process's resident set (``VmRSS``) or its peak (``VmHWM``), in bytes. The peak is read
    here, not from ``ru_maxrss``: that survives ``exec`` and would report the parent's peak."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def notebook_glow(cfg: Config):
    import normflows as nf
    import torch

    L, C, S = cfg.levels, 3, cfg.size
    torch.manual_seed(0)
    q0, merges, flows = [], [], []
    for i in range(L):
        level = [nf.flows.GlowBlock(C * 2 ** (L + 1 - i), cfg.hidden, split_mode="channel", scale=True)
                 for _ in range(cfg.depth)]
        flows.append(level + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (C * 2 ** (L - i), S // 2 ** (L - i), S // 2 ** (L - i))
        else:
            latent = (C * 2 ** (L + 1), S // 2 ** L, S // 2 ** L)
        q0.append(nf.distributions.ClassCondDiagGaussian(latent, cfg.classes))
    return nf.MultiscaleFlow(q0, flows, merges)


def _setup(cfg: Config, impls: list[str], chunk: int | None = None):
    """``({impl: model}, x, y)``: normflows' notebook Glow with its actnorms initialised, one model per
    implementation (flowkern's: ``convert`` of it, the same weights; copies when there are several)
    and the batch."""
    import copy

    import torch

    from flowkern.compat import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # normflows' LU init calls the deprecated torch.lu
        peer = notebook_glow(cfg)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=g)
    y = torch.randint(0, cfg.classes, (cfg.batch,), generator=g)
    with torch.no_grad():  # actnorm init (normflows: on the first call), on one sample so that the
        peer.log_prob(x[:1], y[:1])  # init pass adds nothing to the peak RSS of large images
    models = {}
    for impl in impls:
        src = peer if len(impls) == 1 else copy.deepcopy(peer)
        models[impl] = src if impl == "normflows" else \
            convert(src, memory_saving=impl == "flowkern-ms", memory_saving_chunk=chunk)
    return models, x, y


def paired(cfg: Config, rounds: int) -> dict:
    """normflows, flowkern and memory-saving in one process, one step each per round in a rotating
    order (after two warm-up rounds): each implementation's step times, round by round."""
    import torch

    models, x, y = _setup(cfg, list(PAIRED))
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


def worker(job: dict) -> dict:
    """One implementation on one config (``job['mode']``: 'step' times the step, 'memory' runs one
    step for its peak RSS and then counts the bytes saved for backward, 'floor' times the convs,
    'paired' steps three implementations in turn)."""
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
    models, x, y = _setup(cfg, [impl], job.get("chunk"))
    model = models[impl]
    loss_fn = model.forward_kld
    compile_s = None
    if impl == "flowkern-compile":
        loss_fn = torch.compile(model.forward_kld)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    base_rss = _vm_rss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        return loss

    out: dict = {"impl": impl, "config": cfg.name}
    t0 = time.perf_counter()
    loss = step()
    first = time.perf_counter() - t0
    if impl == "flowkern-compile":
        compile_s = first
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
        out.update(base_rss=base_rss, peak_rss=_vm_rss(key="VmHWM"))
        if impl != "flowkern-compile" and job.get("saved", True):
            opt.zero_grad(set_to_none=True)
            out["saved_per_sample"] = saved_bytes(lambda: model.forward_kld(x, y)) / cfg.batch
    out["loss"] = float(loss)
    return out


def conv_floor(cfg: Config) -> dict:
    """Every convolution of the step, forward + grad-input + grad-weight, back to back (NCHW and
    channels-last), median over rounds."""
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


# ---- the driver ----------------------------------------------------------------------------------
def _launch(job: dict, budget: int | None = None, timeout: float = 1800.0) -> dict:
    """Run :func:`worker` in a fresh process; with ``budget`` kill it when its RSS passes the budget."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    env = None
    if job.get("mode") == "memory" or job.get("default_heap"):  # glibc's default heap (module docstring)
        env = default_heap_env()
    elif job["config"].get("heap"):
        env = dict(os.environ, **dict(a.split("=", 1) for a in job["config"]["heap"].split()))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    watched, killed, t0 = 0, False, time.time()
    while proc.poll() is None:
        try:
            watched = max(watched, _vm_rss(proc.pid))
        except (FileNotFoundError, ProcessLookupError):
            pass
        if budget is not None and watched > budget:
            proc.kill()
            killed = True
            break
        if time.time() - t0 > timeout:
            proc.kill()
            return {"error": f"timeout after {timeout:.0f} s", "watched_rss": watched}
        time.sleep(0.02)
    stdout, stderr = proc.communicate()
    if killed:
        return {"over_budget": True, "watched_rss": watched}
    if proc.returncode != 0:
        return {"error": (stderr or stdout).strip().splitlines()[-1] if (stderr or stdout).strip() else
                f"exit {proc.returncode}", "watched_rss": watched}
    out = json.loads(stdout.strip().splitlines()[-1])
    out["watched_rss"] = watched
    return out


def _fmt_ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _fmt_ratio(summary: dict | None) -> str:
    return "-" if summary is None else f"{summary['median']:.2f}x ({summary['q1']:.2f}-{summary['q3']:.2f})"


def _fmt_step_rss(m: dict) -> str:
    """A memory run's peak RSS above its RSS after the build."""
    return _fmt_bytes(m["peak_rss"] - m["base_rss"]) if "peak_rss" in m else "-"


def _fmt_bytes(v) -> str:
    if v is None:
        return "-"
    for unit, n in (("GiB", GIB), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if v >= n:
            return f"{v / n:.2f} {unit}"
    return f"{v:.0f} B"


def _median_run(runs: list[dict]) -> dict:
    """The rounds of one implementation: median step and compile times; the first error if any failed."""
    ok = [r for r in runs if "step_ms" in r]
    if not ok:
        return runs[0]
    out = {"step_ms": statistics.median(r["step_ms"] for r in ok), "rounds": [r["step_ms"] for r in ok],
           "faults_per_step": statistics.median(r["faults_per_step"] for r in ok)}
    compiles = [r["compile_s"] for r in ok if r.get("compile_s") is not None]
    out["compile_s"] = statistics.median(compiles) if compiles else None
    return out


def _ratios(run: dict, over: str = "normflows") -> tuple[float, list[float]]:
    """One paired process: the median over rounds of ``over``'s step / flowkern's step, and the
    per-round ratios."""
    t = run["paired_ms"]
    per = [a / b for a, b in zip(t[over], t["flowkern"])]
    return statistics.median(per), per


def _paired_summary(runs: list[dict], over: str) -> dict | None:
    """Pooled rounds of the paired processes: median and quartiles of the per-round ratios, and the
    per-process medians."""
    ok = [r for r in runs if "paired_ms" in r]
    if not ok:
        return None
    per_run = [_ratios(r, over) for r in ok]
    pooled = [v for _, per in per_run for v in per]
    q1, _, q3 = statistics.quantiles(pooled, n=4) if len(pooled) > 1 else pooled * 3
    return {"median": statistics.median(pooled), "q1": q1, "q3": q3, "n": len(pooled),
            "per_process": [median for median, _ in per_run]}


def _verdicts(paired: dict, separate: float | None, ok) -> str:
    """One target line's measurements: the paired ratio per heap with its verdict (``ok(median)``),
    then the separate processes' ratio (which judges only when there is no paired one)."""
    parts = [f"{_fmt_ratio(summary)} paired, {heap} ({'met' if ok(summary['median']) else 'MISSED'})"
             for heap, summary in paired.items()]
    sep = "-" if separate is None else f"{separate:.2f}x"
    if parts:
        return "; ".join(parts) + f"; {sep} from separate processes"
    return f"{sep} from separate processes ({'met' if separate is not None and ok(separate) else 'MISSED'})"


def largest_trainable(cfg: Config, impl: str, budget: int, threads: int, sizes: list[int], chunk: int | None,
                      log) -> tuple[int | None, dict]:
    """The largest side in ``sizes`` (ascending) whose batch-8 step stays within ``budget``
    (first a doubling search, then bisection between the last pass and the first failure)."""
    results: dict[int, dict] = {}

    def fits(side: int) -> bool:
        if side not in results:
            job = dict(config=asdict(replace(cfg, size=side, batch=8, steps=1)), impl=impl, mode="memory",
                       threads=threads, chunk=chunk, saved=False)
            r = _launch(job, budget, timeout=3600)
            results[side] = r
            log(f"    {impl} {side}x{side}: " + ("over budget" if r.get("over_budget") else r.get("error") or
                                               f"peak RSS {_fmt_bytes(r['peak_rss'])}"))
        r = results[side]
        return not r.get("over_budget") and "error" not in r and r["peak_rss"] <= budget

    lo, hi = None, None
    i = 0
    while i < len(sizes):
        if fits(sizes[i]):
            lo, i = i, (2 * i + 1 if i else 1)
        else:
            hi = i
            break
    if lo is None:
        return None, results
    hi = len(sizes) if hi is None else hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(sizes[mid]):
            lo = mid
        else:
            hi = mid
    return sizes[lo], results


def run(args) -> dict:
    configs = QUICK if args.quick else CONFIGS
    log = (lambda s: print(s, file=sys.stderr, flush=True))
    res: dict = {"threads": args.threads, "steps": {}, "memory": {}, "floor": {}, "growth": {}, "batch": {}, "budget": {},
                 "paired": {}}
    for cfg in configs:
        log(f"{cfg.name}")
        res["floor"][cfg.name] = _launch(dict(config=asdict(cfg), mode="floor", threads=args.threads))
        big = [CHUNK1] if cfg.size >= 128 else []
        keys = [i for i in IMPLS if not (i == "flowkern-compile" and args.no_compile)] + big
        runs: dict[str, list[dict]] = {k: [] for k in keys}
        rng = random.Random(cfg.name)
        for rnd in range(args.rounds):  # fresh processes alternate, in a seeded random order per round
            for key in rng.sample(keys, len(keys)):
                impl, chunk = _impl_chunk(key)
                r = _launch(dict(config=asdict(cfg), impl=impl, mode="step", threads=args.threads, chunk=chunk))
                runs[key].append(r)
                log(f"  round {rnd + 1} {key}: {_fmt_ms(r.get('step_ms'))} ms {r.get('error', '')}")
        for key, rs in runs.items():
            res["steps"][cfg.name, key] = _median_run(rs)
        for heap in HEAPS[:1 if cfg.heap else None]:  # the glibc-default row only for the make-bench heap
            res["paired"][cfg.name, heap] = [
                _launch(dict(config=asdict(cfg), mode="paired", threads=args.threads, rounds=3 * cfg.steps,
                             default_heap=heap == DEFAULT_HEAP)) for _ in range(args.rounds)]
            log(f"  paired ({heap}): " + ", ".join(f"{_ratios(r)[0]:.2f}x" if "paired_ms" in r else r.get("error", "?")
                                                   for r in res["paired"][cfg.name, heap]))
        for key in ([k for k in MEMORY_KEYS if k != CHUNK1] + big) * (not cfg.heap):
            impl, chunk = _impl_chunk(key)
            r = _launch(dict(config=asdict(replace(cfg, steps=1)), impl=impl, mode="memory", threads=args.threads,
                             chunk=chunk))
            res["memory"][cfg.name, key] = r
            log(f"  {key}: peak RSS {_fmt_bytes(r.get('peak_rss'))} {r.get('error', '')}")
    # growth with K, with resolution, with levels: saved bytes per sample and peak RSS (one step)
    base = Config("growth", 32, depth=2, hidden=64, batch=8, steps=1) if not args.quick else \
        Config("growth", 16, levels=2, depth=1, hidden=16, batch=4, steps=1)
    grid = {"K": [(replace(base, depth=k), k) for k in ((2, 4, 8) if not args.quick else (1, 2))],
            "resolution": [(replace(base, size=s), s) for s in ((32, 64, 128) if not args.quick else (16, 32))],
            "levels": [(replace(base, size=64 if not args.quick else 32, levels=lv), lv)
                       for lv in ((2, 3, 4) if not args.quick else (2, 3))]}
    for axis, cases in grid.items():
        for cfg, value in cases:
            for impl in ("normflows", "flowkern-ms"):
                r = _launch(dict(config=asdict(cfg), impl=impl, mode="memory", threads=args.threads))
                res["growth"][axis, value, impl] = r
                log(f"  growth {axis}={value} {impl}: saved/sample {_fmt_bytes(r.get('saved_per_sample'))}, "
                    f"peak RSS {_fmt_bytes(r.get('peak_rss'))}")
    cfg, batches = QUICK_BATCHES if args.quick else BATCHES
    for b in batches:
        for key in ("normflows", CHUNK1):
            impl, chunk = _impl_chunk(key)
            r = _launch(dict(config=asdict(replace(cfg, batch=b, steps=1)), impl=impl, mode="memory",
                             threads=args.threads, chunk=chunk, saved=False))
            res["batch"][b, key] = r
            log(f"  batch {b} {key}: peak RSS {_fmt_bytes(r.get('peak_rss'))} {r.get('error', '')}")
    if not args.skip_budget:
        budget = int(args.budget_gib * GIB)
        cfg = configs[0]
        sizes = list(range(32, 4097, 32)) if not args.quick else list(range(32, 1025, 32))
        log(f"largest trainable side at batch 8 within {args.budget_gib:g} GiB ({cfg.name} architecture)")
        nf_side, nf_res = largest_trainable(cfg, "normflows", budget, args.threads, sizes, None, log)
        res["budget"]["normflows"] = (nf_side, nf_res)
        fk_res: dict = {}
        fk_side = None
        if nf_side:
            target = 4 * nf_side  # tried first; below it only if it does not fit
            fk_side, fk_res = largest_trainable(cfg, "flowkern-ms", budget, args.threads, [target], 1, log)
            if fk_side is None:
                fk_side, more = largest_trainable(cfg, "flowkern-ms", budget, args.threads,
                                                  [s for s in sizes if nf_side <= s < target], 1, log)
                fk_res.update(more)
        res["budget"]["flowkern-ms"] = (fk_side, fk_res)
    return res


def table(res: dict, args) -> str:
    configs = QUICK if args.quick else CONFIGS
    lines = [f"### Glow training step (normflows notebook Glow and its flowkern conversion), CPU float32, "
             f"{res['threads']} threads, median of {args.rounds} alternating processes each", "",
             "| config | normflows ms | flowkern ms | speedup | memory-saving ms | ms / std | bound 1+floor/3/std "
             "| torch.compile ms (compile s) | conv floor NCHW / CL ms | page faults / step: normflows / flowkern "
             "/ memory-saving |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    targets, paired_rows = [], []
    for cfg in configs:
        s = {impl: res["steps"].get((cfg.name, impl), {}) for impl in IMPLS}
        fl = res["floor"].get(cfg.name, {})
        nf, fk, ms, cp = (s[i].get("step_ms") for i in IMPLS)
        speed = nf / fk if nf and fk else None
        ratio = ms / fk if ms and fk else None
        bound = 1 + fl.get("floor_cl_ms", 0) / 3 / fk if fk and fl.get("floor_cl_ms") else None
        cs = s["flowkern-compile"].get("compile_s")
        lines.append(f"| {cfg.name} (B={cfg.batch}, L={cfg.levels}, K={cfg.depth}) | {_fmt_ms(nf)} | {_fmt_ms(fk)} | "
                     f"{'-' if speed is None else f'{speed:.2f}x'} | {_fmt_ms(ms)} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | {'-' if bound is None else f'{bound:.2f}x'} | "
                     f"{_fmt_ms(cp)} ({'-' if cs is None else f'{cs:.0f}'}) | "
                     f"{_fmt_ms(fl.get('floor_nchw_ms'))} / {_fmt_ms(fl.get('floor_cl_ms'))} | "
                     + " / ".join("-" if s[i].get("faults_per_step") is None else f"{s[i]['faults_per_step']:.0f}"
                                  for i in IMPLS[:3]) + " |")
        paired = {}  # heap -> (normflows / flowkern, memory-saving / flowkern) summaries
        for heap in HEAPS:
            runs = res["paired"].get((cfg.name, heap), [])
            if (pn := _paired_summary(runs, "normflows")) is not None:
                paired[heap] = (pn, _paired_summary(runs, "flowkern-ms"))
        for heap, (pn, pm) in paired.items():
            paired_rows.append(f"| {cfg.name} | {heap} | {_fmt_ratio(pn)} | {_fmt_ratio(pm)} | "
                               + ", ".join(f"{v:.2f}" for v in pn["per_process"]) + f" | {pn['n']} |")
        small = cfg.hidden <= 64
        if speed is not None or paired:  # verdicts on the paired ratios where there are some
            goal = 1.25 if small else 1.0
            targets.append(f"standard step vs normflows at {cfg.name}: "
                           + _verdicts({h: pn for h, (pn, _) in paired.items()}, speed, lambda v: v >= goal)
                           + f"; target {'>= 1.25x (small hidden width)' if small else 'not slower'}")
        if ratio is not None or paired:
            targets.append(f"memory-saving / standard at {cfg.name}: "
                           + _verdicts({h: pm for h, (_, pm) in paired.items()}, ratio, lambda v: v <= 1.45)
                           + f"; target <= 1.45x; bound {'-' if bound is None else f'{bound:.2f}x'}")
    for cfg in (c for c in configs if c.heap):
        lines += ["", f"The {cfg.name} row's timed processes add `{cfg.heap}` to the environment: no block gets a "
                      "mapping of its own. Above glibc's largest mmap threshold (32 MiB, what `MALLOC_MMAP_THRESHOLD_` "
                      "can reach) a block is mapped on allocation and unmapped on free, so the 32 MiB activations of "
                      "this configuration fault in their pages at every allocation (the page-fault column)."]
    if paired_rows:
        lines += ["", "Paired ratios: normflows, flowkern and memory-saving stepping in turn in one process (the order "
                      "rotating every round), in each of the rounds' processes; a round's ratio divides its step "
                      "times, so the machine's drift between processes and between seconds cancels (module "
                      "docstring). The targets are judged on these, in two environments: make bench's (the "
                      "`MALLOC_*` variables of the README's \"CPU training\" note) and glibc's default heap (the "
                      "variables removed, as a user runs normflows): with the default heap each step page-faults "
                      "in again the memory the previous one freed, which costs the implementation that allocates "
                      "more (the page-fault column above, measured with make bench's heap).", "",
                  "| config | heap | normflows / flowkern: median (quartiles) | memory-saving / flowkern: median "
                  "(quartiles) | normflows / flowkern per process | rounds |", "|---|---|---|---|---|---|"] + paired_rows
    lines += ["", "Memory, one training step per fresh process under glibc's default heap (module docstring):", "",
              "| config | saved for backward per sample: normflows / flowkern / memory-saving | "
              "peak RSS: normflows / flowkern / memory-saving / memory-saving chunk 1 | "
              "step RSS (peak - after build), same order |",
              "|---|---|---|---|"]
    for cfg in (c for c in configs if not c.heap):
        m = {k: res["memory"].get((cfg.name, k), {}) for k in MEMORY_KEYS}
        saved = " / ".join(_fmt_bytes(m[k].get("saved_per_sample")) for k in MEMORY_KEYS[:3])
        rss = " / ".join(_fmt_bytes(m[k].get("peak_rss")) for k in MEMORY_KEYS)
        step_rss = " / ".join(_fmt_step_rss(m[k]) for k in MEMORY_KEYS)
        lines.append(f"| {cfg.name} (B={cfg.batch}) | {saved} | {rss} | {step_rss} |")
        nf, ms = m["normflows"], m["flowkern-ms"]
        if "64x64" in cfg.name and nf.get("saved_per_sample") and ms.get("saved_per_sample"):
            r = ms["saved_per_sample"] / nf["saved_per_sample"]
            targets.append(f"memory-saving saved bytes at 64x64: {100 * r:.2f}% of normflows' "
                           f"({'met' if r <= 0.02 else 'MISSED'}; target <= 2%)")
        if "128x128" in cfg.name and nf.get("peak_rss"):
            for label, key in (("memory-saving", "flowkern-ms"), ("memory-saving, chunk 1", CHUNK1)):
                mm = m[key]
                if not mm.get("peak_rss"):
                    continue
                r_raw = mm["peak_rss"] / nf["peak_rss"]
                r_step = (mm["peak_rss"] - mm["base_rss"]) / max(1, nf["peak_rss"] - nf["base_rss"])
                floor = nf["base_rss"] / nf["peak_rss"]
                targets.append(f"peak RSS at 128x128 (B={cfg.batch}): {label} {100 * r_raw:.0f}% of normflows' "
                               f"({'met' if r_raw <= 0.25 else 'MISSED'}; target <= 25%; the process before the "
                               f"step is already {100 * floor:.0f}% of normflows' peak); above that baseline: "
                               f"{100 * r_step:.0f}% ({'met' if r_step <= 0.25 else 'MISSED'}); step "
                               f"{_fmt_ms(res['steps'].get((cfg.name, key), {}).get('step_ms'))} ms")
    for axis in ("K", "resolution", "levels"):
        cases = sorted({k[1] for k in res["growth"] if k[0] == axis})
        if not cases:
            continue
        lines += ["", f"Growth with {axis} (batch {8 if not args.quick else 4}; saved for backward per sample, "
                      "peak RSS):", "", f"| {axis} | normflows saved | memory-saving saved | normflows peak RSS | "
                                        "memory-saving peak RSS |", "|---|---|---|---|---|"]
        ms_saved = []
        for v in cases:
            a, b = res["growth"].get((axis, v, "normflows"), {}), res["growth"].get((axis, v, "flowkern-ms"), {})
            ms_saved.append(b.get("saved_per_sample"))
            lines.append(f"| {v} | {_fmt_bytes(a.get('saved_per_sample'))} | {_fmt_bytes(b.get('saved_per_sample'))} | "
                         f"{_fmt_bytes(a.get('peak_rss'))} | {_fmt_bytes(b.get('peak_rss'))} |")
        if axis in ("K", "levels") and all(v is not None for v in ms_saved):
            const = len(set(ms_saved)) == 1
            targets.append(f"memory-saving saved bytes constant in {axis}: {'met' if const else 'MISSED'} "
                           f"({', '.join(_fmt_bytes(v) for v in ms_saved)})")
    cfg, batches = QUICK_BATCHES if args.quick else BATCHES
    if res["batch"]:
        lines += ["", f"Peak RSS with the batch, {cfg.name} (one step per fresh process; the process before the "
                      "step holds the interpreter, torch, the model and the batch):", "",
                  "| batch | normflows peak RSS | memory-saving chunk 1 peak RSS | ratio | "
                  "step RSS: normflows / memory-saving chunk 1 |", "|---|---|---|---|---|"]
        met = []
        for b in batches:
            nf, ms = res["batch"].get((b, "normflows"), {}), res["batch"].get((b, CHUNK1), {})
            r = ms["peak_rss"] / nf["peak_rss"] if nf.get("peak_rss") and ms.get("peak_rss") else None
            if r is not None and r <= 0.25:
                met.append(b)
            step = " / ".join(_fmt_step_rss(m) for m in (nf, ms))
            lines.append(f"| {b} | {_fmt_bytes(nf.get('peak_rss'))} | {_fmt_bytes(ms.get('peak_rss'))} | "
                         f"{'-' if r is None else f'{100 * r:.0f}%'} | {step} |")
        targets.append(f"peak RSS of memory-saving chunk 1 <= 25% of normflows' at {cfg.name}: "
                       + (f"met from batch {met[0]} on" if met else f"MISSED at every batch of {list(batches)}"))
    if res["budget"]:
        nf_side, nf_res = res["budget"]["normflows"]
        fk_side, fk_res = res["budget"]["flowkern-ms"]
        lines += ["", f"Largest square side trainable at batch 8 within {args.budget_gib:g} GiB (peak RSS measured in "
                      f"a fresh process; {configs[0].name} architecture):", "",
                  "| implementation | largest side | peak RSS there | tried |", "|---|---|---|---|"]
        for name, side, tried in (("normflows", nf_side, nf_res), ("flowkern memory-saving (chunk 1)", fk_side, fk_res)):
            rss = tried.get(side, {}).get("peak_rss") if side else None
            shown = ", ".join(f"{k}: {'over' if v.get('over_budget') else ('error' if 'error' in v else _fmt_bytes(v['peak_rss']))}"
                              for k, v in sorted(tried.items()))
            lines.append(f"| {name} | {side or '-'} | {_fmt_bytes(rss)} | {shown} |")
        if nf_side and fk_side:
            r = fk_side / nf_side
            targets.append(f"largest trainable side within {args.budget_gib:g} GiB: {fk_side} vs {nf_side} = {r:.1f}x "
                           f"({'met' if r >= 4 else 'MISSED'}; target >= 4x)")
    lines += ["", "Targets:", ""] + [f"- {t}" for t in targets]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 GiB budget (a minute or two)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--budget-gib", type=float, default=None, help="memory budget (default 8, quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="timed processes per implementation, "
                        "alternating (default 3, quick 1)")
    parser.add_argument("--skip-budget", action="store_true", help="skip the largest-resolution search")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.budget_gib is None:
        args.budget_gib = 1.0 if args.quick else 8.0
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    res = run(args)
    text = table(res, args)
    print(text)
    if args.json:
        flat = json.loads(json.dumps({k: ({str(kk): vv for kk, vv in v.items()} if isinstance(v, dict) else v)
                                      for k, v in res.items()}, default=str))
        args.json.write_text(json.dumps(flat, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
