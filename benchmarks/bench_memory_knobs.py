"""The engine with mixed memory knobs per row against uniform ones: same rows, same video, tiny model, CPU.

Uniform: 2 objects x 4 (scale, bias) pairs at SAM2's default knobs (every row reads the same memory frames, no
padding). Mixed: 2 objects x 4 configurations whose memory knobs differ (stride, memory frames, pointers, multimask,
admission), so rows read different frames and memory attention runs with padding and a key mask. Image features
are cached after a warm-up pass so the timing is tracking only. Writes results/bench/memory_knobs.json.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from masseg_search import CONFIGS_DIR
from masseg_search.data.layout import atomic_write_bytes, open_dataset, write_mask
from masseg_search.store.knobs import Knobs

UNIFORM = [Knobs(20, -10), Knobs(7.5, -4), Knobs(12.5, -6), Knobs(30, -2.5)]
MIXED = [Knobs(20, -10), Knobs(7.5, -4, memory_stride=2, memory_frames=4), Knobs(12.5, -6, obj_ptrs=6, multimask=0),
         Knobs(30, -2.5, admit_score=0.0, admit_iou=0.5, keep_present=2)]


def write_video(root: Path, frames: int, size: int) -> None:
    rng = np.random.default_rng(0)
    image_dir, annotation_dir = root / "JPEGImages" / "bench", root / "Annotations" / "bench"
    image_dir.mkdir(parents=True, exist_ok=True)
    background = rng.integers(0, 90, size=(size, size, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for t in range(frames):
        image, mask = background.copy(), np.zeros((size, size), np.uint8)
        for k, (cx, cy, color) in enumerate([(0.3 + 0.01 * t, 0.4, 200), (0.7, 0.6 - 0.01 * t, 150)]):
            inside = (xx - cx * size) ** 2 + (yy - cy * size) ** 2 <= (0.12 * size) ** 2
            image[inside] = color
            mask[inside] = k + 1
        Image.fromarray(image.astype(np.uint8)).save(image_dir / f"{t:05d}.jpg")
        if t == 0:
            write_mask(annotation_dir / f"{t:05d}.png", mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/bench/memory_knobs.json")
    parser.add_argument("--work", default="/tmp/bench_memory_knobs")
    args = parser.parse_args()
    import torch

    from masseg_search.model.build import build_model
    from masseg_search.model.engine import FeatureCache, MultiConfigEngine

    torch.set_num_threads(1)
    root = Path(args.work)
    if not (root / "JPEGImages" / "bench").is_dir():
        write_video(root, args.frames, 128)
    video = open_dataset(root).video("bench")
    engine = MultiConfigEngine(build_model("tiny128", CONFIGS_DIR / "checkpoints" / "tiny128_base.pt"), "cpu")
    cache = FeatureCache(512 * 2**20)
    engine.predict_video(video, {1: UNIFORM[:1], 2: UNIFORM[:1]}, feature_cache=cache)  # fills the cache
    times: dict[str, list[float]] = {"uniform": [], "mixed": []}
    for _ in range(args.repeats):
        for name, configs in (("uniform", UNIFORM), ("mixed", MIXED)):
            start = time.perf_counter()
            engine.predict_video(video, {1: configs, 2: configs}, feature_cache=cache)
            times[name].append(time.perf_counter() - start)
    figures = {name: min(values) for name, values in times.items()}
    figures.update(frames=args.frames, rows=2 * len(UNIFORM), model="tiny128", device="cpu", threads=1,
                   mixed_over_uniform=figures["mixed"] / figures["uniform"])
    atomic_write_bytes(Path(args.out), json.dumps(figures, indent=1).encode())
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
