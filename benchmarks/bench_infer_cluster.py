"""Benchmark `infer` on Ray workers against the plain local run, in one run: videos per second on this machine.

    .venv/bin/python benchmarks/bench_infer_cluster.py [--videos 8] [--frames 12] [--size 128] [--repeats 2]

Makes (once) a synthetic dataset and times the same videos and configurations three ways, each into a fresh
predictions folder:

* local: ``run_inference`` in this process, torch's default threads (all cores): what ``masseg-search infer`` runs;
* local 1 thread: the same with one torch thread (``infer --threads 1``), what each 1-CPU Ray worker runs;
* ray x1: ``run_inference_on_ray`` with one 1-CPU worker (Ray's own cost against local 1 thread);
* ray x2: two 1-CPU workers, each keeping its model loaded across its videos.

Ray runs on a local Ray of ``max(cores, --workers)`` CPUs started once here (127.0.0.1 only); its start is timed
apart. Each Ray time includes starting the workers and building their models, so it is what a command pays. The
modes are interleaved ``--repeats`` times (the machine is shared) and the best time of each is kept. The default
model is the demo's (tiny128 with the bundled checkpoint). Figures go to ``results/bench/infer_cluster.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masseg_search import CONFIGS_DIR  # noqa: E402
from masseg_search.cluster import start_local_ray  # noqa: E402
from masseg_search.data.layout import atomic_write_bytes, open_dataset  # noqa: E402
from masseg_search.data.synth import generate_dataset  # noqa: E402
from masseg_search.inference import run_inference, run_inference_on_ray  # noqa: E402

CONFIGS = "20,-10;7.5,-4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny128")
    parser.add_argument("--checkpoint", default=str(CONFIGS_DIR / "checkpoints" / "tiny128_base.pt"))
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="the largest Ray run (ray x1 .. ray xN)")
    parser.add_argument("--out", default="results/bench/infer_cluster")
    args = parser.parse_args()

    import torch

    cores = os.cpu_count() or 1
    out = Path(args.out).resolve()
    data = out / "data"
    if not (data / "JPEGImages").is_dir():
        generate_dataset(data, videos=args.videos, seed=0, height=args.size, width=args.size, frames=args.frames,
                         splits={"all": 1.0})
    videos = open_dataset(data).video_names[: args.videos]

    load_before = [round(value, 1) for value in os.getloadavg()]  # the machine is shared: how busy it was
    started = time.perf_counter()
    start_local_ray(num_cpus=max(cores, args.workers))
    ray_start = time.perf_counter() - started

    def local(threads: int) -> Callable[[Path], None]:
        def run(folder: Path) -> None:
            default = torch.get_num_threads()
            torch.set_num_threads(threads or default)
            try:
                run_inference(args.model, args.checkpoint, data, folder, CONFIGS, videos=videos, device="cpu",
                              progress=False)
            finally:
                torch.set_num_threads(default)
        return run

    def on_ray(workers: int) -> Callable[[Path], None]:
        def run(folder: Path) -> None:
            result = run_inference_on_ray("local", args.model, args.checkpoint, data, folder, CONFIGS, videos=videos,
                                          workers=workers, gpus_per_worker=0, cpus_per_worker=1,
                                          device="cpu", progress=False)
            assert len(result.ran) == len(videos) and result.workers == workers
        return run

    modes = {"local": local(0), "local 1 thread": local(1)}
    modes.update({f"ray x{count}": on_ray(count) for count in range(1, args.workers + 1)})
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for repeat in range(args.repeats):
        for name, run in modes.items():
            folder = out / "predictions" / f"{name.replace(' ', '_')}_{repeat}"
            shutil.rmtree(folder, ignore_errors=True)
            began = time.perf_counter()
            run(folder)
            seconds[name].append(time.perf_counter() - began)
            print(f"{name:14s} repeat {repeat}: {seconds[name][-1]:.1f} s", flush=True)
    best = {name: min(times) for name, times in seconds.items()}
    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads (local)",
        "model": args.model, "videos": len(videos), "frames": args.frames, "size": args.size, "configs": CONFIGS,
        "ray_start_seconds": round(ray_start, 2), "load_average_before": load_before, "seconds": seconds,
        "videos_per_second": {name: round(len(videos) / value, 3) for name, value in best.items()},
        "speedup_vs_local": {name: round(best["local"] / value, 2) for name, value in best.items()},
        "speedup_vs_local_1_thread": {name: round(best["local 1 thread"] / value, 2) for name, value in best.items()},
        "load_average_after": [round(value, 1) for value in os.getloadavg()],
    }
    atomic_write_bytes(out.parent / "infer_cluster.json", json.dumps(figures, indent=1).encode())
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
