"""The interpretation demo on ColorfulDigits: train the experts, the IIN, the invariance cINN and
the Net2Net translators (:mod:`stages`), write PNG grids, ``metrics.json`` and ``report.md`` to
``--out``. ``make demo`` runs it as ``python examples/interpretation/run.py --out runs/demo --image demo``:
``--image SIZE`` adds the image example (``examples/image/glow_photos.py``: ``flowkern train`` on an
image folder cut from the bundled photographs, the standard and memory-saving modes' peak memory,
normflows' Glow against its conversion) as the last stage, in a subprocess writing into
``<out>/image/``; its metrics go under ``image`` in ``metrics.json`` and its numbers and pictures
into ``report.md``.

The stages run on the CPU with torch and the BLAS / OpenMP pools of numpy and scikit-learn limited
to ``--threads`` (the flows are small; oversubscribed BLAS pools slow the probes down several
times). The glibc heap is a process setting read from the environment at start-up (``make demo``
sets ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_``, see ``docs/interpretation.md``);
the run records those variables in ``metrics.json`` and its numbers do not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch

from flowkern._checks import check_int

from experts import text_available
from report import render_report
from stages import (QUICK, Context, DemoConfig, classifier_invariances, iin_factors, load_data,
                    net2net_class_conditional, net2net_text_to_image, sketch_concept, train_experts)

__all__ = ["IMAGE_SIZES", "MALLOC_ENV", "Stage", "image_stage", "main", "parse_args", "run"]

# the glibc malloc variables (and the tunables string that can hold them) recorded in the config
MALLOC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
IMAGE_SCRIPT = Path(__file__).resolve().parents[1] / "image" / "glow_photos.py"
IMAGE_SIZES = {"quick": ["--quick"], "demo": ["--demo"], "full": []}  # glow_photos.py's size flags


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="run directory (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="small budget (a smoke run of every stage)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the small nets are slower with more)")
    parser.add_argument("--no-text", action="store_true", help="skip the MiniLM text-to-image experiment")
    parser.add_argument("--image", choices=tuple(IMAGE_SIZES), default=None,
                        help="also run examples/image/glow_photos.py at this size as the last stage (into OUT/image)")
    return parser.parse_args(argv)


class Stage:
    """Context manager announcing a named stage and recording its wall time into ``timings``."""

    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> Stage:
        self.t0 = time.perf_counter()
        print(f"[demo] {self.name} ...", flush=True)
        return self

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = round(time.perf_counter() - self.t0, 2)


def image_stage(out: Path, size: str) -> dict:
    """``glow_photos.py --out OUT [size flag]`` in a fresh process (its own thread count, default 2;
    the environment, glibc variables included, passed on); its ``metrics.json``, with ``dir``
    (relative to the demo's folder) and ``size`` added."""
    cmd = [sys.executable, str(IMAGE_SCRIPT), "--out", str(out), *IMAGE_SIZES[size]]
    subprocess.run(cmd, check=True)
    m = json.loads((out / "metrics.json").read_text())
    return {"dir": out.name, "size": size, **m}


def run(args: argparse.Namespace) -> int:
    """Run every stage in order on ``--threads`` CPU threads; write ``metrics.json`` and ``report.md``."""
    from threadpoolctl import threadpool_limits

    threads = check_int("--threads", args.threads, minimum=1)
    cfg = QUICK if args.quick else DemoConfig()
    out = Path(args.out)
    (out / "experts").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    m: dict = {"config": {**asdict(cfg), "quick": bool(args.quick), "seed": args.seed,
                          "malloc_env": {k: os.environ[k] for k in MALLOC_ENV if k in os.environ}}}
    with threadpool_limits(threads):
        with Stage(timings, "data"):
            train, test, m["data"] = load_data(cfg, args.seed)
        ctx = Context(cfg, args.seed, out, train, test)
        with Stage(timings, "experts"):
            experts, m["experts"] = train_experts(ctx)
        with Stage(timings, "iin"):
            m.update(iin_factors(ctx, experts))
        with Stage(timings, "sketch"):
            m["sketch"] = sketch_concept(ctx, experts)
        with Stage(timings, "invariances"):
            m.update(classifier_invariances(ctx, experts))
        with Stage(timings, "net2net_logits"):
            m["net2net_logits"] = net2net_class_conditional(ctx, experts)
        ok, why = text_available()
        if args.no_text or not ok:
            m["text"] = {"skipped": "--no-text" if args.no_text else why}
            print(f"[demo] {m['text']['skipped']}", flush=True)
        else:
            with Stage(timings, "text"):
                m["text"] = net2net_text_to_image(ctx, experts)
        if args.image:
            with Stage(timings, "image"):
                m["image"] = image_stage(out / "image", args.image)
    timings["total"] = round(time.perf_counter() - t_start, 2)
    m["timings_s"] = timings
    (out / "metrics.json").write_text(json.dumps(m, indent=2))
    (out / "report.md").write_text(render_report(m))
    print(f"[demo] wrote {out / 'metrics.json'} and {out / 'report.md'} in {timings['total']:.0f} s", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
