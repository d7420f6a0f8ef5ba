"""Ray Tune's overhead: the same fine-tuning run in this process and as a one-trial `train-sweep`, in one run.

    .venv/bin/python benchmarks/bench_train_sweep.py [--iterations 100] [--epochs 3]

Both runs fine-tune the bundled tiny128 base on the same synthetic data with the same seed, one torch thread each
(a Ray trial gets one CPU), so the results are identical and only the wall time differs. Prints iterations per
second, both wall times and the overhead ratio (target <= 5%).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from masseg_search import PROJECT_ROOT
from masseg_search.config import load_config
from masseg_search.data.synth import generate_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", default=str(PROJECT_ROOT / "results" / "bench" / "train_sweep"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    data = generate_dataset(out / "data", videos=40, seed=7, height=128, width=128, frames=12)
    overrides = {
        "model.config": "tiny128", "model.device": "cpu",
        "model.checkpoint": str(PROJECT_ROOT / "configs" / "checkpoints" / "tiny128_base.pt"),
        "data.root": str(data), "data.synth": None,
        "train.epochs": args.epochs, "train.iterations_per_epoch": args.iterations, "train.val_videos": 6,
        "train_sweep.space": {"loss.dice": {"choices": [1.0]}}, "train_sweep.samples": 1,
        "train_sweep.storage": str(out / "sweeps"), "train_sweep.cpus_per_trial": 1,
    }
    config = load_config("demo", overrides)
    iterations = args.epochs * args.iterations

    from masseg_search.finetune.loop import train_run

    start = time.perf_counter()
    plain = train_run(config, tempfile.mkdtemp(prefix="plain_", dir=out), progress=False)
    plain_wall = time.perf_counter() - start

    from masseg_search.finetune.sweep import run_sweep

    start = time.perf_counter()
    sweep = run_sweep(config, name=f"overhead_{time.time_ns()}")
    sweep_wall = time.perf_counter() - start
    import ray

    ray.shutdown()  # stop the local cluster before the interpreter exits (its workers abort noisily otherwise)

    result = {
        "iterations": iterations,
        "plain_wall_s": round(plain_wall, 2),
        "plain_iterations_per_s": round(iterations / sum(r.train_seconds for r in plain.history), 2),
        "sweep_wall_s": round(sweep_wall, 2),
        "overhead": round(sweep_wall / plain_wall - 1, 4),
        "plain_best_val_jf": plain.best_val_jf,
        "sweep_best_val_jf": sweep.best_val_jf,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
