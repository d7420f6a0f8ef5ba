"""`masseg-search evaluate`: score predicted masks against ground truth (DAVIS J&F, or the MOSEv2 protocol)."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks: J, F, J&F per frame, object, scene type (DAVIS or MOSEv2 rules)",
        description="Score an Annotations-style prediction tree (<video>/<frame>.png, indexed PNGs) against the "
        "ground truth with the DAVIS semi-supervised rules (first and last frames not scored). Writes global.csv, "
        "per_object.csv, per_frame.csv (and per_scene_type.csv) at full precision and prints the global table.",
    )
    parser.add_argument("--gt", required=True, help="ground truth: a MOSE/DAVIS dataset root or an Annotations folder")
    parser.add_argument("--pred", required=True, help="predictions: a folder of <video>/<frame>.png (or holding Annotations/)")
    parser.add_argument("--out", required=True, help="output folder for the CSV tables (e.g. results/eval/<name>)")
    parser.add_argument("--split-list", help="a list file (one video a line) selecting the videos to score")
    parser.add_argument("--workers", type=int, default=0, help="processes over videos; 0 = one per core (default)")
    parser.add_argument("--scene-types", help="CSV with columns video, object_id, scene_type: adds per_scene_type.csv")
    parser.add_argument("--allow-missing", action="store_true", help="score missing prediction videos/frames as empty masks")
    parser.add_argument("--protocol", choices=["davis", "mosev2"], default="davis", help="scoring rules (default: davis)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--ray-address", help="score the videos as tasks on this Ray cluster instead of --workers "
                        "processes, for a large split (auto, host:port, or local); --gt and --pred on storage every "
                        "node sees")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the tables, print the global table."""
    from masseg_search.cluster.evaluate import evaluate_on_ray
    from masseg_search.evaluation import evaluate_predictions

    options = {"split_list": args.split_list, "allow_missing": args.allow_missing, "scene_types": args.scene_types,
               "protocol": args.protocol, "progress": not args.no_progress}
    if args.ray_address:
        result = evaluate_on_ray(args.ray_address, args.gt, args.pred, **options)
    else:
        result = evaluate_predictions(args.gt, args.pred, workers=args.workers, **options)
    out_dir = result.write(args.out)
    print(result.summary())
    print(f"tables written to {out_dir}")
    return 0
