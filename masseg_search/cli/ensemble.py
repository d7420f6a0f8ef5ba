"""`masseg-search ensemble`: fuse stored predictions by a plan into a checked, zipped submission, or choose the plan
on validation (`--select-on SPLIT`)."""
from __future__ import annotations

import argparse

from masseg_search.config import EnsembleSection, load_config
from masseg_search.data.layout import find_split_list
from masseg_search.errors import MassegError
from masseg_search.store.mss_results import MssResults

EPILOG = """examples:
  # choose the fusion on validation (held-out folds of tune-mss when folds.json sits next to best_configs.yaml)
  masseg-search ensemble --select-on val --predictions results/predictions/val --data data/train \\
      --best-configs results/mss/val/best_configs.yaml --scene-types results/scene_types/val.csv \\
      --out-plan results/plans/val.yaml
  # apply it to the test split: writes results/submissions/run1/ and, when the check passes, run1.zip
  masseg-search ensemble --predictions results/predictions/test --plan results/plans/val.yaml --data data/valid \\
      --scene-types results/scene_types/test.csv --out results/submissions/run1 --workers 4
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `ensemble`."""
    parser = subparsers.add_parser(
        "ensemble",
        help="fuse per-configuration predictions into a checked MOSE submission (or choose the fusion on val)",
        description="Fuse the stored low-res logits of several (scale, bias) configurations per object (select by "
        "scene type, mean of probabilities, logit mean, vote), merge objects, upsample once, write a palette PNG per "
        "frame, check the submission and zip it when the check passes. Resumes per video. With --select-on, score "
        "each fusion candidate on validation predictions and write the chosen plan instead.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--predictions", required=True, help="stored predictions of one split (results/predictions/<split>)")
    parser.add_argument("--data", required=True, help="dataset root of that split: JPEG frames and the given first-frame masks")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument("--split-list", help="list file of the videos (default: every video, or --select-on's split)")
    selection.add_argument("--split", help="split name looked up as DATA/<split>.txt")
    parser.add_argument("--plan", help="fusion plan YAML (see masseg_search/ensemble/__init__.py); default: the config's ensemble section")
    parser.add_argument("--config", help="project config whose `ensemble` section gives the default method, configs, top_k, workers")
    parser.add_argument("--out", help="submission folder to write (results/submissions/<name>); the zip is <name>.zip beside it")
    parser.add_argument("--no-zip", action="store_true", help="write and check the folder, but no zip")
    parser.add_argument("--scene-types", help="scene types CSV of this split (video,object_id,scene_type); overrides the plan's")
    parser.add_argument("--best-configs", help="best_configs.yaml from tune-mss (for select); overrides the plan's")
    parser.add_argument("--workers", type=int, help="processes over videos (default: the config's ensemble.workers)")
    parser.add_argument("--ray-address", help="fuse and write the videos as tasks on this Ray cluster instead (auto, "
                        "host:port, or local); predictions, data and --out on storage every node sees")
    choose = parser.add_argument_group("choosing the plan on validation")
    choose.add_argument("--select-on", metavar="SPLIT", help="score every candidate on this split of --data (full ground "
                        "truth needed) and write --out-plan instead of a submission")
    choose.add_argument("--out-plan", help="plan YAML to write with --select-on (results/plans/<name>.yaml)")
    choose.add_argument("--folds", help="folds JSON {fold: [videos]}; default: folds.json beside --best-configs if present")
    choose.add_argument("--top-k", type=int, help="configs in the mean candidates (default: the config's ensemble.top_k)")
    parser.set_defaults(func=_run)


def _section(args: argparse.Namespace):
    return load_config(args.config).ensemble if args.config else EnsembleSection()


def _split_list(args: argparse.Namespace, default_split: str | None = None):
    if args.split_list:
        return args.split_list
    split = args.split or default_split
    return find_split_list(args.data, split) if split else None


def _run(args: argparse.Namespace) -> int:
    section = _section(args)
    workers = args.workers or section.workers
    if args.select_on:
        return _run_select(args, section, workers)
    if args.out is None:
        raise MassegError("--out is required to write a submission", fix="pass --out results/submissions/<name> (or --select-on SPLIT --out-plan PLAN)")
    from masseg_search.ensemble import load_plan, plan_from_dict, run_ensemble

    if args.plan:
        plan = load_plan(args.plan)
    else:
        plan = plan_from_dict({"method": section.method, "configs": section.configs, "weights": section.weights},
                              f"{args.config or 'default config'}: ensemble section")
    result = run_ensemble(args.predictions, plan, args.data, args.out, split_list=_split_list(args), workers=workers,
                          scene_types=args.scene_types, best_configs=args.best_configs, write_zip=not args.no_zip,
                          ray_address=args.ray_address)
    print(f"{result.videos} videos, {result.frames_written} frames written this run, {result.seconds:.1f} s -> {result.out_dir}")
    if result.problems:
        for problem in result.problems[:100]:
            print(f"  {problem}")
        more = len(result.problems) - 100
        print(f"submission check failed: {len(result.problems)} problems{f' ({more} not shown)' if more > 0 else ''}; no zip written.")
        print(f"  see every one: masseg-search submission check {result.out_dir} --images {args.data} --annotations {args.data}")
        return 1
    print(f"submission check passed{f'; zip: {result.zip_path}' if result.zip_path else ''}")
    return 0


def _run_select(args: argparse.Namespace, section, workers: int) -> int:
    from masseg_search.ensemble.select import select_fusion

    if not args.out_plan:
        raise MassegError("--select-on needs --out-plan", fix="pass --out-plan results/plans/<name>.yaml")
    folds = args.folds
    if folds is None and args.best_configs:
        folds = MssResults.beside(args.best_configs).folds_or_none()
        if folds is not None:
            print(f"held-out folds from {folds}")
    plan = select_fusion(args.predictions, args.data, args.out_plan, split_list=_split_list(args, args.select_on),
                         scene_types=args.scene_types, best_configs=args.best_configs, folds=folds,
                         top_k=args.top_k or section.top_k, workers=workers)
    selection = plan.selection or {}
    print(f"{'candidate':<26} {'J&F':>7}  (" + ("held-out folds" if selection.get("held_out") else "in-sample: no folds file") + ")")
    for candidate in selection.get("candidates", []):
        mark = "  <- chosen" if candidate["name"] == selection.get("chosen") else ""
        print(f"{candidate['name']:<26} {candidate['jf']:7.4f}{mark}")
    for note in selection.get("notes", []):
        print(f"note: {note}")
    print(f"plan written: {args.out_plan}")
    return 0
