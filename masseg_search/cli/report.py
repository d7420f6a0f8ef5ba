"""`masseg-search report RESULTS_DIR`: a static HTML page about the sweeps, studies, ensembles and evaluations."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` command."""
    parser = subparsers.add_parser(
        "report",
        help="write a static HTML report (offline) of everything under a results folder",
        description="Write one HTML page with PNG plots beside it: for a demo folder, its table of test J&F per "
        "setting with intervals and each stage's paired gain; sweep trial curves, parameters against validation "
        "J&F and what ASHA stopped; the mask-scaling landscape per scene type with the chosen point and the two fixed "
        "baselines; the ensemble's gain over its members; evaluations and their worst videos with overlays. "
        "Sections whose inputs are missing say so.",
    )
    parser.add_argument("results_dir", metavar="RESULTS_DIR", help="the folder the pipeline wrote (e.g. results)")
    parser.add_argument("--out", default=None, help="the HTML file (default RESULTS_DIR/report.html)")
    parser.add_argument("--data", default=None, help="dataset root for the worst-video overlays, replacing the one evaluations record")
    parser.add_argument("--worst", type=int, default=3, help="worst videos shown per evaluation (default 3)")
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay images of the worst videos")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the page and print where it is."""
    from masseg_search.report import build_report

    page = build_report(args.results_dir, args.out, data_root=args.data, worst_videos=args.worst,
                        overlays=not args.no_overlays)
    print(f"report written: {page}")
    print(f"open it offline: file://{page.resolve()}")
    return 0
