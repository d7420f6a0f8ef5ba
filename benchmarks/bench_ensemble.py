"""Benchmark `ensemble`: fusion + writing a MOSE-sized split against only writing its final PNGs, in one run.

    .venv/bin/python benchmarks/bench_ensemble.py [--videos 100 --frames 20 --height 720 --width 1280]
        [--configs 3 --low-res 256] [--methods mean,single,vote] [--compressed-store] [--out results/bench/ensemble]

Makes (once; reused when the sizes match) a synthetic split: per video a 720p JPEG per frame, a first-frame mask,
and stored low-res logits (the store of masseg_search/store/predictions.py, 2-4 moving objects of 0.3-8% of the frame,
``--configs`` configurations that differ in gain, offset and noise). Then, single process:

- ``fusion + writing``: ensemble's per-video work (load the stored logits, fuse, merge, upsample, encode, write
  PNGs) for every video, per method;
- ``writing only``: the same final masks (decoded beforehand, not timed) encoded and written again, the lower bound
  (timed right after each video's fusion, so both see the same load on a shared machine);
- a breakdown on the first videos, done as ensemble does it: load (map the stored logits), fuse (scan them for
  each object's boxes), render (fuse the boxes, upsample, merge), encode+write; the submission check and the zip.

Prints frames/s and the ratio fusion+writing / writing-only (target <= 1.5). ``--compressed-store`` writes the
logits with np.savez_compressed (the store's format before it went uncompressed) to show what inflating costs.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masseg_search.data import layout  # noqa: E402
from masseg_search.ensemble import RuleResolver, fuse_video, plan_from_dict, video_masks  # noqa: E402
from masseg_search.ensemble.submission import check_submission, write_submission_zip  # noqa: E402
from masseg_search.ensemble.write import _write_one_video  # noqa: E402
from masseg_search.store import predictions as store  # noqa: E402

CONFIGS = ["s20_b-10", "s7.5_b-4", "s10_b-5", "s30_b-15", "s4_b-2"]


def _object_logits(rng: np.random.Generator, frames: int, low: int, config_index: int, track: dict) -> np.ndarray:
    """Smooth SAM2-like logits of one moving ellipse: about +15 inside, down to -30 outside."""
    yy, xx = np.mgrid[0:low, 0:low].astype(np.float32)
    gain = 1.0 + 0.15 * config_index
    offset = 0.6 * (config_index - 1)
    out = np.empty((frames, low, low), np.float32)
    for t in range(frames):
        cy, cx = track["y"] + t * track["vy"], track["x"] + t * track["vx"]
        distance = np.sqrt(((yy - cy) / track["ry"]) ** 2 + ((xx - cx) / track["rx"]) ** 2)
        out[t] = np.clip(12.0 * gain * (1.0 - distance) + offset, -30.0, 15.0) + rng.normal(0, 0.25, (low, low))
    return out


def _save_compressed(video_dir: Path, prediction: store.VideoPrediction) -> None:
    """The store's layout with deflated npz members (for --compressed-store)."""
    (video_dir / store.META_FILE).unlink(missing_ok=True)
    for object_id in prediction.object_ids:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, logits=prediction.logits[object_id].astype(np.float16), object_score=prediction.object_scores[object_id])
        layout.atomic_write_bytes(store.object_file(video_dir, object_id), buffer.getvalue())
    layout.atomic_write_bytes(video_dir / store.META_FILE, json.dumps(prediction.meta()).encode())


def make_split(root: Path, videos: int, frames: int, height: int, width: int, configs: int, low: int, compressed: bool) -> tuple[Path, Path]:
    """JPEG frames + first-frame masks under root/data, stored logits under root/predictions (skips what exists)."""
    data, predictions = root / "data", root / "predictions"
    spec = {"videos": videos, "frames": frames, "height": height, "width": width, "configs": configs, "low": low, "compressed": compressed}
    spec_file = root / "spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) != spec:
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(predictions, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(json.dumps(spec))
    background = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 8)
    ok, jpeg = cv2.imencode(".jpg", background, [cv2.IMWRITE_JPEG_QUALITY, 80])
    names = [f"bench_{index:04d}" for index in range(videos)]
    for index, name in enumerate(names):
        if all(store.is_complete(predictions / c / name) for c in CONFIGS[:configs]):
            continue
        rng = np.random.default_rng(index)
        frame_names = [f"{t:05d}" for t in range(frames)]
        for frame in frame_names:
            layout.atomic_write_bytes(data / layout.IMAGE_DIR / name / f"{frame}.jpg", jpeg.tobytes())
        object_ids = list(range(1, int(rng.integers(2, 5)) + 1))
        tracks = {i: {"y": rng.uniform(40, low - 40), "x": rng.uniform(40, low - 40), "ry": rng.uniform(8, 40), "rx": rng.uniform(8, 40),
                      "vy": rng.uniform(-1.5, 1.5), "vx": rng.uniform(-1.5, 1.5)} for i in object_ids}
        for config_index, config in enumerate(CONFIGS[:configs]):
            logits = {i: _object_logits(rng, frames, low, config_index, tracks[i]) for i in object_ids}
            prediction = store.VideoPrediction(name, frame_names, height, width, object_ids, {i: 0 for i in object_ids}, logits,
                                               {i: np.ones(frames, np.float32) for i in object_ids}, *store.parse_config_id(config))
            (_save_compressed if compressed else store.save_video_prediction)(predictions / config / name, prediction)
            if config_index == 0:
                first = store.logits_to_mask(np.stack([logits[i][0] for i in object_ids]), object_ids, height, width)
                layout.write_mask(data / layout.ANNOTATION_DIR / name / "00000.png", first)
    return data, predictions


def breakdown(predictions: Path, dataset: layout.Dataset, jobs: list, videos: int) -> dict[str, float]:
    """Seconds spent loading, fusing, rendering and encoding+writing on the first ``videos`` videos."""
    timings = {"load": 0.0, "fuse": 0.0, "render": 0.0, "encode+write": 0.0, "frames": 0}
    scratch = predictions.parent / "scratch"
    scratch.mkdir(exist_ok=True)
    for _, video, rules, _ in jobs[:videos]:
        (scratch / video.name).mkdir()  # new files, as ensemble writes them (overwriting would flush on truncate)
        start = time.perf_counter()
        cache = {}
        for config in {c for rule in rules.values() for c in rule.configs}:
            cache[config] = store.load_video_prediction(predictions / config / video.name, mmap=True)  # as fuse_video
        loaded = time.perf_counter()
        fused = fuse_video(predictions, video.name, rules, cache)
        fused_at = time.perf_counter()
        timings["load"] += loaded - start
        timings["fuse"] += fused_at - loaded
        height, width = layout.image_size(video.frame_paths[0])
        masks = video_masks(fused, video, height, width, set(), reuse=True, given_as_file=True)  # as _write_one_video
        while True:
            start = time.perf_counter()
            try:
                name, mask = next(masks)
            except StopIteration:
                break
            rendered = time.perf_counter()
            data = video.annotation_path(name).read_bytes() if mask is None else layout.encode_mask_png(mask)
            (scratch / video.name / f"{name}.png").write_bytes(data)
            timings["render"] += rendered - start
            timings["encode+write"] += time.perf_counter() - rendered
            timings["frames"] += 1
    shutil.rmtree(scratch)
    return timings


def writing_only(out_dir: Path, target: Path, names: list[str]) -> tuple[float, float, int]:
    """Wall and CPU seconds to write every final mask again: frame 0 copied (it is the given mask), the others
    encoded (decoding them first is not timed)."""
    seconds, cpu_seconds, frames = 0.0, 0.0, 0
    for name in names:
        pngs = layout.list_files(out_dir / name, (".png",))
        masks = [layout.read_mask(p) for p in pngs]
        first_frame = pngs[0].read_bytes()  # the given mask: copied, as ensemble does
        (target / name).mkdir(parents=True, exist_ok=True)
        start, cpu = time.perf_counter(), time.process_time()
        (target / name / pngs[0].name).write_bytes(first_frame)
        for path, mask in zip(pngs[1:], masks[1:]):
            (target / name / path.name).write_bytes(layout.encode_mask_png(mask))
        seconds += time.perf_counter() - start
        cpu_seconds += time.process_time() - cpu
        frames += len(pngs)
    return seconds, cpu_seconds, frames


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--configs", type=int, default=3, choices=range(1, len(CONFIGS) + 1))
    parser.add_argument("--low-res", type=int, default=256)
    parser.add_argument("--methods", default="mean,single,vote", help="comma list of plan methods to time")
    parser.add_argument("--compressed-store", action="store_true", help="store logits deflated (the old store format)")
    parser.add_argument("--breakdown-videos", type=int, default=10)
    parser.add_argument("--out", default="results/bench/ensemble")
    args = parser.parse_args()
    cv2.setNumThreads(1)

    root = Path(args.out) / ("compressed" if args.compressed_store else "store")
    start = time.perf_counter()
    data, predictions = make_split(root, args.videos, args.frames, args.height, args.width, args.configs, args.low_res, args.compressed_store)
    print(f"split: {args.videos} videos x {args.frames} frames at {args.width}x{args.height}, {args.configs} configs, "
          f"logits {args.low_res}x{args.low_res} ({'compressed' if args.compressed_store else 'plain'} npz); ready in {time.perf_counter() - start:.1f} s")
    dataset = layout.open_dataset(data)
    configs = store.list_config_ids(predictions)
    for method in args.methods.split(","):
        spec = {"method": method, "configs": configs[:1] if method == "single" else configs}
        resolver = RuleResolver(plan_from_dict(spec), configs)
        out_dir = root / f"out_{method}"
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir()
        jobs = [(predictions, video, resolver.rules_for_video(video.name, list(range(1, 1 + len(store.load_video_prediction(
            predictions / configs[0] / video.name, object_ids=[]).object_ids)))), out_dir) for video in dataset.videos()]
        rewrite = root / "rewrite"
        shutil.rmtree(rewrite, ignore_errors=True)
        frames = write_frames = 0
        fusion_seconds = fusion_cpu = write_seconds = write_cpu = 0.0
        for job in jobs:  # paired per video, so both sides see the same machine load
            start, cpu = time.perf_counter(), time.process_time()
            frames += _write_one_video(job)[1]
            fusion_seconds, fusion_cpu = fusion_seconds + time.perf_counter() - start, fusion_cpu + time.process_time() - cpu
            seconds, cpu_seconds, count = writing_only(out_dir, rewrite, [job[1].name])
            write_seconds, write_cpu, write_frames = write_seconds + seconds, write_cpu + cpu_seconds, write_frames + count
        shutil.rmtree(rewrite)
        parts = breakdown(predictions, dataset, jobs, args.breakdown_videos)
        start = time.perf_counter()
        problems = check_submission(out_dir, data / layout.IMAGE_DIR, data / layout.ANNOTATION_DIR)
        check_seconds = time.perf_counter() - start
        start = time.perf_counter()
        zip_path = write_submission_zip(out_dir, root / f"out_{method}.zip")
        zip_seconds = time.perf_counter() - start
        assert frames == write_frames and not problems, problems[:3]
        per_frame = {k: 1000 * v / parts["frames"] for k, v in parts.items() if k != "frames"}
        print(f"\n[{method}] {frames} frames")
        print(f"  fusion + writing : {fusion_seconds:7.2f} s  {frames / fusion_seconds:7.1f} frames/s   (CPU {fusion_cpu:6.2f} s, "
              f"{frames / fusion_cpu:6.1f} frames/s)")
        print(f"  writing only     : {write_seconds:7.2f} s  {frames / write_seconds:7.1f} frames/s   (CPU {write_cpu:6.2f} s, "
              f"{frames / write_cpu:6.1f} frames/s)")
        print(f"  ratio            : {fusion_seconds / write_seconds:7.2f}  (CPU {fusion_cpu / write_cpu:.2f}; target <= 1.5)")
        print("  per frame (ms)   : " + ", ".join(f"{k} {v:.2f}" for k, v in per_frame.items()) + f"  (first {args.breakdown_videos} videos)")
        print(f"  submission check : {check_seconds:7.2f} s  {frames / check_seconds:7.1f} frames/s;  zip: {zip_seconds:.2f} s "
              f"({zip_path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
