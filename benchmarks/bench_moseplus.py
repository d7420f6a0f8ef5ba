"""Benchmark MOSE+ conversion: frames/s of each converter on a synthetic source, and a whole `data build-moseplus`.

    taskset -c 1 .venv/bin/python benchmarks/bench_moseplus.py [--frames 300] [--height 480 --width 854]
        [--shorter-side 480] [--repeat 2] [--build] [--out /tmp/bench_moseplus]

Writes (once per size, reused) one fake source per format with ``masseg_search.data.moseplus.fake_sources`` at
``--height`` x ``--width`` (DAVIS, YouTube-VOS 2019, YouTube-VIS 2021 with RLE and polygon instances, OVIS with
compressed RLE, BURST), each giving about ``--frames`` output frames, then times ``convert_source`` end to end
(reading the JSON / meta.json / PNGs, decoding masks, resizing, renumbering, writing JPEGs, PNGs and manifests) into
a fresh folder, ``--repeat`` times, keeping the fastest run (interference on a shared machine only adds time);
frames per CPU second (this process's user + system time) is the steadier figure when other jobs share the core.
YouTube-VOS and BURST are timed twice: only annotated frames (the default) and every frame (``frames="all"``, the
others unlabelled). frames/s counts output frames (JPEGs written; labelled or not). ``--build`` also times a whole
``build_moseplus`` (every source + a fake MOSE train: convert, clip statistics, selection, merge, distributions
plot, ``data check``) into a fresh folder, then its no-op rerun.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masseg_search.data.moseplus import convert_source  # noqa: E402
from masseg_search.data.moseplus import fake_sources as fake  # noqa: E402

# (row name, format, frames mode)
ROWS = [
    ("davis", "davis", "annotated"),
    ("ytvos (annotated)", "ytvos", "annotated"),
    ("ytvos (all frames)", "ytvos", "all"),
    ("vis (RLE + polygons)", "vis", "annotated"),
    ("ovis (compressed RLE)", "ovis", "annotated"),
    ("burst (annotated)", "burst", "annotated"),
    ("burst (all frames)", "burst", "all"),
]
VIDEOS = 10
WRITERS = {
    "davis": (fake.write_fake_davis, {}),
    "ytvos": (fake.write_fake_ytvos, {}),  # annotated every 5th frame
    "vis": (fake.write_fake_vis, {"style": "mixed"}),  # per object: uncompressed RLE, compressed RLE or polygons
    "ovis": (fake.write_fake_ovis, {}),
    "burst": (fake.write_fake_burst, {}),  # annotated every 2nd frame
}
LAYOUTS = {"davis": ("", None), "ytvos": ("", None), "vis": ("", "instances.json"),
           "ovis": ("train", "annotations_train.json"), "burst": ("frames", "train.json")}


def _source(root: Path, name: str, frames: int, height: int, width: int) -> fake.FakeSource:
    """A fake ``name`` source of VIDEOS videos with about ``frames`` frames in all (written once, then reused)."""
    per_video = max(6, frames // VIDEOS)
    folder = root / "sources" / f"{name}-{VIDEOS}x{per_video}-{height}x{width}"
    if not (folder / ".complete").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        writer, kwargs = WRITERS[name]
        started = time.perf_counter()
        writer(folder, videos=VIDEOS, frames=per_video, height=height, width=width, **kwargs)
        (folder / ".complete").write_text("")
        print(f"wrote fake {name} ({VIDEOS} videos x {per_video} frames, {width}x{height}) in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
    sub, ann = LAYOUTS[name]
    return fake.FakeSource(name, folder / sub if sub else folder, folder / ann if ann else None)


def time_converter(source: fake.FakeSource, format_name: str, frames: str, out: Path, shorter_side: int | None,
                   repeat: int) -> tuple[int, float, float]:
    """(output frames, best wall seconds, CPU seconds of that run) of convert_source into a fresh folder."""
    best = None
    for _ in range(repeat):
        shutil.rmtree(out, ignore_errors=True)
        wall, cpu = time.perf_counter(), time.process_time()
        summary = convert_source(format_name, source.src, out, ann=source.ann, shorter_side=shorter_side,
                                 frames=frames, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if best is None or wall < best[1]:
            best = (summary.frames, wall, cpu)
    shutil.rmtree(out, ignore_errors=True)
    return best


def time_build(root: Path, sources: dict[str, fake.FakeSource], height: int, width: int, shorter_side: int | None,
               frames: int) -> None:
    from masseg_search.config import config_from_dict
    from masseg_search.data.moseplus.merge import build_moseplus

    mose = root / "sources" / f"mose-10x{max(2, frames // 10)}-{height}x{width}"
    if not (mose / "train.txt").is_file():
        fake.write_fake_mose(mose, videos=10, frames=max(2, frames // 10), height=height, width=width)
    entries = [{"name": name, "format": name, "src": str(source.src)} for name, source in sources.items()]
    for entry, source in zip(entries, sources.values()):
        if source.ann is not None:
            entry["ann"] = str(source.ann)
    out = root / "build"
    shutil.rmtree(out, ignore_errors=True)
    config = config_from_dict({"moseplus": {
        "out": str(out), "shorter_side": shorter_side, "mose_root": str(mose), "mose_list": "train",
        "sources": entries, "selection": {"min_criteria": 0, "required": {"num_frames": {"min": 3}}},
    }})
    for label in ("build-moseplus (fresh)", "build-moseplus (rerun, no-op)"):
        wall, cpu = time.perf_counter(), time.process_time()
        result = build_moseplus(config, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        merged_frames = sum(len(list((result.root / "JPEGImages" / video).iterdir())) for video in result.videos)
        print(f"{label:<30} {len(result.videos):>4} videos {merged_frames:>6} frames  {wall:7.2f} s wall "
              f"{cpu:7.2f} s CPU", flush=True)
    shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300, help="output frames per converter (default mode)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--shorter-side", type=int, default=480, help="0 = keep the source size")
    parser.add_argument("--repeat", type=int, default=2, help="runs per converter; the fastest is kept")
    parser.add_argument("--build", action="store_true", help="also time a whole build-moseplus and its rerun")
    parser.add_argument("--out", default="/tmp/bench_moseplus", help="scratch folder (sources are kept for reuse)")
    args = parser.parse_args()
    root = Path(args.out)
    shorter_side = args.shorter_side or None
    # YouTube-VOS's default mode writes every 5th frame, BURST's every 2nd: their sources are 5x / 2x longer so the
    # default-mode rows write about --frames frames
    length = {"ytvos": 5 * args.frames, "burst": 2 * args.frames}
    sources = {name: _source(root, name, length.get(name, args.frames), args.height, args.width) for name in WRITERS}
    print(f"source {args.width}x{args.height} -> shorter side {shorter_side}; best of {args.repeat}")
    print(f"{'converter':<24} {'frames':>6} {'wall s':>8} {'CPU s':>8} {'frames/s':>9} {'frames/CPU s':>13}")
    for row, format_name, frames in ROWS:
        count, wall, cpu = time_converter(sources[format_name], format_name, frames, root / "convert", shorter_side,
                                          args.repeat)
        print(f"{row:<24} {count:>6} {wall:8.2f} {cpu:8.2f} {count / wall:9.1f} {count / cpu:13.1f}", flush=True)
    if args.build:
        time_build(root, sources, args.height, args.width, shorter_side, args.frames)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
