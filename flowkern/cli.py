"""``flowkern`` command line: ``check``, ``backends``, ``train``, ``sample``, ``eval``.

Each sub-command lives in the module that owns it and exposes
``add_arguments(parser)`` and ``run(args) -> int``. The interpretation demo is an example, not a
sub-command: ``make demo`` runs ``examples/interpretation/run.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

__all__ = ["main"]

COMMANDS = {
    "check": ("flowkern.check", "certify the invertibility of a saved model and print the report"),
    "backends": ("flowkern.backends", "list the op backends and why any is unavailable"),
    "train": ("flowkern.train.cmd_train", "train a Glow / RealNVP on an image folder (torchrun for many processes)"),
    "sample": ("flowkern.train.cmd_sample", "write a grid of samples of a trained checkpoint as a PNG"),
    "eval": ("flowkern.train.cmd_eval", "bits/dim of a trained checkpoint on an image folder"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="flowkern", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if argv and argv[0] == name:  # import only the module that runs
            mod = importlib.import_module(module)
            if hasattr(mod, "add_arguments"):
                mod.add_arguments(p)
    args = parser.parse_args(argv)
    if args.command == "backends":
        import flowkern

        print(flowkern.backends.describe())
        return 0
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
