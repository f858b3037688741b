"""Print the benchmark tables as markdown: ``python bench/report.py [--quick] [--out FILE]``.

Runs bench_ops.table and appends the tables of the optional modules bench_flows, bench_peers and
bench_gpu when they exist and expose ``table(quick: bool) -> str``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

__all__ = ["MODULES", "build_report", "main"]

MODULES = ("bench_ops", "bench_flows", "bench_peers", "bench_gpu")


def build_report(quick: bool) -> str:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    parts = ["# flowkern benchmarks" + (" (quick)" if quick else "")]
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            if name == "bench_ops":
                raise
            parts.append(f"## {name}\n\nskipped: {e}")
            continue
        if not callable(getattr(module, "table", None)):
            continue
        parts.append(f"## {name}\n\n{module.table(quick)}")
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (~1 minute)")
    p.add_argument("--out", help="also write the markdown to this file")
    args = p.parse_args(argv)
    report = build_report(args.quick)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
