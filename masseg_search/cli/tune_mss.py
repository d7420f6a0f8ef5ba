"""`masseg-search tune-mss --study val`: Optuna search per scene type of SAM2's mask scaling (scale, bias) and the
memory knobs the config's ``mss.space`` (or ``--knobs``) names."""
from __future__ import annotations

import argparse

from masseg_search.cli.options import add_config_options, overrides_from_args
from masseg_search.cluster.session import resolve_address
from masseg_search.config import load_config
from masseg_search.errors import MassegError
from masseg_search.store.policy import rules_text
from masseg_search.store.predictions import config_id

SHORTHANDS = {"trials": "mss.trials", "batch": "mss.batch", "storage": "mss.storage", "sampler": "mss.sampler",
              "seed": "mss.seed", "cv": "mss.cv_folds", "checkpoint": "model.checkpoint", "pruner": "mss.pruner"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `tune-mss` command."""
    parser = subparsers.add_parser(
        "tune-mss",
        help="search SAM2's memory-encoder mask scale/bias and memory knobs per scene type (Optuna, resumable, batched "
        "on the engine)",
        description="One Optuna study per scene type (<study>/<scene_type>) in one storage. A study searches scale, "
        "bias and the memory knobs of mss.space (or --knobs): SAM2's memory_stride, memory_frames, obj_ptrs, "
        "cond_frames, multimask and our admission policy admit_score, admit_iou, keep_present. Each engine pass over "
        "the validation videos serves --batch trials of every study. SAM2's 20/-10 and MASSeg's 7.5/-4.0 at default "
        "knobs are enqueued in every study. Rerun the same command to resume (also after kill -9). With --cv F the chosen configurations "
        "are scored on held-out video folds (the reported result). Writes results/mss/<study>/ and shows in "
        "`optuna-dashboard sqlite:///studies/<study>.db --artifact-dir studies/artifacts`. Ctrl-C stops after the "
        "current pass.",
    )
    parser.add_argument("--study", default="val", help="study name (default val); studies are <study>/<scene_type>")
    add_config_options(parser)
    parser.add_argument("--knobs", type=_knob_list, help="comma-separated knobs to search, e.g. scale,bias,admit_score "
                        "(scale and bias always; ranges from mss.space where declared, else built-in defaults); "
                        "default: the knobs of mss.space")
    parser.add_argument("--trials", type=int, help="finished trials per scene-type study (--set mss.trials)")
    parser.add_argument("--batch", type=int, help="trials per study and engine pass, K (--set mss.batch)")
    parser.add_argument("--storage", help="sqlite:///studies/val.db (default), journal:studies/val.log (several "
                        "processes, one machine) or postgresql://user@host/db (password from PGPASSWORD) "
                        "(--set mss.storage)")
    parser.add_argument("--sampler", choices=["tpe", "gp", "cmaes", "random", "grid"], help="--set mss.sampler")
    parser.add_argument("--seed", type=int, help="sampler and fold seed (--set mss.seed)")
    parser.add_argument("--cv", type=int, help="held-out folds over videos, 0 = none (--set mss.cv_folds)")
    parser.add_argument("--pruner", choices=["none", "wilcoxon", "sha"], help="stop trials early within a pass on "
                        "their per-video J&F (--set mss.pruner): Optuna's WilcoxonPruner against the best trial, or "
                        "successive halving over rungs of videos (mss.pruning); pruned trials end PRUNED and count as "
                        "finished; the baselines are never pruned")
    parser.add_argument("--ray-address", help="run engine passes as Ray tasks on this cluster ('auto', host:port, or "
                        "'local' to start one here, on 127.0.0.1 only); default: RAY_ADDRESS, else this process")
    parser.add_argument("--checkpoint", help="SAM2 checkpoint (--set model.checkpoint; default: the best trial of the "
                        "config's train-sweep when it has run, else model.checkpoint)")
    parser.add_argument("--policy", choices=["learned"], help="also learn a policy (--set mss.policy.learn=true): a "
                        "shallow tree over first-frame features choosing each object's (scale, bias), compared on the "
                        "held-out folds with one fixed configuration, the per-type choices and the per-object oracle "
                        "(mss.policy; writes policy.yaml, usable wherever best_configs.yaml is, and "
                        "policy_comparison.csv)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def _knob_list(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def run(args: argparse.Namespace) -> int:
    """Load the config, run the search, print where the results are."""
    from masseg_search.data.synth import ensure_training_data
    from masseg_search.mss.tune import swept_checkpoint, tune_mss

    for name in ("trials", "batch"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise MassegError(f"--{name} must be at least 1, got {value}")
    overrides = overrides_from_args(args, SHORTHANDS)
    if args.policy == "learned":
        overrides["mss.policy.learn"] = True
    config = load_config(args.config, overrides)
    ensure_training_data(config)  # the config's synthetic dataset, made when missing (a real one must exist)
    if "model.checkpoint" not in overrides:
        swept = swept_checkpoint(config)
        if swept is not None:
            config.model.checkpoint = str(swept)
            print(f"checkpoint: {swept} (the best trial of train-sweep {config.train_sweep.name!r}; "
                  "--checkpoint chooses another)")
    if args.knobs:  # the searched knobs of mss.space (their declared ranges, else the defaults)
        config.mss.space = config.mss.space.select(args.knobs)
    result = tune_mss(config, study=args.study, ray_address=resolve_address(args.ray_address),
                      progress=not args.no_progress)
    if result.report.stopped_early:
        print("tune-mss: stopped early; rerun the same command to continue")
    pruned = sum(len(numbers) for numbers in result.report.pruned.values())
    if pruned:
        print(f"pruned: {pruned} trials stopped early on their per-video J&F (state PRUNED in the dashboard)")
    for scene_type, knobs in result.best.types.items():
        detail = result.best.details.get(scene_type, {})
        source = "held-out" if detail.get("jf_source") == "heldout" else "in-sample (optimistic; use --cv for held-out)"
        print(f"{scene_type}: {config_id(knobs)}, J&F {detail.get('jf', float('nan')):.4f} {source}, "
              f"{detail.get('objects', 0)} objects")
    if result.holdout is not None and not result.holdout.summary.empty:
        summary = result.holdout.summary[result.holdout.summary.scene_type == "all"].set_index("method")
        for method in ("chosen", "sam2_default", "masseg"):
            row = summary.loc[method]
            print(f"held-out J&F ({method}): {row.jf:.4f} [95% CI {row.ci_low:.4f} .. {row.ci_high:.4f}]")
    if result.policy is not None:
        print(f"learned policy ({result.out_dir / 'policy.yaml'}):")
        for line in rules_text(result.policy.policy.rules):
            print(f"  {line}")
        print(f"{'policy':<10} {'held-out J&F':>12} {'95% CI':>17} {'gain over per_type':>19} {'95% CI':>17}")
        for row in result.policy.comparison.itertuples(index=False):
            mark = "  (upper bound, not a result)" if row.policy == "oracle" else ""
            print(f"{row.policy:<10} {row.heldout_jf:12.4f}   [{row.ci_low:.3f}, {row.ci_high:.3f}] "
                  f"{row.gain_over_per_type:+19.4f}   [{row.gain_over_per_type_ci_low:+.3f}, "
                  f"{row.gain_over_per_type_ci_high:+.3f}]{mark}")
    print(f"results: {result.out_dir}")
    artifact_dir = config.mss.artifact_dir
    print(f"dashboard: optuna-dashboard {result.storage_url} --artifact-dir {artifact_dir}")
    return 0
