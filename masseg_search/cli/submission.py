"""`masseg-search submission check|zip`: validate a submission folder or zip the way the scorer reads it."""
from __future__ import annotations

import argparse

from masseg_search.data.layout import read_split_list


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `submission` and its subcommands."""
    parser = subparsers.add_parser("submission", help="check or zip a MOSE/DAVIS submission",
                                   description="Submission tools (no torch needed).")
    sub = parser.add_subparsers(dest="submission_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])

    check = sub.add_parser(
        "check",
        help="list every violation of the scorer's rules (exit 1 if any)",
        description="Check a submission folder or zip: every video and frame present (names and count match the "
        "JPEG frames), each PNG indexed and of the video's size, values only among the ids of the video's first "
        "given mask (the split's Annotations beside --images, or --annotations; the command prints which masks it "
        "used), no stray files, video folders at the zip root (or inside one wrapper folder). Every violation is "
        "printed with its file and fix; exit status 1 when there is any.",
    )
    check.add_argument("submission", help="submission folder or .zip")
    _add_common(check)
    check.add_argument("--show", type=int, default=200, help="print at most this many problems (default 200; 0 = all)")
    check.set_defaults(func=_run_check)

    zip_parser = sub.add_parser("zip", help="check a submission folder and zip it with the video folders at the root",
                                description="Check a folder, then write the zip (only when the check passes).")
    zip_parser.add_argument("folder", help="submission folder (one sub-folder per video)")
    zip_parser.add_argument("--out", help="zip to write (default: <folder>.zip)")
    _add_common(zip_parser)
    zip_parser.set_defaults(func=_run_zip, show=200)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, help="the split's JPEGImages folder (or the dataset root holding it)")
    masks = parser.add_mutually_exclusive_group()
    masks.add_argument("--annotations", help="the given first-frame masks (Annotations folder or dataset root); "
                       "default: the split's Annotations beside --images")
    masks.add_argument("--no-annotations", action="store_true", help="skip the id check (no first-frame masks)")
    parser.add_argument("--split-list", help="list file of the expected videos (default: every video folder under --images)")
    parser.add_argument("--workers", type=int, default=1, help="processes (default 1)")


def _problems(args: argparse.Namespace, location: str) -> list:
    from masseg_search.ensemble.submission import check_submission_report

    videos = read_split_list(args.split_list) if args.split_list else None
    report = check_submission_report(location, args.images, args.annotations, videos=videos, workers=args.workers,
                                     find_annotations=not args.no_annotations)
    print(report.masks_summary())
    return report.problems


def _report(problems: list, show: int) -> None:
    shown = problems if show <= 0 else problems[:show]
    for problem in shown:
        print(problem)
    if len(shown) < len(problems):
        print(f"... and {len(problems) - len(shown)} more (pass --show 0 to list all)")
    print(f"{len(problems)} problem(s)" if problems else "submission OK")


def _run_check(args: argparse.Namespace) -> int:
    problems = _problems(args, args.submission)
    _report(problems, args.show)
    return 1 if problems else 0


def _run_zip(args: argparse.Namespace) -> int:
    from pathlib import Path

    from masseg_search.ensemble.submission import write_submission_zip

    problems = _problems(args, args.folder)
    _report(problems, args.show)
    if problems:
        print("no zip written")
        return 1
    folder = Path(args.folder)
    out = write_submission_zip(folder, args.out or folder.with_name(folder.name + ".zip"))
    print(f"zip written: {out}")
    return 0
