"""`masseg-search run`: the whole pipeline from one config, resumable, every choice recorded in pipeline.yaml."""
from __future__ import annotations

import argparse

from masseg_search.cli.options import add_config_options, overrides_from_args

STAGE_LIST = ("data, train-sweep, tune-mss, infer-val, select, infer-test, ensemble, check, evaluate, report")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `run`."""
    parser = subparsers.add_parser(
        "run",
        help="the whole pipeline from one config: data, train-sweep, tune-mss, infer, fusion chosen on val, checked "
        "test submission, evaluate, report (resumable)",
        description="Run every stage of the MASSeg pipeline from one config, in order: " + STAGE_LIST + ". data: "
        "check the splits (synthesise them when data.synth is set, build MOSE+ when data.build_moseplus is true); "
        "train-sweep: Ray Tune fine-tuning (train_sweep: null starts from model.checkpoint); tune-mss: Optuna per "
        "scene type on val with held-out folds; infer-val: every configuration a fusion candidate can name, under the "
        "ensemble's views (mirrored video, next best trials); select: ensemble --select-on val; infer-test: what the "
        "chosen plan reads; ensemble: the test submission and its zip; check: the scorer's rules on the zip; "
        "evaluate: J&F when the test split has ground truth; report: the HTML page. A stage whose record in "
        "<out>/pipeline.yaml is done, with unchanged config keys, input digests and earlier choices, is skipped; a "
        "change reruns it and the stages after it; after an interruption (even kill -9) the same command continues. "
        "pipeline.yaml also holds each stage's choices, timings and the equivalent single commands.",
    )
    add_config_options(parser)
    parser.add_argument("--out", help="run folder (shorthand for --set pipeline.out=DIR; default results/, where the "
                        "single-stage commands look; another folder also gathers the sweeps and studies)")
    parser.add_argument("--from", dest="from_stage", metavar="STAGE", help="rerun from this stage even when done")
    parser.add_argument("--until", dest="until_stage", metavar="STAGE", help="stop after this stage")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from masseg_search.pipeline.runner import run_pipeline

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_pipeline(args.config, overrides_from_args(args, {"out": "pipeline.out"}), from_stage=args.from_stage,
                 until_stage=args.until_stage, progress=not args.no_progress)
    return 0
