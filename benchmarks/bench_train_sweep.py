"""Ray Tune's overhead: the same fine-tuning run with and without Ray, measured two ways in one run.

    .venv/bin/python benchmarks/bench_train_sweep.py [--iterations 100] [--epochs 3] [--repeats 1] [--mode both]

Both sides fine-tune the bundled tiny128 base on the same synthetic data with the same seed and one torch thread
(a Ray trial with ``cpus_per_trial: 1`` gets ``OMP_NUM_THREADS=1`` from Ray), so their results are identical and
only the cost differs.

``--mode cli`` (the comparison a user makes): ``masseg-search train`` against a one-trial ``masseg-search
train-sweep``, each a fresh process started from here, so each pays its own interpreter start, imports, model build
and exit (for the sweep: Ray's start, the trial's process and imports, Ray's shutdown). Wall time is the command's;
CPU time is that of every process it started, Ray's daemons and workers included (from a cgroup of their own, else
from /proc samples: ``cpu_method``). ``OMP_NUM_THREADS=1`` is set for both commands.

``--mode in-process`` (the previous figure): the plain run is ``train_run`` in this already warm process (torch and
sam2 imported, no process start), the sweep is ``run_sweep`` here with Ray started and stopped around it. It puts
the trial's process start and imports on Ray's side, which the plain side never pays here: an upper bound.

Each pair prints, among others:

- ``overhead`` = sweep wall / plain wall - 1 (target <= 5%), ``cpu_overhead`` the same for CPU seconds;
- ``per_iteration_overhead``: the training part inside the trial against the plain run's (wall, from each epoch's
  ``train_seconds``), ``per_iteration_cpu_overhead`` the same for the CPU the process used while training
  (``train_cpu_seconds``: Ray's threads inside the trial process count); the steady state, whatever the run length;
- ``fixed_s``: what Ray adds once per run (and per epoch: reports, checkpoints), i.e. the wall difference minus the
  difference of training + validation times; ``fixed_cpu_s`` likewise for CPU (training only);
- ``trial_epoch_overhead_s``: median time a trial's epoch spends outside training and validation from epoch 2 on
  (its checkpoint, as the plain run writes, plus Ray's report).

With ``--repeats N`` (alternating which side goes first) the medians follow, and ``break_even_plain_s``: the plain
run's length in seconds from which ``fixed_s / length + per_iteration_overhead`` is under 5% (a negative
per-iteration median counts as 0; None when it is 5% or more). On a machine shared with other jobs trust the
CPU figures; the wall figures mean something only on an idle one.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from masseg_search import PROJECT_ROOT

TARGET = 0.05
PR_SET_CHILD_SUBREAPER = 36
TRIAL_CPU_FILE = "trial_cpu.json"


def _cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ one command, all its processes


def run_measured(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Wall and CPU seconds of ``command`` and every process it starts, run through this script's
    ``--run-measured`` (a fresh process that waits for the command and all its descendants)."""
    result = Path(tempfile.mkstemp(prefix="measured_", suffix=".json")[1])
    with log.open("w") as output:
        subprocess.run([sys.executable, __file__, "--run-measured", str(result), "--", *command], env=env,
                       stdout=output, stderr=subprocess.STDOUT, check=True)
    measured = json.loads(result.read_text())
    result.unlink()
    if measured["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({measured['returncode']}); see {log}")
    return measured


class CpuGroup:
    """The CPU seconds of a process and all its descendants, from a cgroup of their own (cgroup v1 ``cpuacct`` or
    v2, where this user may make one; exact) or else from /proc, sampled every ``interval`` seconds (what a
    process burns after its last sample is missed). ``RUSAGE_CHILDREN`` would miss Ray's workers: the raylet
    ignores SIGCHLD, so they are reaped without their CPU time being passed on."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.folder: Path | None = None
        self.seen: dict[tuple[int, int], float] = {}  # (pid, start tick) -> last CPU seconds (polling)
        name = f"masseg-bench-{os.getpid()}"
        own = Path("/proc/self/cgroup").read_text().splitlines()
        v2 = next((line.split(":", 2)[2] for line in own if line.startswith("0::")), None)
        for candidate in (Path("/sys/fs/cgroup/cpuacct") / name,
                          *([Path("/sys/fs/cgroup/unified") / v2.lstrip("/") / name,
                             Path("/sys/fs/cgroup") / v2.lstrip("/") / name] if v2 is not None else [])):
            try:
                candidate.mkdir()
            except OSError:
                continue
            if (candidate / "cpuacct.usage").is_file() or (candidate / "cpu.stat").is_file():
                self.folder = candidate
                break
            candidate.rmdir()

    @property
    def method(self) -> str:
        """How the CPU seconds are counted."""
        return "cgroup" if self.folder is not None else f"/proc every {self.interval:g} s"

    def add(self, pid: int) -> None:
        """Put ``pid`` (and so everything it starts from now on) in the group."""
        if self.folder is not None:
            (self.folder / "cgroup.procs").write_text(str(pid))

    def cpu_seconds(self) -> float:
        """CPU seconds of the group so far (polling: as of the last samples)."""
        if self.folder is None:
            return sum(self.seen.values())
        if (self.folder / "cpuacct.usage").is_file():
            return int((self.folder / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (self.folder / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6

    def sample(self, root: int) -> None:
        """Polling: note the CPU seconds of ``root``'s live descendants (and its adopted orphans)."""
        if self.folder is not None:
            return
        parents, stats = {}, {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:  # gone meanwhile
                    continue
                parents[int(entry.name)], stats[int(entry.name)] = int(fields[1]), fields
        ticks = os.sysconf("SC_CLK_TCK")
        for pid, fields in stats.items():
            ancestor = parents.get(pid)
            while ancestor not in (None, 0, 1, root):
                ancestor = parents.get(ancestor)
            if ancestor == root:
                self.seen[(pid, int(fields[19]))] = (int(fields[11]) + int(fields[12])) / ticks

    def close(self) -> None:
        """Remove the (empty by now) cgroup."""
        if self.folder is not None:
            self.folder.rmdir()


def _run_as_subreaper(result: Path, command: list[str]) -> None:
    """``--run-measured``: run ``command``, wait for it and everything it started (adopted here once their
    parents are gone), write the wall seconds of the command and the CPU seconds of all of them."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
    group = CpuGroup()
    started = time.perf_counter()
    process = subprocess.Popen(command, preexec_fn=lambda: group.add(os.getpid()))
    while process.poll() is None:
        group.sample(os.getpid())
        time.sleep(group.interval)
    wall = time.perf_counter() - started
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # Ray's daemons and workers, adopted here once their parents are gone
        group.sample(os.getpid())
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.05)
    else:
        raise RuntimeError(f"processes of {command} still alive 60 s after it exited")
    cpu = group.cpu_seconds()
    group.close()
    result.write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "cpu_method": group.method,
                                  "returncode": process.returncode, "all_exited_s": time.perf_counter() - started}))


# ------------------------------------------------------------------------------------------------- the runs


def _epochs(frame: Any) -> dict[str, float]:
    """Training / validation sums of a history.csv or progress.csv frame."""
    return {"train_s": float(frame["train_seconds"].sum()), "train_cpu_s": float(frame["train_cpu_seconds"].sum()),
            "val_s": float(frame["val_seconds"].sum())}


def cli_pair(config_values: dict[str, Any], out: Path) -> tuple[Callable[[], dict], Callable[[], dict]]:
    """The two fresh-process runs: ``masseg-search train`` and a one-trial ``masseg-search train-sweep``."""
    import pandas as pd
    import yaml

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def plain_run() -> dict:
        folder = Path(tempfile.mkdtemp(prefix="cli_plain_", dir=out))
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(config_values, sort_keys=False))
        measured = run_measured([sys.executable, "-m", "masseg_search", "train", "--config", str(config_path),
                                 "--out", str(folder / "run"), "--no-progress"], env, folder / "log.txt")
        epochs = _epochs(pd.read_csv(folder / "run" / "history.csv"))
        return {"plain_wall_s": measured["wall_s"], "plain_cpu_s": measured["cpu_s"],
                "cpu_method": measured["cpu_method"],
                **{f"plain_{key}": value for key, value in epochs.items()}}

    def sweep_run() -> dict:
        folder = Path(tempfile.mkdtemp(prefix="cli_sweep_", dir=out))
        values = json.loads(json.dumps(config_values))
        values["train_sweep"]["storage"] = str(folder / "sweeps")
        config_path = folder / "config.yaml"
        config_path.write_text(yaml.safe_dump(values, sort_keys=False))
        measured = run_measured([sys.executable, "-m", "masseg_search", "train-sweep", "--config", str(config_path),
                                 "--name", "overhead"], env, folder / "log.txt")
        (progress_path,) = (folder / "sweeps" / "overhead").glob("*/progress.csv")
        progress = pd.read_csv(progress_path)
        outside = progress["time_this_iter_s"] - progress["train_seconds"] - progress["val_seconds"]
        return {"sweep_wall_s": measured["wall_s"], "sweep_cpu_s": measured["cpu_s"],
                **{f"trial_{key}": value for key, value in _epochs(progress).items()},
                "trial_epoch_overhead_s": float(outside.iloc[1:].median()) if len(outside) > 1 else float("nan")}

    return plain_run, sweep_run


def measured_trial(params: dict[str, Any], base_config: dict[str, Any]) -> None:
    """The sweep's own trial function; before each epoch's report (Tune may end the trial inside the last one) the
    trial process's CPU seconds so far (and its pid) go to the storage folder."""
    from masseg_search.finetune.sweep import trial

    report = trial._report_epoch
    target = Path(base_config["train_sweep"]["storage"]) / TRIAL_CPU_FILE

    def report_with_cpu(record: Any, checkpoint_path: Path | None) -> None:
        target.write_text(json.dumps({"pid": os.getpid(), "cpu_s": _cpu_seconds()}))
        report(record, checkpoint_path)

    trial._report_epoch = report_with_cpu  # this trial process only
    trial.run_trial(params, base_config)


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


def in_process_pair(config_values: dict[str, Any], out: Path) -> tuple[Callable[[], dict], Callable[[], dict]]:
    """The two runs in this process: ``train_run`` (warm) and ``run_sweep`` with Ray started and stopped around it."""
    import pandas as pd

    from masseg_search.config import config_from_dict
    from masseg_search.finetune.loop import train_run
    from masseg_search.finetune.sweep import ray_session, run_sweep

    def plain_run() -> dict:
        config = config_from_dict(config_values)
        cpu, start = _cpu_seconds(), time.perf_counter()
        plain = train_run(config, tempfile.mkdtemp(prefix="plain_", dir=out), progress=False)
        wall = time.perf_counter() - start
        frame = pd.DataFrame([record.metrics() for record in plain.history])
        return {"plain_wall_s": wall, "plain_cpu_s": _cpu_seconds() - cpu,
                **{f"plain_{key}": value for key, value in _epochs(frame).items()}}

    def sweep_run() -> dict:
        storage = Path(tempfile.mkdtemp(prefix="sweeps_", dir=out))
        values = json.loads(json.dumps(config_values))
        values["train_sweep"]["storage"] = str(storage)
        config = config_from_dict(values)
        cpu, start = _cpu_seconds(), time.perf_counter()
        with ray_session(None, str(storage)):  # what run_sweep does when no Ray runs yet, kept open to read the daemons
            sweep = run_sweep(config, name="overhead", trainable=measured_trial)
            trial = json.loads((storage / TRIAL_CPU_FILE).read_text())
            ray_cpu = _descendants_cpu(exclude={trial["pid"]})
        wall, driver_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        (progress_path,) = sweep.experiment_dir.glob("*/progress.csv")
        progress = pd.read_csv(progress_path)
        outside = progress["time_this_iter_s"] - progress["train_seconds"] - progress["val_seconds"]
        return {"sweep_wall_s": wall, "sweep_cpu_s": driver_cpu + trial["cpu_s"] + ray_cpu,
                **{f"trial_{key}": value for key, value in _epochs(progress).items()},
                "trial_epoch_overhead_s": float(outside.iloc[1:].median()) if len(outside) > 1 else float("nan"),
                "driver_cpu_s": driver_cpu, "trial_cpu_s": trial["cpu_s"], "ray_daemons_cpu_s": ray_cpu}

    return plain_run, sweep_run


def derived(pair: dict[str, Any]) -> dict[str, float]:
    """Ratios and the split into per-iteration and fixed costs of one pair of runs."""
    work = lambda side: pair[f"{side}_train_s"] + pair[f"{side}_val_s"]  # noqa: E731
    return {
        "overhead": pair["sweep_wall_s"] / pair["plain_wall_s"] - 1,
        "cpu_overhead": pair["sweep_cpu_s"] / pair["plain_cpu_s"] - 1,
        "per_iteration_overhead": pair["trial_train_s"] / pair["plain_train_s"] - 1,
        "per_iteration_cpu_overhead": pair["trial_train_cpu_s"] / pair["plain_train_cpu_s"] - 1,
        "fixed_s": (pair["sweep_wall_s"] - pair["plain_wall_s"]) - (work("trial") - work("plain")),
        "fixed_cpu_s": ((pair["sweep_cpu_s"] - pair["plain_cpu_s"])
                        - (pair["trial_train_cpu_s"] - pair["plain_train_cpu_s"])),
    }


SUMMARY_KEYS = ("overhead", "cpu_overhead", "per_iteration_overhead", "per_iteration_cpu_overhead", "fixed_s",
                "fixed_cpu_s", "trial_epoch_overhead_s", "plain_wall_s", "sweep_wall_s")


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--run-measured" and sys.argv[3] == "--":
        _run_as_subreaper(Path(sys.argv[2]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="iterations per epoch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1, help="pairs of runs per mode, alternating which goes first")
    parser.add_argument("--mode", choices=("cli", "in-process", "both"), default="both")
    parser.add_argument("--out", default=str(PROJECT_ROOT / "results" / "bench" / "train_sweep"))
    args = parser.parse_args()

    import torch

    from masseg_search.config import load_config
    from masseg_search.data.synth import generate_dataset

    torch.set_num_threads(1)  # the in-process plain run: one thread, as the trial
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = generate_dataset(out / "data", videos=40, seed=7, height=128, width=128, frames=12)
    config = load_config("demo", {
        "model.config": "tiny128", "model.device": "cpu",
        "model.checkpoint": str(PROJECT_ROOT / "configs" / "checkpoints" / "tiny128_base.pt"),
        "data.root": str(data), "data.synth": None,
        "train.epochs": args.epochs, "train.iterations_per_epoch": args.iterations, "train.val_videos": 6,
        "train_sweep.space": {"loss.dice": {"choices": [1.0]}}, "train_sweep.samples": 1,
        "train_sweep.cpus_per_trial": 1,
    })
    config_values = config.model_dump(by_alias=True, exclude={"source"})
    iterations = args.epochs * args.iterations

    modes = ("cli", "in-process") if args.mode == "both" else (args.mode,)
    for mode in modes:
        plain_run, sweep_run = (cli_pair if mode == "cli" else in_process_pair)(config_values, out)
        pairs = []
        for repeat in range(args.repeats):
            runs = (plain_run, sweep_run) if repeat % 2 == 0 else (sweep_run, plain_run)
            pair: dict[str, Any] = {"mode": mode, "iterations": iterations,
                                    "first": "plain" if repeat % 2 == 0 else "sweep"}
            for run in runs:
                pair.update(run())
            pair.update(derived(pair))
            pairs.append({key: round(value, 4) if isinstance(value, float) else value for key, value in pair.items()})
            print(json.dumps(pairs[-1], indent=1), flush=True)
        medians = {f"median_{key}": round(statistics.median(p[key] for p in pairs), 4) for key in SUMMARY_KEYS}
        steady = max(medians["median_per_iteration_overhead"], 0.0)  # below zero is noise, not a gain from Ray
        medians["break_even_plain_s"] = (round(medians["median_fixed_s"] / (TARGET - steady), 1)
                                         if steady < TARGET else None)
        print(json.dumps({"mode": mode, "repeats": len(pairs), **medians}, indent=1), flush=True)


if __name__ == "__main__":
    main()
