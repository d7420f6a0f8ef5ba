"""`masseg-search data convert` and `data build-moseplus` (registered by masseg_search/cli/data.py)."""
from __future__ import annotations

import argparse

from masseg_search.cli.options import add_config_options, load_args_config

FORMATS = ("davis", "ytvos", "vis", "ovis", "burst")


def register(data_subparsers: argparse._SubParsersAction) -> None:
    """Add `convert` and `build-moseplus` under `data`."""
    convert = data_subparsers.add_parser(
        "convert",
        help="convert a DAVIS / YouTube-VOS / YouTube-VIS / OVIS / BURST source to the MOSE layout",
        description="Convert one source dataset into a MOSE-layout root: frames 00000.jpg..., palette PNGs with ids "
        "renumbered 1..N, one resolution (shorter side), manifest_frames.csv / manifest_objects.csv mapping back to "
        "the source. Reruns resume where a run stopped. Reads: DAVIS 2016 (grayscale 0/255 masks, one object; "
        "480p / 1080p; frame-pair ImageSets) and 2017 (palette; 480p / Full-Resolution); YouTube-VOS 2018/2019 "
        "train and valid (meta.json; sparse PNGs); YouTube-VIS 2019/2021 and OVIS (RLE with list or string counts, "
        "polygons, null frames; JSON beside or inside the split folder); BURST (per-frame track RLEs, "
        "<split>/<dataset>/<sequence> frames).",
    )
    convert.add_argument("--format", required=True, choices=FORMATS, help="source format (vis = YouTube-VIS 2019/2021)")
    convert.add_argument("--src", required=True, help="the source folder as the dataset ships it")
    convert.add_argument("--ann", help="annotation JSON where the format keeps it apart (YouTube-VIS 2019, OVIS, BURST)")
    convert.add_argument("--out", required=True, help="output MOSE-layout root (e.g. results/moseplus/converted/davis)")
    convert.add_argument("--shorter-side", type=int, default=480, help="shorter side in pixels (default 480; 0 = keep sizes)")
    convert.add_argument("--no-upscale", action="store_true", help="leave clips smaller than --shorter-side as they are")
    convert.add_argument("--frames", choices=("annotated", "all"), default="annotated",
                         help="YouTube-VOS/BURST: keep only annotated frames (default) or all, the others unlabelled")
    convert.add_argument("--split", help="DAVIS: convert only the videos (DAVIS 2016 lists: the frames) of "
                         "ImageSets/2017/<split>.txt or ImageSets/<480p|1080p>/<split>.txt (e.g. train; 2016/val "
                         "for ImageSets/2016/val.txt); default every video")
    convert.add_argument("--images", help="YouTube-VOS: image folder with every frame (train_all_frames/JPEGImages "
                         "or valid_all_frames/JPEGImages, with --frames all)")
    convert.add_argument("--max-videos", type=int, help="convert only the first N videos")
    convert.add_argument("--workers", type=int, default=1, help="videos converted at once, one process each (default 1)")
    convert.set_defaults(func=_run_convert)

    build = data_subparsers.add_parser(
        "build-moseplus",
        help="convert, select MOSE-like clips and merge them with MOSE train (the config's moseplus section)",
        description="Build MOSE+: convert every source of the config's moseplus section, compute per-clip statistics, "
        "select clips by thresholds and quotas, merge them with MOSE train into one root with a list file, and "
        "write before/after distributions. Idempotent; rerun after an interruption to resume.",
    )
    add_config_options(build, required=True)
    build.add_argument("--no-check", action="store_true", help="skip `data check` on the merged root")
    build.set_defaults(func=_run_build)


def _run_convert(args: argparse.Namespace) -> int:
    from masseg_search.data.moseplus import convert_source

    summary = convert_source(
        args.format, args.src, args.out, ann=args.ann, shorter_side=args.shorter_side or None,
        upscale=not args.no_upscale, frames=args.frames, split=args.split, images=args.images,
        max_videos=args.max_videos, workers=args.workers,
    )
    print(f"{len(summary.videos)} videos in {summary.out} ({len(summary.skipped)} skipped: no object); "
          f"{summary.frames} frames written at {summary.frames_per_second:.1f} frames/s")
    if "first-appearance" in summary.labels:
        print("note: this source has masks only where objects first appear (YouTube-VOS valid): the root holds "
              "prompts for inference, not training labels (check it with --allow-late-objects)")
    return 0


def _run_build(args: argparse.Namespace) -> int:
    from masseg_search.data.moseplus.merge import build_moseplus

    result = build_moseplus(load_args_config(args), check=not args.no_check)
    selected = int(result.selection["selected"].sum()) if len(result.selection) else 0
    print(f"MOSE+ root {result.root}: {len(result.videos)} training videos ({selected} selected clips added), "
          f"list {result.train_list}" + (f", held-out list {result.val_list}" if result.val_list else ""))
    return 0
