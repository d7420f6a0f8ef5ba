"""Benchmark `evaluate`: the fast J&F path against the plain full-frame implementation and against PNG decoding.

    .venv/bin/python benchmarks/bench_evaluate.py [--frames 2000] [--height 480 --width 854] [--out DIR]

Generates (once, resumable) a synthetic MOSE-like set of at least ``--frames`` frames with the project's synth
module, writes a perturbed copy of its masks as the "prediction", then times in one run: (a) only decoding the
ground-truth and predicted PNGs, (b) the fast evaluator (with the compiled kernel where it is built, see
``masseg_search/evaluation/kernels/compiled.py``), (b) again with ``--workers 2``, (b') the fast evaluator once with its
pure-Python kernel, and (c) the plain full-frame implementation. (a) and (b) alternate ``--repeat`` times and each
keeps its least CPU time (the steadiest figure on a shared machine: interference only ever adds time). The fast
evaluator's metric compute is (b) - (a): everything it does besides decoding the PNGs it must read. Checks that
(b), (b') and (c) give identical tables (per frame, per object and global) and prints the ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masseg_search.data import layout  # noqa: E402
from masseg_search.evaluation.kernels import compiled  # noqa: E402
from masseg_search.evaluation import evaluate_predictions, open_ground_truth  # noqa: E402


def perturb_mask(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible wrong prediction: per object a small shift, an erosion or dilation, sometimes a dropout."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    kernel = np.ones((5, 5), np.uint8)
    for object_id in np.unique(mask):
        if object_id in (0, layout.VOID_ID) or rng.random() < 0.05:
            continue
        binary = (mask == object_id).astype(np.uint8)
        choice = rng.random()
        if choice < 0.3:
            binary = cv2.erode(binary, kernel)
        elif choice < 0.6:
            binary = cv2.dilate(binary, kernel)
        shift = np.float32([[1, 0, rng.integers(-6, 7)], [0, 1, rng.integers(-6, 7)]])
        binary = cv2.warpAffine(binary, shift, (width, height), flags=cv2.INTER_NEAREST)
        out[binary > 0] = object_id
    return out


def write_predictions(gt_root: Path, pred_root: Path, names: list[str], seed: int = 0) -> None:
    """Write a perturbed copy of every ground-truth mask under ``pred_root/<video>/`` (skips finished videos)."""
    dataset = open_ground_truth(gt_root)
    for name in names:
        target = pred_root / name
        gt_paths = layout.list_files(dataset.annotation_root / name, (".png",))
        if target.is_dir() and len(layout.list_files(target, (".png",))) == len(gt_paths):
            continue
        rng = np.random.default_rng([seed, len(name), sum(map(ord, name))])
        for path in gt_paths:
            layout.write_mask(target / path.name, perturb_mask(layout.read_mask(path), rng))


def decode_only(gt_root: Path, pred_root: Path, names: list[str]) -> int:
    """Decode what the evaluator must read at least: each video's first ground-truth frame (its objects) and every
    scored ground-truth and predicted PNG."""
    dataset = open_ground_truth(gt_root)
    decoded = 0
    for name in names:
        paths = layout.list_files(dataset.annotation_root / name, (".png",))
        layout.read_mask(paths[0])
        decoded += 1
        for path in paths[1:-1]:
            layout.read_mask(path)
            layout.read_mask(pred_root / name / path.name)
            decoded += 2
    return decoded


def timed(label: str, function, *args, **kwargs):
    """Run once; print wall and CPU seconds (CPU: this process and its finished children); return (wall, cpu, result).

    CPU time is the steadier figure on a shared machine; wall time is what counts with ``--workers``.
    """
    start_wall, start_cpu = time.perf_counter(), _cpu_seconds()
    result = function(*args, **kwargs)
    wall, cpu = time.perf_counter() - start_wall, _cpu_seconds() - start_cpu
    print(f"{label:<34} wall {wall:8.2f} s   cpu {cpu:8.2f} s", flush=True)
    return wall, cpu, result


def same_tables(a, b) -> bool:
    """Whether two evaluation results hold identical per-frame, per-object and global tables."""
    return a.per_frame.equals(b.per_frame) and a.per_object.equals(b.per_object) and a.global_table.equals(b.global_table)


def without_compiled_kernel(function, *args, **kwargs):
    """Run ``function`` with the evaluator's pure-Python kernel (in this process: workers=1)."""
    kernel, compiled.kernel = compiled.kernel, None
    try:
        return function(*args, **kwargs)
    finally:
        compiled.kernel = kernel


def _cpu_seconds() -> float:
    own, children = os.times(), os.times()
    return own.user + own.system + children.children_user + children.children_system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000, help="at least this many frames in total")
    parser.add_argument("--frames-per-video", type=int, default=50)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--out", default="results/bench_evaluate", help="where the synthetic data and predictions go")
    parser.add_argument("--skip-plain", action="store_true", help="skip the slow plain implementation")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of decode-only and the fast evaluator")
    args = parser.parse_args(argv)

    from masseg_search.data.synth import generate_dataset

    videos = -(-args.frames // args.frames_per_video)
    out = Path(args.out)
    gt_root = out / f"synth_{videos}x{args.frames_per_video}_{args.height}x{args.width}"
    pred_root = gt_root.parent / (gt_root.name + "_pred")
    print(f"data: {videos} videos x {args.frames_per_video} frames at {args.height}x{args.width} in {gt_root}", flush=True)
    generate_dataset(gt_root, videos=videos, seed=0, height=args.height, width=args.width, frames=args.frames_per_video, workers=os.cpu_count() or 1, progress=True)
    names = open_ground_truth(gt_root).video_names
    write_predictions(gt_root, pred_root, names)
    scored_frames = videos * (args.frames_per_video - 2)
    kernel_name = "compiled C kernel" if compiled.kernel is not None else "pure-Python kernel (compiled one not built)"
    print(f"fast evaluator kernel: {kernel_name}", flush=True)

    decode_runs, fast_runs = [], []
    for run in range(1, max(args.repeat, 1) + 1):
        decode_runs.append(timed(f"decode PNGs only (1 process) #{run}", decode_only, gt_root, pred_root, names))
        fast_runs.append(timed(f"fast evaluator (1 process) #{run}", evaluate_predictions, gt_root, pred_root, workers=1, progress=False))
        if not fast_runs[-1][2].per_frame.equals(fast_runs[0][2].per_frame):
            raise AssertionError("the fast evaluator gave different results on a repeated run")
    decode_s, decoded = min(run[1] for run in decode_runs), decode_runs[0][2]
    fast_s, fast = min(run[1] for run in fast_runs), fast_runs[0][2]
    fast_wall = min(run[0] for run in fast_runs)
    fast2_wall, _, fast2 = timed("fast evaluator (--workers 2)", evaluate_predictions, gt_root, pred_root, workers=2, progress=False)
    _, python_s, python_kernel = timed(
        "fast, pure-Python kernel (1 process)", without_compiled_kernel, evaluate_predictions, gt_root, pred_root, workers=1, progress=False
    )
    per_frame = 1e3 / scored_frames
    metric_s = fast_s - decode_s
    print(f"\n{scored_frames} scored frames, {len(fast.per_object)} objects, {decoded} PNGs decoded; per scored frame, least CPU time of {len(fast_runs)} runs:")
    print(f"decode only            : {decode_s * per_frame:7.3f} ms (ground truth + prediction, first frames included)")
    print(f"fast evaluator         : {fast_s * per_frame:7.3f} ms (decode included)")
    print(f"metric compute         : {metric_s * per_frame:7.3f} ms (fast evaluator - decode only)")
    print(f"metric / decode        : {metric_s / decode_s:7.2f} (target <= 0.5)")
    print(f"--workers 2 (wall)     : {fast_wall / fast2_wall:.2f} x faster than 1 process (wall {fast_wall:.2f} s -> {fast2_wall:.2f} s)")
    print(f"pure-Python kernel     : {python_s * per_frame:7.3f} ms (one run; metric compute {(python_s - decode_s) * per_frame:.3f} ms)")
    assert same_tables(fast, fast2), "workers changed the result"
    print(f"compiled and pure-Python kernels, tables identical: {same_tables(fast, python_kernel)}")
    if not same_tables(fast, python_kernel):
        raise AssertionError("the compiled kernel's tables differ from the pure-Python kernel's")
    if not args.skip_plain:
        plain_wall, plain_s, plain = timed("plain full-frame (1 process)", evaluate_predictions, gt_root, pred_root, workers=1, method="plain", progress=False)
        identical = same_tables(plain, fast)
        print(f"plain full-frame       : {plain_s * per_frame:7.3f} ms")
        print(f"fast vs plain, end to end (decode included): {plain_s / fast_s:.1f} x; tables identical: {identical}")
        print(f"fast vs plain, metric compute only         : {(plain_s - decode_s) / max(metric_s, 1e-9):.1f} x (target >= 12)")
        if not identical:
            raise AssertionError("the fast evaluator's tables differ from the plain implementation's")
    print("\n" + fast.summary())
    print(f"J&F-Mean at full precision: {fast.global_table['J&F-Mean'][0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
