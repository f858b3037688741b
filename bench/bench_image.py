"""Image flows: one Glow training step (forward + backward + Adam) of normflows' notebook Glow
beside its flowkern conversion (standard, memory-saving, under ``torch.compile``), the same
weights, on CPU in float32; then memory: bytes saved for backward, peak RSS, its growth with K,
resolution, levels and batch, and the largest side trainable within a memory budget.

    python bench/bench_image.py [--quick] [--skip-budget] [--no-compile] [--json FILE]

Every measurement is a fresh process of ``bench/image_worker.py`` (the workloads are its
``CONFIGS`` / ``QUICK``). The method of each table is printed by ``bench/report.py`` above it
(docs/benchmarks.md, "Image flows"); the targets the numbers are read against are in
docs/targets.md. ``main(argv)`` is the entry point.
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
from dataclasses import asdict, replace
from pathlib import Path

from ab import default_heap_env  # the default-heap rule (ab.py: stdlib only)
from image_worker import CONFIGS, IMPLS, LARGE, PER_SAMPLE, QUICK, Config, implementation, vm_rss

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "image_worker.py"

__all__ = ["Config", "CONFIGS", "QUICK", "run", "table", "main"]

GIB = 2 ** 30
MEMORY_KEYS = ("normflows", "flowkern", "flowkern-ms", PER_SAMPLE)
DEFAULT_HEAP = "glibc default heap"
# the paired processes run twice: with make bench's MALLOC_* variables and with glibc's defaults
PAIRED_HEAPS = ("make bench heap", DEFAULT_HEAP)
# peak RSS with the batch: the 128x128 configuration from its table batch up (quick: the last quick one)
BATCHES = (LARGE, (32, 64, 128, 256))
QUICK_BATCHES = (QUICK[-1], (4, 8))


# ---- the driver ----------------------------------------------------------------------------------
def _launch(job: dict, budget: int | None = None, timeout: float = 1800.0) -> dict:
    """Run ``image_worker.worker(job)`` in a fresh process; with ``budget``, kill it when its RSS
    passes the budget. Memory runs and the default-heap paired runs get glibc's default heap."""
    cmd = [sys.executable, str(WORKER), json.dumps(job)]
    env = None
    if job.get("mode") == "memory" or job.get("default_heap"):
        env = default_heap_env()
    elif job["config"].get("heap"):
        env = dict(os.environ, **dict(a.split("=", 1) for a in job["config"]["heap"].split()))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    watched, killed, t0 = 0, False, time.time()
    while proc.poll() is None:
        try:
            watched = max(watched, vm_rss(proc.pid))
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


def _fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


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
        big = [PER_SAMPLE] if cfg.size >= 128 else []
        keys = [i for i in IMPLS if not (i == "flowkern-compile" and args.no_compile)] + big
        runs: dict[str, list[dict]] = {k: [] for k in keys}
        rng = random.Random(cfg.name)
        for rnd in range(args.rounds):  # fresh processes alternate, in a seeded random order per round
            for key in rng.sample(keys, len(keys)):
                impl, chunk = implementation(key)
                r = _launch(dict(config=asdict(cfg), impl=impl, mode="step", threads=args.threads, chunk=chunk))
                runs[key].append(r)
                log(f"  round {rnd + 1} {key}: {_fmt_ms(r.get('step_ms'))} ms {r.get('error', '')}")
        for key, rs in runs.items():
            res["steps"][cfg.name, key] = _median_run(rs)
        for heap in PAIRED_HEAPS[:1 if cfg.heap else None]:  # the glibc-default row only for the make-bench heap
            res["paired"][cfg.name, heap] = [
                _launch(dict(config=asdict(cfg), mode="paired", threads=args.threads, rounds=3 * cfg.steps,
                             default_heap=heap == DEFAULT_HEAP)) for _ in range(args.rounds)]
            log(f"  paired ({heap}): " + ", ".join(f"{_ratios(r)[0]:.2f}x" if "paired_ms" in r else r.get("error", "?")
                                                   for r in res["paired"][cfg.name, heap]))
        for key in ([k for k in MEMORY_KEYS if k != PER_SAMPLE] + big) * (not cfg.heap):
            impl, chunk = implementation(key)
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
        for key in ("normflows", PER_SAMPLE):
            impl, chunk = implementation(key)
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
            first = 4 * nf_side  # tried first; the sides below it only if it does not fit
            fk_side, fk_res = largest_trainable(cfg, "flowkern-ms", budget, args.threads, [first], 1, log)
            if fk_side is None:
                fk_side, more = largest_trainable(cfg, "flowkern-ms", budget, args.threads,
                                                  [s for s in sizes if nf_side <= s < first], 1, log)
                fk_res.update(more)
        res["budget"]["flowkern-ms"] = (fk_side, fk_res)
    return res


def _step_rows(res: dict, configs: list[Config]) -> tuple[list[str], list[str]]:
    """The step table's rows and the paired table's rows."""
    rows, paired_rows = [], []
    for cfg in configs:
        s = {impl: res["steps"].get((cfg.name, impl), {}) for impl in IMPLS}
        fl = res["floor"].get(cfg.name, {})
        nf, fk, ms, cp = (s[i].get("step_ms") for i in IMPLS)
        speed = nf / fk if nf and fk else None
        ratio = ms / fk if ms and fk else None
        bound = 1 + fl.get("floor_cl_ms", 0) / 3 / fk if fk and fl.get("floor_cl_ms") else None
        cs = s["flowkern-compile"].get("compile_s")
        rows.append(f"| {cfg.name} (B={cfg.batch}, L={cfg.levels}, K={cfg.depth}) | {_fmt_ms(nf)} | {_fmt_ms(fk)} | "
                    f"{_fmt_x(speed)} | {_fmt_ms(ms)} | {_fmt_x(ratio)} | {_fmt_x(bound)} | "
                    f"{_fmt_ms(cp)} ({'-' if cs is None else f'{cs:.0f}'}) | "
                    f"{_fmt_ms(fl.get('floor_nchw_ms'))} / {_fmt_ms(fl.get('floor_cl_ms'))} | "
                    + " / ".join("-" if s[i].get("faults_per_step") is None else f"{s[i]['faults_per_step']:.0f}"
                                 for i in IMPLS[:3]) + " |")
        for heap in PAIRED_HEAPS:
            runs = res["paired"].get((cfg.name, heap), [])
            if (pn := _paired_summary(runs, "normflows")) is not None:
                pm = _paired_summary(runs, "flowkern-ms")
                paired_rows.append(f"| {cfg.name} | {heap} | {_fmt_ratio(pn)} | {_fmt_ratio(pm)} | "
                                   + ", ".join(f"{v:.2f}" for v in pn["per_process"]) + f" | {pn['n']} |")
    return rows, paired_rows


def table(res: dict, args) -> str:
    configs = QUICK if args.quick else CONFIGS
    rows, paired_rows = _step_rows(res, configs)
    lines = [f"### Glow training step, CPU float32, {res['threads']} threads, median of {args.rounds} alternating "
             "processes each", "",
             "| config | normflows ms | flowkern ms | speedup | memory-saving ms | ms / std | bound 1+floor/3/std "
             "| torch.compile ms (compile s) | conv floor NCHW / CL ms | page faults / step: normflows / flowkern "
             "/ memory-saving |", "|---|---|---|---|---|---|---|---|---|---|", *rows]
    for cfg in (c for c in configs if c.heap):
        lines += ["", f"The {cfg.name} row's timed processes add `{cfg.heap}` to the environment."]
    if paired_rows:
        lines += ["", "Paired ratios (normflows, flowkern and memory-saving stepping in turn in one process):", "",
                  "| config | heap | normflows / flowkern: median (quartiles) | memory-saving / flowkern: median "
                  "(quartiles) | normflows / flowkern per process | rounds |", "|---|---|---|---|---|---|",
                  *paired_rows]
    lines += ["", "Memory, one training step per fresh process under glibc's default heap:", "",
              "| config | saved for backward per sample: normflows / flowkern / memory-saving | "
              "peak RSS: normflows / flowkern / memory-saving / memory-saving chunk 1 | "
              "step RSS (peak - after build), same order |", "|---|---|---|---|"]
    for cfg in (c for c in configs if not c.heap):
        m = {k: res["memory"].get((cfg.name, k), {}) for k in MEMORY_KEYS}
        lines.append(f"| {cfg.name} (B={cfg.batch}) | "
                     + " / ".join(_fmt_bytes(m[k].get("saved_per_sample")) for k in MEMORY_KEYS[:3]) + " | "
                     + " / ".join(_fmt_bytes(m[k].get("peak_rss")) for k in MEMORY_KEYS) + " | "
                     + " / ".join(_fmt_step_rss(m[k]) for k in MEMORY_KEYS) + " |")
    for axis in ("K", "resolution", "levels"):
        cases = sorted({k[1] for k in res["growth"] if k[0] == axis})
        if not cases:
            continue
        lines += ["", f"Growth with {axis} (batch {8 if not args.quick else 4}; saved for backward per sample, "
                      "peak RSS):", "", f"| {axis} | normflows saved | memory-saving saved | normflows peak RSS | "
                                        "memory-saving peak RSS |", "|---|---|---|---|---|"]
        for v in cases:
            a, b = res["growth"].get((axis, v, "normflows"), {}), res["growth"].get((axis, v, "flowkern-ms"), {})
            lines.append(f"| {v} | {_fmt_bytes(a.get('saved_per_sample'))} | {_fmt_bytes(b.get('saved_per_sample'))} | "
                         f"{_fmt_bytes(a.get('peak_rss'))} | {_fmt_bytes(b.get('peak_rss'))} |")
    cfg, batches = QUICK_BATCHES if args.quick else BATCHES
    if res["batch"]:
        lines += ["", f"Peak RSS with the batch, {cfg.name} (one step per fresh process):", "",
                  "| batch | normflows peak RSS | memory-saving chunk 1 peak RSS | ratio | "
                  "step RSS: normflows / memory-saving chunk 1 |", "|---|---|---|---|---|"]
        for b in batches:
            nf, ms = res["batch"].get((b, "normflows"), {}), res["batch"].get((b, PER_SAMPLE), {})
            r = ms["peak_rss"] / nf["peak_rss"] if nf.get("peak_rss") and ms.get("peak_rss") else None
            lines.append(f"| {b} | {_fmt_bytes(nf.get('peak_rss'))} | {_fmt_bytes(ms.get('peak_rss'))} | "
                         f"{'-' if r is None else f'{100 * r:.0f}%'} | "
                         + " / ".join(_fmt_step_rss(m) for m in (nf, ms)) + " |")
    if res["budget"]:
        lines += ["", f"Largest square side trainable at batch 8 within {args.budget_gib:g} GiB (peak RSS of a fresh "
                      f"process; {configs[0].name} architecture):", "",
                  "| implementation | largest side | peak RSS there | tried |", "|---|---|---|---|"]
        for name, key in (("normflows", "normflows"), ("flowkern memory-saving (chunk 1)", "flowkern-ms")):
            side, tried = res["budget"][key]
            rss = tried.get(side, {}).get("peak_rss") if side else None
            shown = ", ".join(f"{k}: " + ("over" if v.get("over_budget") else "error" if "error" in v
                                          else _fmt_bytes(v["peak_rss"])) for k, v in sorted(tried.items()))
            lines.append(f"| {name} | {side or '-'} | {_fmt_bytes(rss)} | {shown} |")
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
    args = parser.parse_args(argv)
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
