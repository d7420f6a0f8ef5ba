"""`masseg-search run`: the stages of :mod:`masseg_search.pipeline.stages` chained from one resolved config, skipping
what is done, continuing what was interrupted, and recording everything in ``<out>/pipeline.yaml``.

A stage is skipped when its record says ``done``, its fingerprint (the config keys it reads, without the keys that
only change how fast it runs; the digests of its input files; the choices of the stages before it) is the recorded
one, and its outputs are still complete. Otherwise it runs: first ``reset`` when its recorded fingerprint differs
(what the changed inputs made stale is cleared), then the work, which resumes inside (sweeps, studies, inference
and fusion pick up where they stopped). Once a stage runs, every stage after it runs too (each resuming, so what
is still valid costs little). A stage is recorded ``running`` before it starts and ``done`` after its outputs are
complete, each time by an atomic rename: ``kill -9`` at any point and the same command continues.

Where things go: ``pipeline.out`` (``--out``; default ``results/``) holds pipeline.yaml, config.yaml (the resolved
config every recorded command passes), scene_types/, predictions/, plans/, submissions/, evaluations/ and
report.html. With the default ``results/`` the sweeps, studies and tune-mss folders stay where the config puts them
(the places the single-stage commands use); another ``--out`` also gathers those left at their default paths (and a
synthetic dataset at the default root) under it, so two runs never share a study or a sweep.
"""
from __future__ import annotations

import contextlib
import difflib
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from masseg_search.config import (
    DataSection,
    MssSection,
    PipelineSection,
    ProjectConfig,
    TrainSweepSection,
    config_from_dict,
    dump_config,
    load_config,
    set_dotted,
)
from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.pipeline.record import DONE, RUNNING, PipelineRecord, fingerprint, now
from masseg_search.pipeline.stages import (
    STAGES,
    RunPaths,
    Stage,
    StageContext,
    changed_keys,
    command,
    config_values,
    describe_choices,
    stage_fingerprint,
    stage_names,
)


@dataclass
class RunResult:
    """What a `run` did: the stages it ran and skipped, and the record."""

    out: Path
    config: ProjectConfig
    record: PipelineRecord
    ran: list[str]
    skipped: list[str]
    seconds: float

    def choices(self, stage: str) -> dict[str, Any]:
        """The recorded choices of one stage."""
        entry = self.record.stage(stage)
        return dict(entry.get("choices") or {}) if entry else {}


def output_overrides(config: ProjectConfig, out: Path) -> dict[str, Any]:
    """The output keys left at their default paths, placed under ``out`` (see the module docstring)."""
    moves: dict[str, Any] = {}
    if config.train_sweep is not None and config.train_sweep.storage == TrainSweepSection().storage:
        moves["train_sweep.storage"] = str(out / "sweeps")
    mss_default = MssSection()
    if config.mss.results_dir == mss_default.results_dir:
        moves["mss.results_dir"] = str(out / "mss")
    if config.mss.storage is None:
        moves["mss.storage"] = f"sqlite:///{out / 'studies' / (config.pipeline.study + '.db')}"
    if config.mss.artifact_dir == mss_default.artifact_dir:
        moves["mss.artifact_dir"] = str(out / "studies" / "artifacts")
    if config.data.synth is not None and config.data.root == DataSection().root:
        moves["data.root"] = str(out / "data")
    return moves


def resolve_run_config(config: str | Path | ProjectConfig | None = None, overrides: dict[str, Any] | None = None,
                       out: str | Path | None = None) -> ProjectConfig:
    """The config a run reads: the file (or object), its ``--set`` overrides, ``pipeline.out`` = ``out`` (absolute),
    and the output paths placed under it when it is not the default (:func:`output_overrides`)."""
    overrides = dict(overrides or {})
    if out is not None:
        overrides["pipeline.out"] = str(out)
    base = _load(config, overrides)
    out_path = Path(base.pipeline.out)
    if out_path.exists() and not out_path.is_dir():
        raise MassegError("--out is a file, not a folder", out_path, "pass a new or existing folder (default results/)")
    overrides["pipeline.out"] = str(out_path.resolve())
    if out_path.resolve() != Path(PipelineSection().out).resolve():
        overrides = {**output_overrides(base, out_path.resolve()), **overrides}
    return _load(config, overrides)


def _load(config: str | Path | ProjectConfig | None, overrides: dict[str, Any]) -> ProjectConfig:
    if not isinstance(config, ProjectConfig):
        return load_config(config, overrides)
    values = config.model_dump(by_alias=True, exclude={"source"})
    for dotted, value in overrides.items():
        set_dotted(values, dotted, value)
    return config_from_dict(values, config.source or "<config>")


def _stage_index(names: list[str], name: str | None, option: str) -> int | None:
    if name is None:
        return None
    if name not in names:
        close = difflib.get_close_matches(name, names, n=1)
        raise MassegError(f"{option} {name!r} is not a stage" + (f" (did you mean {close[0]!r}?)" if close else ""),
                          fix=f"use one of: {', '.join(names)}")
    return names.index(name)


LOCK_FILE = ".pipeline.lock"
# imported once by the forkserver that process pools start their workers from during a run
POOL_PRELOAD = ["masseg_search.ensemble", "masseg_search.evaluation", "masseg_search.data.synth"]


@contextlib.contextmanager
def workers_from_a_forkserver() -> Iterator[None]:
    """While the stages run, process pools (select, ensemble, evaluate) start their workers from a forkserver, a
    fresh single-threaded process, instead of forking this one: after the sweep, Ray's gRPC client threads stay
    alive in this process (``ray.shutdown`` does not stop them), and a worker forked from it hung on a lock one of
    them held (the demo's evaluate stage, 2 workers, seen waiting 14 minutes)."""
    previous = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_forkserver_preload(POOL_PRELOAD)
    multiprocessing.set_start_method("forkserver", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(previous, force=True)


def run_pipeline(config: str | Path | ProjectConfig | None = None, overrides: dict[str, Any] | None = None,
                 out: str | Path | None = None, from_stage: str | None = None, until_stage: str | None = None,
                 stages: tuple[Stage, ...] | list[Stage] = STAGES, progress: bool = True,
                 invocation: str | None = None) -> RunResult:
    """Run the pipeline (see the module docstring) and return what ran; ``from_stage`` reruns that stage and the
    ones after it even when done, ``until_stage`` stops after that stage. ``invocation`` is the command line
    recorded as what made the folder (default: one built from the arguments). Process pools start their workers
    from a forkserver meanwhile (:func:`workers_from_a_forkserver`), so a script calling this keeps its own work
    under ``if __name__ == "__main__":`` (Python's rule for such workers)."""
    started = time.perf_counter()
    resolved = resolve_run_config(config, overrides, out)
    paths = RunPaths(Path(resolved.pipeline.out))
    names = stage_names(stages)
    first = _stage_index(names, from_stage, "--from")
    last = _stage_index(names, until_stage, "--until")
    if first is not None and last is not None and first > last:
        raise MassegError(f"--from {from_stage} comes after --until {until_stage}", fix=f"the order is {', '.join(names)}")
    paths.out.mkdir(parents=True, exist_ok=True)
    with _only_run_here(paths.out):
        return _run_in_folder(resolved, paths, stages, names, first, last, from_stage, progress, started,
                              invocation or _invocation(config, overrides, out, from_stage, until_stage))


@contextlib.contextmanager
def _only_run_here(out: Path) -> Iterator[None]:
    """One `run` at a time per folder: a second one would interleave its records with the first's. The lock is the
    operating system's (flock), so a killed run leaves none behind."""
    lock = FileLock(str(out / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MassegError("another `run` is working in this folder", out,
                          "wait for it to finish (or stop it), then run the same command") from None
    try:
        yield
    finally:
        lock.release()


def _run_in_folder(resolved: ProjectConfig, paths: RunPaths, stages: tuple[Stage, ...] | list[Stage],
                   names: list[str], first: int | None, last: int | None, from_stage: str | None, progress: bool,
                   started: float, invocation: str) -> RunResult:
    """run_pipeline's work once it holds the folder."""
    atomic_write_bytes(paths.config, dump_config(resolved).encode())
    record = PipelineRecord.load(paths.record)
    record.data["command"] = invocation
    record.data["config_file"] = str(paths.config)
    record.data["config_source"] = resolved.source
    record.save()
    context = StageContext(resolved, paths, record, progress)
    selected = stages[: (last + 1) if last is not None else len(stages)]
    with workers_from_a_forkserver():
        ran, skipped = _run_stages(context, selected, names, first, from_stage)
    seconds = time.perf_counter() - started
    _print_summary(selected, record, ran, skipped, seconds, paths)
    return RunResult(paths.out, resolved, record, ran, skipped, seconds)


def _run_stages(context: StageContext, selected: tuple[Stage, ...] | list[Stage], names: list[str], first: int | None,
                from_stage: str | None) -> tuple[list[str], list[str]]:
    """Skip, reset and run the selected stages in order (see the module docstring); (ran, skipped)."""
    resolved, paths, record = context.config, context.paths, context.record
    ran: list[str] = []
    skipped: list[str] = []
    forced = False
    for index, stage in enumerate(selected):
        upstream = fingerprint({name: (record.stage(name) or {}).get("choices") for name in names[:index]})
        config_part = config_values(resolved, stage.keys(resolved))
        inputs = stage.inputs(context)
        current = stage_fingerprint(config_part, inputs, upstream)
        previous = record.stage(stage.name)
        label = f"[{index + 1}/{len(names)}] {stage.name}"
        if first is not None and index < first:
            if not (previous and previous.get("status") == DONE and previous.get("fingerprint") == current):
                raise MassegError(f"--from {from_stage}: the earlier stage {stage.name!r} is not done with these inputs",
                                  paths.record, f"run without --from (or with --from {stage.name})")
        forced = forced or (first is not None and index >= first)
        if (not forced and previous and previous.get("status") == DONE and previous.get("fingerprint") == current
                and stage.complete(context, previous)):
            skipped.append(stage.name)
            print(f"--- {label}: done, inputs unchanged (skipped)", flush=True)
            continue
        if previous and previous.get("fingerprint") != current:
            changed = changed_keys(previous, config_part, inputs, upstream)
            print(f"=== {label}: inputs changed ({', '.join(sorted(changed)) or 'record format'}): {stage.title}",
                  flush=True)
            stage.reset(context, previous, changed)
        else:
            state = "continuing" if previous and previous.get("status") == RUNNING else "running"
            print(f"=== {label}: {stage.title} ({state})", flush=True)
        stage_started, clock = now(), time.perf_counter()
        record.set_stage(stage.name, {"status": RUNNING, "fingerprint": current, "config": config_part,
                                      "inputs": inputs, "upstream": upstream, "started": stage_started})
        result = stage.run(context)
        entry = {"status": DONE, "fingerprint": current, "config": config_part, "inputs": inputs,
                 "upstream": upstream, "outputs": result.outputs, "choices": result.choices,
                 "commands": result.commands, "started": stage_started, "finished": now(),
                 "seconds": round(time.perf_counter() - clock, 3)}
        if not stage.complete(context, entry):
            missing = [path for path in result.outputs if not Path(path).exists()]
            raise MassegError(f"stage {stage.name!r} ended without its outputs ({', '.join(missing[:3])})",
                              paths.out, "rerun; report it as a bug if it persists")
        record.set_stage(stage.name, entry)
        ran.append(stage.name)
        forced = True
    return ran, skipped


def _invocation(config: Any, overrides: dict[str, Any] | None, out: Any, from_stage: str | None,
                until_stage: str | None) -> str:
    """The `run` command line equivalent to a Python call."""
    parts: list[Any] = ["run"]
    if config is not None and not isinstance(config, ProjectConfig):
        parts += ["--config", config]
    overrides = dict(overrides or {})
    out = out if out is not None else overrides.pop("pipeline.out", None)
    if out is not None:
        parts += ["--out", out]
    for key, value in overrides.items():
        parts += ["--set", f"{key}={'null' if value is None else value}"]
    parts += ["--from", from_stage] if from_stage else []
    parts += ["--until", until_stage] if until_stage else []
    return command(*parts)


def _print_summary(stages: tuple[Stage, ...] | list[Stage], record: PipelineRecord, ran: list[str],
                   skipped: list[str], seconds: float, paths: RunPaths) -> None:
    print(f"\n{'stage':<12} {'status':<8} {'seconds':>8}  choices")
    for stage in stages:
        entry = record.stage(stage.name) or {}
        status = "ran" if stage.name in ran else "skipped" if stage.name in skipped else entry.get("status", "-")
        shown = f"{entry['seconds']:8.1f}" if stage.name in ran and "seconds" in entry else f"{'':8}"
        print(f"{stage.name:<12} {status:<8} {shown}  {describe_choices(entry)}")
    print(f"run finished in {seconds:.1f} s ({len(ran)} stages ran, {len(skipped)} skipped); "
          f"record: {paths.record}")
