"""Ray Tune's overhead: the same fine-tuning run in this process and as a one-trial `train-sweep`, in one run.

    .venv/bin/python benchmarks/bench_train_sweep.py [--iterations 100] [--epochs 3] [--repeats 1]

Both runs fine-tune the bundled tiny128 base on the same synthetic data with the same seed, one torch thread each
(a Ray trial gets one CPU), so the results are identical and only the cost differs. Prints iterations per second
and, for each side, wall time and CPU time:

- wall: ``overhead`` = sweep wall / plain wall - 1 (target <= 5%), split into Ray's fixed cost ``ray_fixed_s``
  (starting Ray and the trial process, the sweep's bookkeeping: sweep wall minus the trial's own ``time_total_s``)
  and ``trial_vs_plain`` (the trial's own time against the plain run);
- split by where the time goes: ``*_outside_s`` is a run's wall time outside its epochs' training and validation
  (building the model, checkpoints; for the trial also its process start and imports), ``ray_startup_s`` =
  ``ray_fixed_s`` + trial outside - plain outside (what Ray adds once per run), ``trial_epoch_overhead_s`` the
  median per-epoch time a trial spends outside training and validation from epoch 2 on (reporting, checkpoints),
  ``trial_train_vs_plain`` the training time inside the trial against the plain run's (load noise, and Ray's
  daemons sharing the core when pinned to one);
- CPU: the plain run's CPU seconds (this process) against the sweep's: this process (the Tune driver), the trial
  process (its own ``getrusage`` at the end of the trial, imports included) and Ray's daemons and idle workers
  (their /proc CPU times just before Ray stops). On a shared machine, where another job takes the core part of the
  time, ``cpu_overhead`` is the figure that still means something; wall times only do on an idle one.

``--repeats N`` runs N pairs, alternating which goes first, and adds the medians.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from masseg_search import PROJECT_ROOT
from masseg_search.config import load_config
from masseg_search.data.synth import generate_dataset

TRIAL_CPU_FILE = "trial_cpu.json"


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def measured_trial(params: dict[str, Any], base_config: dict[str, Any]) -> None:
    """The sweep's own trial function; before each epoch's report (Tune may end the trial inside the last one) the
    trial process's CPU seconds so far (and its pid) go to the storage folder."""
    from masseg_search.finetune import sweep

    report = sweep._report_epoch
    target = Path(base_config["train_sweep"]["storage"]) / TRIAL_CPU_FILE

    def report_with_cpu(record: Any, checkpoint_path: Path | None) -> None:
        target.write_text(json.dumps({"pid": os.getpid(), "cpu_s": _cpu_seconds()}))
        report(record, checkpoint_path)

    sweep._report_epoch = report_with_cpu  # this trial process only
    sweep.run_trial(params, base_config)


def _descendants_cpu(exclude: set[int]) -> float:
    """CPU seconds (user + system, own only) of this process's live descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    me, total = os.getpid(), 0.0
    for pid in times:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, me):
            ancestor = parents.get(ancestor)
        if ancestor == me and pid not in exclude:
            total += times[pid]
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs, alternating which goes first")
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
        "train_sweep.cpus_per_trial": 1,
    }
    iterations = args.epochs * args.iterations

    import pandas as pd
    import ray

    from masseg_search.finetune.loop import train_run
    from masseg_search.finetune.sweep import run_sweep

    def plain_run() -> dict:
        config = load_config("demo", overrides)
        cpu, start = _cpu_seconds(), time.perf_counter()
        plain = train_run(config, tempfile.mkdtemp(prefix="plain_", dir=out), progress=False)
        wall = time.perf_counter() - start
        train = sum(r.train_seconds for r in plain.history)
        return {"plain_wall_s": wall, "plain_cpu_s": _cpu_seconds() - cpu,
                "plain_outside_s": wall - train - sum(r.val_seconds for r in plain.history), "plain_train_s": train,
                "plain_iterations_per_s": iterations / train, "plain_best_val_jf": plain.best_val_jf}

    def sweep_run() -> dict:
        storage = Path(tempfile.mkdtemp(prefix="sweeps_", dir=out))
        config = load_config("demo", {**overrides, "train_sweep.storage": str(storage)})
        cpu, start = _cpu_seconds(), time.perf_counter()
        sweep = run_sweep(config, name="overhead", trainable=measured_trial)
        wall, driver_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        trial = json.loads((storage / TRIAL_CPU_FILE).read_text())
        ray_cpu = _descendants_cpu(exclude={trial["pid"]})
        ray.shutdown()  # each sweep starts its own local Ray, as `train-sweep` does
        (progress_path,) = sweep.experiment_dir.glob("*/progress.csv")
        progress = pd.read_csv(progress_path)
        trial_wall = float(progress["time_total_s"].iloc[-1])
        outside = progress["time_this_iter_s"] - progress["train_seconds"] - progress["val_seconds"]
        return {"sweep_wall_s": wall, "trial_wall_s": trial_wall, "ray_fixed_s": wall - trial_wall,
                "trial_outside_s": float(outside.sum()), "trial_train_s": float(progress["train_seconds"].sum()),
                "trial_epoch_overhead_s": float(outside.iloc[1:].median()) if len(outside) > 1 else float("nan"),
                "sweep_cpu_s": driver_cpu + trial["cpu_s"] + ray_cpu, "driver_cpu_s": driver_cpu,
                "trial_cpu_s": trial["cpu_s"], "ray_daemons_cpu_s": ray_cpu, "sweep_best_val_jf": sweep.best_val_jf}

    pairs = []
    for repeat in range(args.repeats):
        runs = (plain_run, sweep_run) if repeat % 2 == 0 else (sweep_run, plain_run)
        pair: dict[str, Any] = {"iterations": iterations, "first": "plain" if repeat % 2 == 0 else "sweep"}
        for run in runs:
            pair.update(run())
        pair["overhead"] = pair["sweep_wall_s"] / pair["plain_wall_s"] - 1
        pair["trial_vs_plain"] = pair["trial_wall_s"] / pair["plain_wall_s"] - 1
        pair["cpu_overhead"] = pair["sweep_cpu_s"] / pair["plain_cpu_s"] - 1
        pair["ray_startup_s"] = pair["ray_fixed_s"] + pair["trial_outside_s"] - pair["plain_outside_s"]
        pair["trial_train_vs_plain"] = pair["trial_train_s"] / pair["plain_train_s"] - 1
        pairs.append({key: round(value, 4) if isinstance(value, float) else value for key, value in pair.items()})
        print(json.dumps(pairs[-1], indent=1), flush=True)
    if len(pairs) > 1:
        print(json.dumps({"repeats": len(pairs),
                          **{f"median_{key}": round(statistics.median(p[key] for p in pairs), 4)
                             for key in ("overhead", "cpu_overhead", "ray_fixed_s", "ray_startup_s",
                                         "trial_epoch_overhead_s", "trial_train_vs_plain")}}, indent=1))


if __name__ == "__main__":
    main()
