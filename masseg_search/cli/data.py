"""`masseg-search data synth|check|scene-types` (and `convert`, `build-moseplus` when that module exists)."""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from masseg_search.cli.options import add_config_options, load_args_config
from masseg_search.data.layout import find_split_list, open_dataset
from masseg_search.errors import MassegError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data` and its subcommands."""
    parser = subparsers.add_parser("data", help="make, validate and type datasets (MOSE / DAVIS layout)", description="Dataset tools.")
    data_subparsers = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    synth = data_subparsers.add_parser(
        "synth",
        help="generate a synthetic MOSE-like dataset",
        description="Generate a synthetic MOSE-layout dataset (JPEG frames, palette PNGs for every frame, split lists, "
        "metadata/<video>.json). Unset options come from the config's data.synth section. Reruns resume.",
    )
    synth.add_argument("--out", help="output folder (--set data.root)")
    synth.add_argument("--videos", type=int, help="number of videos (--set data.synth.videos)")
    synth.add_argument("--seed", type=int, help="random seed, same seed same dataset (--set data.synth.seed)")
    synth.add_argument("--height", type=int, help="frame height in pixels, 64 for tests, up to 720 (--set data.synth.height)")
    synth.add_argument("--width", type=int, help="frame width in pixels, up to 1280 (--set data.synth.width)")
    synth.add_argument("--frames", type=int, help="frames per video (--set data.synth.frames)")
    synth.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    add_config_options(synth)
    synth.set_defaults(func=_run_synth)

    check = data_subparsers.add_parser(
        "check",
        help="validate a dataset and list every problem with its fix",
        description="Validate a MOSE or DAVIS dataset; every problem is listed with its file and fix, then a summary. "
        "Exit status 1 when there are errors (or warnings, with --strict).",
    )
    check.add_argument("root", help="dataset root (holds JPEGImages/ and Annotations/)")
    _add_selection(check)
    check.add_argument("--allow-late-objects", action="store_true", help="accept ids that first appear after the first frame (training clips)")
    check.add_argument("--decode-images", action="store_true", help="decode every frame, not only its header and end marker")
    check.add_argument("--workers", type=int, default=4, help="threads (default 4)")
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(func=_run_check)

    types = data_subparsers.add_parser(
        "scene-types",
        help="type every object from its first-frame mask (small, crowded, lookalike, ...)",
        description="Compute first-frame features per object and its scene type from the config's scene_types rules. "
        "Writes a CSV to --out (and prints objects per type), or the CSV to stdout without --out.",
    )
    types.add_argument("root", help="dataset root")
    add_config_options(types)
    _add_selection(types)
    types.add_argument("--out", help="CSV file to write (e.g. results/scene_types/val.csv)")
    types.add_argument("--workers", type=int, default=1, help="threads (default 1)")
    types.set_defaults(func=_run_scene_types)

    try:  # `convert` and `build-moseplus` live in their own module (another stage); absent until it is built
        data_moseplus = importlib.import_module("masseg_search.cli.data_moseplus")
    except ModuleNotFoundError as exc:
        if exc.name != "masseg_search.cli.data_moseplus":
            raise
    else:
        data_moseplus.register(data_subparsers)


def _add_selection(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--split-list", help="list file of the videos to use (one name a line)")
    group.add_argument("--split", help="split name looked up as ROOT/<split>.txt or ROOT/ImageSets/[2017/]<split>.txt")


def _split_list(args: argparse.Namespace) -> str | Path | None:
    """The list file named by --split-list or --split (None = every video)."""
    if args.split_list:
        return args.split_list
    if args.split:
        return find_split_list(args.root, args.split)
    return None


SYNTH_SHORTHANDS = {"out": "data.root", "videos": "data.synth.videos", "seed": "data.synth.seed",
                    "height": "data.synth.height", "width": "data.synth.width", "frames": "data.synth.frames"}


def _run_synth(args: argparse.Namespace) -> int:
    import time

    from masseg_search.data.synth import generate_dataset

    config = load_args_config(args, SYNTH_SHORTHANDS)
    synth = config.data.synth
    if synth is None:
        raise MassegError("the config has no data.synth section", config.source,
                          "give --videos --seed --height --width --frames (or --set data.synth.videos=N ...)")
    start = time.perf_counter()
    root = generate_dataset(config.data.root, videos=synth.videos, seed=synth.seed, height=synth.height,
                            width=synth.width, frames=synth.frames, splits=synth.splits, workers=args.workers,
                            progress=True)
    import json

    summary = json.loads((root / "synth.json").read_text())
    table = summary["videos"]
    kinds: dict[str, int] = {}
    for row in table:
        kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
    parameters = summary["parameters"]
    splits = {name: sum(row["split"] == name for row in table) for name in parameters["splits"]}
    print(f"wrote {len(table)} videos of {parameters['frames']} frames at {parameters['height']}x{parameters['width']} to {root} in {time.perf_counter() - start:.1f} s")
    print("kinds:  " + ", ".join(f"{kind} {count}" for kind, count in kinds.items()))
    print("splits: " + ", ".join(f"{name} {count} ({root / (name + '.txt')})" for name, count in splits.items()))
    return 0


def _run_check(args: argparse.Namespace) -> int:
    import time

    from masseg_search.data.check import ERROR, check_dataset_with_summary, summary_table

    start = time.perf_counter()
    problems, summary = check_dataset_with_summary(
        args.root, split_list=_split_list(args), allow_late_objects=args.allow_late_objects, decode_images=args.decode_images, workers=args.workers
    )
    elapsed = time.perf_counter() - start
    for problem in problems:
        print(f"{problem.severity.upper():7} {problem.path}: {problem.message}\n        fix: {problem.fix}")
    errors = sum(p.severity == ERROR for p in problems)
    warnings = len(problems) - errors
    if problems:
        rows = summary_table(problems)
        width = max(len("problem"), *(len(kind) for kind, _, _ in rows))
        print(f"\n{'problem':<{width}}  errors  warnings")
        for kind, kind_errors, kind_warnings in rows:
            print(f"{kind:<{width}}  {kind_errors:>6}  {kind_warnings:>8}")
    print(f"\nchecked {summary.videos} videos, {summary.frames} frames, {summary.annotations} annotations in {elapsed:.2f} s: {errors} errors, {warnings} warnings")
    return 1 if errors or (args.strict and warnings) else 0


def _run_scene_types(args: argparse.Namespace) -> int:
    from masseg_search.data.scene_types import check_rules, save_scene_types, scene_type_table, type_counts

    config = load_args_config(args)
    check_rules(config.scene_types, config.source)
    dataset = open_dataset(args.root, split_list=_split_list(args))
    table = scene_type_table(dataset, config.scene_types, workers=args.workers, progress=args.out is not None)
    order = [rule.name for rule in config.scene_types.types] + [config.scene_types.default]
    counts = type_counts(table, order)
    report = sys.stdout if args.out else sys.stderr
    if args.out:
        save_scene_types(table, args.out)
        print(f"wrote {len(table)} objects of {len(dataset)} videos to {args.out}", file=report)
    else:
        table.to_csv(sys.stdout, index=False, float_format="%.17g")
    print("objects per scene type: " + ", ".join(f"{name} {count}" for name, count in counts.items()), file=report)
    return 0
