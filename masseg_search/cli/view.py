"""`masseg-search view`: overlay frames of one video, ground truth and several predictions side by side."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `view` command."""
    parser = subparsers.add_parser(
        "view",
        help="draw masks over a video's frames: ground truth and predictions side by side (PNG strips, GIF or MP4)",
        description="Write overlay strips of one video: the ground truth (if the dataset has it) and each prediction "
        "folder side by side, ids in the DAVIS palette with contours and, with full ground truth, each frame's J&F. "
        "A prediction folder is an Annotations-style tree (<video>/<frame>.png, e.g. a submission), a stored "
        "predictions configuration folder (<video>/meta.json + object_<id>.npz) or a predictions root holding "
        "s<scale>_b<bias>/ folders (one panel each).",
    )
    parser.add_argument("--data", required=True, help="dataset root (MOSE or DAVIS layout) holding the video's frames")
    parser.add_argument("--video", required=True, help="video name")
    parser.add_argument("--predictions", nargs="+", required=True, metavar="DIR", help="prediction folders to compare")
    parser.add_argument("--labels", nargs="+", default=None, help="one panel label per --predictions folder")
    parser.add_argument("--out", default="results/view", help="output folder (default results/view); files go to OUT/<video>/")
    animation = parser.add_mutually_exclusive_group()
    animation.add_argument("--gif", action="store_true", help="write an animated GIF (the default)")
    animation.add_argument("--mp4", action="store_true", help="write an MP4 (OpenCV mp4v) instead of a GIF")
    parser.add_argument("--no-frames", action="store_true", help="skip the one-PNG-per-frame strips (contact sheet only)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Render the overlays and list what was written."""
    from masseg_search.report.overlays import render_overlays

    written = render_overlays(args.data, args.video, args.predictions, args.out, labels=args.labels,
                              gif=not args.mp4, mp4=args.mp4, frame_strips=not args.no_frames)
    frames = [p for p in written if p.parent.name == "frames"]
    if frames:
        print(f"{len(frames)} frame strips in {frames[0].parent}")
    for path in written:
        if path.parent.name != "frames":
            print(path)
    return 0
