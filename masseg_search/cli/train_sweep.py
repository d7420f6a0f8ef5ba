"""`masseg-search train-sweep`: a Ray Tune sweep of fine-tuning runs (ASHA on validation J&F), resumable."""
from __future__ import annotations

import argparse

from masseg_search.cli.options import add_config_options, load_args_config

SHORTHANDS = {"name": "train_sweep.name", "samples": "train_sweep.samples", "gpus_per_trial": "train_sweep.gpus_per_trial",
              "cpus_per_trial": "train_sweep.cpus_per_trial"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train-sweep` command."""
    parser = subparsers.add_parser(
        "train-sweep",
        help="sweep fine-tuning settings with Ray Tune (ASHA, checkpoints, restore)",
        description="Run one fine-tuning trial per sampled point of the config's train_sweep.space (loss weights, "
        "augmentation probabilities, lr; dotted train keys) under Ray Tune with ASHA on validation J&F. Writes "
        "<storage>/<name>/ (default results/sweeps/<name>/): Ray's trials and checkpoints, results.csv and "
        "results.parquet (parameters, epochs run, best val J&F, checkpoint per trial) and best_checkpoint.txt, "
        "kept current during the run. Ctrl-C or kill (SIGTERM) stops it after Ray saves its state (exit status 130); "
        "--resume finishes it without rerunning finished trials. With train_sweep.searcher: optuna the trials are also "
        "the Optuna study train-sweep-<name> in the project's Optuna storage (train_sweep.optuna_storage, else "
        "mss.storage, else sqlite:///studies/val.db), beside the tune-mss studies in optuna-dashboard.",
    )
    add_config_options(parser)
    parser.add_argument("--name", help="sweep name (--set train_sweep.name)")
    parser.add_argument("--samples", type=int, help="number of trials (--set train_sweep.samples)")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial (--set train_sweep.gpus_per_trial); "
                        "a whole number > 1 runs each trial data-parallel, one Ray Train worker per GPU")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial, per worker when data-parallel "
                        "(--set train_sweep.cpus_per_trial)")
    parser.add_argument("--resume", action="store_true", help="restore the interrupted sweep of this name")
    parser.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep and print where its table and best checkpoint are (exit status 130 when interrupted)."""
    import sys

    from masseg_search.data.synth import ensure_training_data
    from masseg_search.finetune.sweep import run_sweep, sweep_section

    config = load_args_config(args, SHORTHANDS)
    section = sweep_section(config)  # train_sweep: null is an error naming the fix
    ensure_training_data(config)  # from data.synth, not the clip loaders: this driver never needs torch
    result = run_sweep(config, resume=args.resume, address=args.address)
    print(f"{result.trials} trials; results table: {result.table_csv} (and {result.table_parquet.name})")
    if result.best_checkpoint is not None:
        print(f"best checkpoint: {result.best_checkpoint} (val J&F {result.best_val_jf:.4f})")
    else:
        print("no trial reported a validation score")
    if result.optuna_storage:
        print(f"optuna study train-sweep-{section.name}: "
              f"optuna-dashboard {result.optuna_storage}")
    if result.unfinished:
        print(f"masseg-search: interrupted with {result.unfinished} trial(s) unfinished; finished trials are kept, "
              "rerun with --resume to finish", file=sys.stderr)
        return 130
    return 0
