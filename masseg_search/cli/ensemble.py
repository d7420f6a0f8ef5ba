"""`masseg-search ensemble`: fuse stored predictions by a plan into a checked, zipped submission, or choose the plan
on validation (`--select-on SPLIT`)."""
from __future__ import annotations

import argparse
from pathlib import Path

from masseg_search.cli.options import add_config_options, load_args_config
from masseg_search.config import ProjectConfig
from masseg_search.data.layout import find_split_list
from masseg_search.errors import MassegError
from masseg_search.store.mss_results import MssResults

SHORTHANDS = {"workers": "ensemble.workers", "top_k": "ensemble.top_k"}

EPILOG = """examples:
  # after `masseg-search run --until infer-test` (or its stages by hand), with the config's paths:
  masseg-search ensemble --select-on val     # results/plans/val.yaml from results/predictions/val
  masseg-search ensemble                     # results/submissions/<pipeline.submission>.zip from results/predictions/test
  # explicit paths (scene types default to the config's rules on the split's first frames):
  masseg-search ensemble --select-on val --predictions results/predictions/val --data data/train \\
      --split-list data/train/val.txt --best-configs results/mss/val/best_configs.yaml --out-plan results/plans/val.yaml
  masseg-search ensemble --predictions results/predictions/test --plan results/plans/val.yaml --data data/valid \\
      --scene-types results/scene_types/test.csv --out results/submissions/run1 --workers 4
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ensemble`."""
    parser = subparsers.add_parser(
        "ensemble",
        help="fuse per-configuration predictions into a checked MOSE submission (or choose the fusion on val)",
        description="Fuse the stored low-res logits of several (scale, bias) configurations and views (other "
        "checkpoints, the mirrored video, other model families) per object (select by scene type, mean of "
        "probabilities, logit mean, vote, per-pixel confidence, or one member per video or object chosen without "
        "labels), merge objects, upsample once, write a palette PNG per frame, check the submission and zip it "
        "when the check passes. Resumes per video. With --select-on, score each fusion candidate on validation "
        "predictions and write the chosen plan instead. Without --predictions every path is `run`'s under "
        "pipeline.out (predictions/<split>, plans/<study>.yaml, submissions/<name>) and the data, scene-type rules "
        "and tune-mss results come from the config.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_options(parser)
    parser.add_argument("--predictions", help="stored predictions of one split (default: <pipeline.out>/predictions/"
                        "<val with --select-on, else test>)")
    parser.add_argument("--data", help="dataset root of that split: JPEG frames and the given first-frame masks "
                        "(default: data.root for --select-on, data.test_root or data.root otherwise)")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--split-list", help="list file of the videos (default: the config's split)")
    selection.add_argument("--split", help="split name looked up as DATA/<split>.txt")
    parser.add_argument("--plan", help="fusion plan YAML (see masseg_search/ensemble/__init__.py); default without "
                        "--predictions: <pipeline.out>/plans/<pipeline.study>.yaml, else the config's ensemble section")
    parser.add_argument("--out", help="submission folder to write (default <pipeline.out>/submissions/"
                        "<pipeline.submission>); the zip is <name>.zip beside it")
    parser.add_argument("--no-zip", action="store_true", help="write and check the folder, but no zip")
    parser.add_argument("--scene-types", help="scene types CSV of this split (video,object_id,scene_type and the "
                        "features); default: the config's scene_types rules on the split's first frames")
    parser.add_argument("--best-configs", help="best_configs.yaml from tune-mss (for select), or a learned policy.yaml "
                        "(tune-mss --policy learned: select then gives each object its leaf's configuration, from its "
                        "first-frame features); default without --predictions: "
                        "<mss.results_dir>/<pipeline.study>/best_configs.yaml")
    parser.add_argument("--workers", type=int, help="processes over videos (--set ensemble.workers)")
    parser.add_argument("--ray-address", help="fuse and write the videos as tasks on this Ray cluster instead (auto, "
                        "host:port, or local); predictions, data and --out on storage every node sees")
    choose = parser.add_argument_group("choosing the plan on validation")
    choose.add_argument("--select-on", metavar="SPLIT", help="score every candidate on this split (full ground "
                        "truth needed) and write --out-plan instead of a submission")
    choose.add_argument("--out-plan", help="plan YAML to write with --select-on (default <pipeline.out>/plans/<SPLIT>.yaml)")
    choose.add_argument("--folds", help="folds JSON {fold: [videos]}; default: folds.json beside --best-configs if present")
    choose.add_argument("--top-k", type=int, help="configs in the mean candidates (--set ensemble.top_k)")
    parser.set_defaults(func=_run)


def _split_list(args: argparse.Namespace, data_root: Path, default: str | None) -> Path | None:
    if args.split_list:
        return Path(args.split_list)
    split = args.split or default
    return find_split_list(data_root, split) if split else None


def _data(args: argparse.Namespace, config: ProjectConfig) -> tuple[Path, Path | None]:
    """The split's dataset root and list: given, else the config's val (--select-on) or test split."""
    data = config.data
    if args.select_on:
        root = Path(args.data or data.root)
        default = {"val": data.val_split, "train": data.train_split}.get(args.select_on, args.select_on)
    else:
        root = Path(args.data or data.test_data_root)
        default = data.test_split if args.data is None or Path(args.data) == Path(data.test_data_root) else None
    return root, _split_list(args, root, default)


def _pipeline_mode(args: argparse.Namespace) -> bool:
    """No --predictions: every path is `run`'s (see the command's description)."""
    return args.predictions is None


def _predictions(args: argparse.Namespace, config: ProjectConfig, split: str) -> Path:
    if args.predictions:
        return Path(args.predictions)
    predictions = Path(config.pipeline.out) / "predictions" / split
    if not predictions.is_dir() or not any(predictions.iterdir()):
        raise MassegError(f"no stored predictions of the {split} split", predictions,
                          f"make them with `masseg-search run --until infer-{split}` (every stage before), or "
                          f"`masseg-search infer --split {split} --configs ... --out {predictions}`")
    return predictions


def _best_configs(args: argparse.Namespace, config: ProjectConfig) -> Path | None:
    if args.best_configs or not _pipeline_mode(args):
        return Path(args.best_configs) if args.best_configs else None
    best = MssResults(Path(config.mss.results_dir) / config.pipeline.study).best_configs
    if not best.is_file():
        raise MassegError("no tune-mss result to select by scene type", best,
                          f"make it with `masseg-search tune-mss --study {config.pipeline.study}` (or "
                          "`masseg-search run --until tune-mss`), or pass --best-configs")
    return best


def _scene_types(args: argparse.Namespace, config: ProjectConfig, data_root: Path, split_list: Path | None,
                 path: Path) -> Path:
    """The given scene-types CSV, else the config's rules on the split's first frames, written to ``path``."""
    if args.scene_types:
        return Path(args.scene_types)
    from masseg_search.data.layout import open_dataset
    from masseg_search.data.scene_types import save_scene_types, scene_type_table

    table = scene_type_table(open_dataset(data_root, split_list=split_list), config.scene_types)
    print(f"scene types ({config.source} rules): {path}")
    return save_scene_types(table, path)


def _run(args: argparse.Namespace) -> int:
    config = load_args_config(args, SHORTHANDS)
    if args.select_on:
        return _run_select(args, config)
    from masseg_search.ensemble import load_plan, plan_from_dict, run_ensemble
    from masseg_search.ensemble.agreement import format_choice_counts

    predictions = _predictions(args, config, "test")
    out = Path(args.out) if args.out else Path(config.pipeline.out) / "submissions" / config.pipeline.submission
    if args.plan:
        plan = load_plan(args.plan)
    elif _pipeline_mode(args):
        path = Path(config.pipeline.out) / "plans" / f"{config.pipeline.study}.yaml"
        if not path.is_file():
            raise MassegError("no fusion plan chosen on validation yet", path,
                              "choose one with `masseg-search ensemble --select-on val` (or `masseg-search run "
                              "--until select`), or pass --plan")
        plan = load_plan(path)
        print(f"plan: {path}")
    else:
        section = config.ensemble
        plan = plan_from_dict({"method": section.method, "configs": section.configs, "weights": section.weights},
                              f"{config.source}: ensemble section")
    data_root, split_list = _data(args, config)
    best = Path(args.best_configs) if args.best_configs else None
    if plan.uses_select() and best is None and not plan.best_configs:
        best = _best_configs(args, config)  # run's in pipeline mode; else None, and run_ensemble names what is missing
    scene_types = None
    if plan.uses_select() or plan.per_type:
        scene_types = _scene_types(args, config, data_root, split_list, out.with_name(out.name + ".scene_types.csv"))
    result = run_ensemble(predictions, plan, data_root, out, split_list=split_list, workers=config.ensemble.workers,
                          scene_types=scene_types, best_configs=best, write_zip=not args.no_zip,
                          ray_address=args.ray_address)
    print(f"{result.videos} videos, {result.frames_written} frames written this run, {result.seconds:.1f} s -> {result.out_dir}")
    if result.problems:
        for problem in result.problems[:100]:
            print(f"  {problem}")
        more = len(result.problems) - 100
        print(f"submission check failed: {len(result.problems)} problems{f' ({more} not shown)' if more > 0 else ''}; no zip written.")
        print(f"  see every one: masseg-search submission check {result.out_dir} --images {data_root} --annotations {data_root}")
        return 1
    if result.choices:
        print(f"members chosen without labels: {format_choice_counts(result.choice_counts())} (every choice: {result.choices_path})")
    print(f"submission check passed{f'; zip: {result.zip_path}' if result.zip_path else ''}")
    return 0


def _run_select(args: argparse.Namespace, config: ProjectConfig) -> int:
    from masseg_search.ensemble.agreement import format_choice_counts
    from masseg_search.ensemble.select import select_fusion

    predictions = _predictions(args, config, args.select_on)
    data_root, split_list = _data(args, config)
    out_plan = Path(args.out_plan) if args.out_plan else Path(config.pipeline.out) / "plans" / f"{args.select_on}.yaml"
    best = _best_configs(args, config)
    folds = args.folds
    if folds is None and best is not None:
        folds = MssResults.beside(best).folds_or_none()
        if folds is not None:
            print(f"held-out folds from {folds}")
    scene_types = _scene_types(args, config, data_root, split_list, out_plan.with_name(out_plan.stem + ".scene_types.csv")) \
        if best is not None else None
    plan = select_fusion(predictions, data_root, out_plan, split_list=split_list, scene_types=scene_types,
                         best_configs=best, folds=folds, top_k=config.ensemble.top_k, workers=config.ensemble.workers)
    selection = plan.selection or {}
    print(f"{'candidate':<26} {'J&F':>7}  (" + ("held-out folds" if selection.get("held_out") else "in-sample: no folds file") + ")")
    for candidate in selection.get("candidates", []):
        mark = "  <- chosen" if candidate["name"] == selection.get("chosen") else ""
        print(f"{candidate['name']:<26} {candidate['jf']:7.4f}{mark}")
        if "member_choices" in candidate:
            print(f"{'':<28}chosen: {format_choice_counts(candidate['member_choices'])}")
    for note in selection.get("notes", []):
        print(f"note: {note}")
    print(f"plan written: {out_plan}")
    return 0
