"""`masseg-search demo`: `run` on the bundled synthetic config with a tiny SAM2 on the CPU, plus its closing tables."""
from __future__ import annotations

import argparse

from masseg_search.cli.options import add_config_options, overrides_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="`run` on the bundled synthetic dataset with a tiny SAM2 (CPU, minutes), ending with one table",
        description="`masseg-search run` on configs/demo.yaml into --out: generate the synthetic dataset, sweep "
        "fine-tuning with Ray Tune (ASHA), tune the mask scaling per scene type with Optuna (held-out estimate), "
        "infer, choose the fusion on val, write and check the test submission, evaluate, then score every setting on "
        "the test split (demo_table.csv, demo_gains.csv: one table of test J&F per setting and each stage's paired "
        "gain) and write the HTML report. Reruns skip what is done (<out>/pipeline.yaml).",
    )
    parser.add_argument("--out", default="results/demo", help="where everything goes (default: results/demo)")
    parser.add_argument("--quick", action="store_true", help="smaller budgets: the same stages in under 3 minutes")
    add_config_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from masseg_search.pipeline.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(args.out, quick=args.quick, config=args.config, progress=not args.no_progress,
             overrides=overrides_from_args(args))
    return 0
