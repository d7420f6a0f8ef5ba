"""`masseg-search demo`: the whole pipeline on synthetic data with a tiny SAM2 on the CPU."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `demo`."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on the bundled synthetic dataset with a tiny SAM2 (CPU, minutes)",
        description="Generate the synthetic dataset, sweep fine-tuning with Ray Tune (ASHA), tune the mask scaling "
        "per scene type with Optuna (held-out estimate), infer, choose the fusion on val, write and check the test "
        "submission, and print one table of test J&F per setting. Reruns resume.",
    )
    parser.add_argument("--out", default="results/demo", help="where everything goes (default: results/demo)")
    parser.add_argument("--quick", action="store_true", help="smaller budgets: the same stages in about 3 minutes")
    parser.add_argument("--config", help="project config (default: configs/demo.yaml)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from masseg_search.pipeline.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(args.out, quick=args.quick, config=args.config)
    return 0
