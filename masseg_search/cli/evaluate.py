"""`masseg-search evaluate`: score predicted masks against ground truth (DAVIS J&F, or the MOSEv2 protocol)."""
from __future__ import annotations

import argparse
import importlib
from typing import Iterator


class RegistryNames:
    """argparse ``choices`` read from ``masseg_search.evaluation.<attribute>`` when first needed (parsing a value,
    formatting --help): registering the command imports nothing, so other commands start fast."""

    def __init__(self, attribute: str):
        self.attribute = attribute

    def names(self) -> tuple[str, ...]:
        """The names, from the evaluation package."""
        return tuple(getattr(importlib.import_module("masseg_search.evaluation"), self.attribute))

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self.names()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score predicted masks: J, F, J&F per frame, object, scene type (DAVIS or MOSEv2 rules)",
        description="Score an Annotations-style prediction tree (<video>/<frame>.png, indexed PNGs) against the "
        "ground truth with the DAVIS semi-supervised rules (first and last frames not scored). The objects of a "
        "video are ids 1..max of its first ground-truth frame, as the official davis2017-evaluation scores them "
        "(an id absent from the first frame too: it may appear later, or never, then it scores 1 where the "
        "prediction is empty as well); --objects present keeps the first frame's ids; --meta takes them from a "
        "meta.json, as the MOSEv2 scorer does. Writes global.csv, per_object.csv, per_frame.csv (and "
        "per_scene_type.csv) at full precision and prints the global table.",
    )
    parser.add_argument("--gt", required=True, help="ground truth: a MOSE/DAVIS dataset root or an Annotations folder")
    parser.add_argument("--pred", required=True, help="predictions: a folder of <video>/<frame>.png (or holding Annotations/)")
    parser.add_argument("--out", required=True, help="output folder for the CSV tables (e.g. results/eval/<name>)")
    parser.add_argument("--split-list", help="a list file (one video a line) selecting the videos to score")
    parser.add_argument("--workers", type=int, default=0, help="processes over videos; 0 = one per core (default)")
    parser.add_argument("--scene-types", help="CSV with columns video, object_id, scene_type: adds per_scene_type.csv "
                        "(objects absent from the first frame get the type 'not in first frame')")
    parser.add_argument("--allow-missing", action="store_true",
                        help="score a missing prediction frame as an empty mask, and a missing video by the protocol's "
                        "rule (davis: empty masks; mosev2: J=F=0, as its scorer)")
    parser.add_argument("--protocol", choices=RegistryNames("PROTOCOLS"), default="davis", metavar="NAME",
                        help="scoring rules: %(choices)s (default: %(default)s)")
    objects = parser.add_mutually_exclusive_group()
    objects.add_argument("--objects", choices=RegistryNames("OBJECT_SETS"), default="official", metavar="SET",
                         help="which ids of a video's first ground-truth frame are its objects: %(choices)s. official "
                         "(default): 1..max id, as davis2017-evaluation; present: only the ids the frame holds")
    objects.add_argument("--meta", metavar="META_JSON",
                         help='take each video\'s objects from this meta.json ({"videos": {V: {"objects": [ids]}}}), '
                         "as the MOSEv2 scorer does")
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
               "protocol": args.protocol, "progress": not args.no_progress, "objects": args.objects, "meta": args.meta}
    if args.ray_address:
        result = evaluate_on_ray(args.ray_address, args.gt, args.pred, **options)
    else:
        result = evaluate_predictions(args.gt, args.pred, workers=args.workers, **options)
    out_dir = result.write(args.out)
    print(result.summary())
    print(f"tables written to {out_dir}")
    return 0
