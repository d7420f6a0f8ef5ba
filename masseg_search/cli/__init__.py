"""`masseg-search` command line: thin parsers, one module per command, stages imported lazily.

Each module in this package defines ``register(subparsers)``; the parser it adds carries ``func(args) -> int``.
A command imports its stage inside ``func`` (the one place where the package imports its own modules in a
function): torch, sam2, ray, optuna and matplotlib then load only for the command that needs them, so `--help`,
`data` and `evaluate` start fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from masseg_search import __version__
from masseg_search.errors import MassegError

# Order is the order in `--help`: the whole pipeline (`run`, `demo`), its stages from data to submission, then the
# helpers around them.
COMMAND_MODULES = [
    "run",
    "demo",
    "data",
    "model",
    "train",
    "train_sweep",
    "tune_mss",
    "infer",
    "ensemble",
    "submission",
    "evaluate",
    "report",
    "view",
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every command registered)."""
    parser = argparse.ArgumentParser(
        prog="masseg-search",
        description="Fine-tune SAM2 under a sweep, tune its mask scaling per scene type, and fuse predictions "
        "into a MOSE submission.",
    )
    parser.add_argument("--version", action="version", version=f"masseg-search {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"masseg_search.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, run one command, print project errors in one line (no traceback), exit non-zero."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MassegError as exc:
        print(f"masseg-search: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("masseg-search: interrupted; finished work is kept, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
