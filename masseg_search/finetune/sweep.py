"""`train-sweep`: a Ray Tune sweep of fine-tuning runs over ``train`` keys, ASHA on validation J&F.

Each trial is one :func:`masseg_search.finetune.loop.train_run` with the sampled values written into the
``train`` section (dotted keys such as ``loss.dice``, ``augment.grayscale``, ``lr``); it reports ``val_jf`` and a
sam2-format checkpoint every epoch. ASHA (grace period, reduction factor from the config) stops weak trials;
``CheckpointConfig`` keeps the best k checkpoints of each trial; ``FailureConfig`` retries a trial that raised
(from its last checkpoint). With ``gpus_per_trial`` > 1 a trial runs data-parallel on that many GPU workers
through Ray Train's ``TorchTrainer`` (its reports flow back to Tune).

Everything lives under ``<storage>/<name>/`` (default ``results/sweeps/<name>/``): Ray's experiment state and
trial folders, ``results.csv`` / ``results.parquet`` (one row per trial: parameters, status, epochs run, best and
last validation J&F, best checkpoint) and ``best_checkpoint.txt``, both rewritten after every reported epoch
(with a URI storage such as ``s3://`` these two stay on the driver, under ``results/sweeps/<name>/``).
``resume=True`` restores an interrupted sweep with ``Tuner.restore`` (errored trials resumed; finished trials
are kept, not rerun). Ctrl-C (SIGINT), SIGUSR1 and, while :func:`run_sweep` runs, SIGTERM (plain ``kill``) stop
the sweep after Tune saves its state one last time. A hard kill (SIGKILL, a lost machine) skips that save: Tune
snapshots its state every 10 s or so, so what trials reported in those last seconds (at worst the final epoch of a
trial that had just finished) is redone from each trial's previous checkpoint on ``--resume``.

With ``train_sweep.searcher: optuna`` the trials are also an Optuna study ``train-sweep-<name>`` in the project's
Optuna storage (``train_sweep.optuna_storage``, else ``mss.storage``, else ``sqlite:///studies/val.db``, the
storage of tune-mss's default study), so ``optuna-dashboard`` shows it beside the MSS studies.

Ray's cost is paid once per sweep, not per iteration: starting Ray (2.2-3.3 s here), the trial's process, stopping
Ray (1.3 s), 4-5.7 s in all against the same ``masseg-search train`` run on a 2-core CPU, while a trial trains as
fast as that run (``benchmarks/bench_train_sweep.py``). To keep it there the driver never imports torch (so
Tune's TensorBoard logger is left out, see :func:`_without_tensorboard_logger`), and a local Ray that
:func:`run_sweep` started is stopped when it returns.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from masseg_search.config import ProjectConfig, SearchDimension, TrainSection, config_from_dict, set_dotted
from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError

log = logging.getLogger(__name__)

METRIC = "val_jf"
CHECKPOINT_FILE = "checkpoint.pt"
TABLE_NAME = "results"
BEST_FILE = "best_checkpoint.txt"
DRIVER_CPUS = 0.01  # a data-parallel trial's own process (Ray refuses an empty resource request)
DDP_TIMEOUT_S = 6 * 3600  # rank 0 validates alone while the other ranks wait in their next all-reduce: a 200-video
# MOSE validation at 1024 px can outlast torch.distributed's default 30 minutes
MSS_DEFAULT_STUDY = "val"  # tune-mss --study default: its storage is where the dashboard already looks


@dataclass
class SweepResult:
    """Where a finished sweep put things, and its best trial."""

    experiment_dir: Path
    table_csv: Path
    table_parquet: Path
    best_checkpoint: Path | None
    best_val_jf: float
    trials: int
    unfinished: int = 0  # trials interrupted or never started (finish them with resume=True)
    optuna_storage: str | None = None  # searcher optuna: its storage, as optuna-dashboard takes it


@dataclass(frozen=True)
class TrialPlan:
    """How one trial runs: in its own process (``workers`` 1) or as a TorchTrainer of ``workers`` DDP workers."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float

    @property
    def backend(self) -> str | None:
        """The torch.distributed backend of a data-parallel trial (NCCL on GPUs, gloo on CPUs), else None."""
        if self.workers == 1:
            return None
        return "nccl" if self.gpus_per_worker > 0 else "gloo"


def trial_plan(gpus_per_trial: float, cpus_per_trial: float, workers_per_trial: int | None = None) -> TrialPlan:
    """``--gpus-per-trial G``: G <= 1 is one process with G GPUs; G > 1 is G data-parallel workers with one GPU each
    (``workers_per_trial`` overrides the count, e.g. 2 CPU workers on gloo with G = 0). ``cpus_per_trial`` is per
    worker. Ray takes resource amounts above 1 in whole units only: anything else is refused here, with the fix."""
    gpus = float(gpus_per_trial)
    if gpus > 1 and not gpus.is_integer():
        raise MassegError(f"--gpus-per-trial {gpus:g}: above 1 it must be a whole number (one data-parallel worker "
                          "per GPU)", fix="use a fraction up to 1 (trials share a GPU) or a whole number of GPUs")
    workers = workers_per_trial or (int(gpus) if gpus > 1 else 1)
    per_worker = gpus / workers
    if per_worker > 1 and not per_worker.is_integer():
        raise MassegError(f"{gpus:g} GPUs over {workers} data-parallel workers is {per_worker:g} GPUs each, and Ray "
                          "takes amounts above 1 in whole units only",
                          fix="make train_sweep.workers_per_trial divide --gpus-per-trial, or leave it unset")
    return TrialPlan(workers=workers, cpus_per_worker=float(cpus_per_trial), gpus_per_worker=per_worker)


# ------------------------------------------------------------------------------------------ search space


def _check_train_key(dotted: str) -> None:
    """A space key must name a scalar ``train`` field (``lr``, ``loss.dice``, ``augment.hflip``)."""
    model: Any = TrainSection
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        names = {f.alias or name: f for name, f in fields.items()} if fields else {}
        if part not in names:
            valid = ", ".join(sorted(names)) if names else "(none)"
            raise MassegError(f"train_sweep.space key {dotted!r}: {part!r} is not a train setting (valid here: {valid})",
                              fix="use dotted train keys such as lr, loss.dice, augment.grayscale")
        annotation = names[part].annotation
        model = annotation if isinstance(annotation, type) and hasattr(annotation, "model_fields") else None
        if model is not None and index == len(parts) - 1:
            raise MassegError(f"train_sweep.space key {dotted!r} names a whole section", fix=f"name one of its keys, e.g. {dotted}.<key>")


def search_space(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """Ray Tune distributions for the config's space: ``choices`` -> choice (``grid`` -> grid_search, every
    choice ``samples`` times), ``log`` -> loguniform, else uniform."""
    from ray import tune

    distributions = {}
    for dotted, dimension in space.items():
        _check_train_key(dotted)
        if dimension.choices is not None and dimension.grid:
            distributions[dotted] = tune.grid_search(list(dimension.choices))
        elif dimension.choices is not None:
            distributions[dotted] = tune.choice(list(dimension.choices))
        elif dimension.log:
            distributions[dotted] = tune.loguniform(dimension.low, dimension.high)
        else:
            distributions[dotted] = tune.uniform(dimension.low, dimension.high)
    if not distributions:
        raise MassegError("train_sweep.space is empty", fix="add searched keys, e.g. loss.dice: {low: 0.5, high: 4, log: true}")
    return distributions


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> ProjectConfig:
    """The base config (as a dict) with each sampled ``train`` value set."""
    values = json.loads(json.dumps(base))
    for dotted, value in params.items():
        set_dotted(values.setdefault("train", {}), dotted, value.item() if hasattr(value, "item") else value)
    return config_from_dict(values, source=f"trial {params}")


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """The config dict with relative data / checkpoint / model-config paths made absolute: trials run in their
    own working folders (and on other machines, where these should be shared paths)."""
    data, model = values.get("data", {}), values.get("model", {})
    if data.get("root") and not _is_uri(data["root"]):
        data["root"] = str(Path(data["root"]).resolve())
    if model.get("checkpoint") and not _is_uri(model["checkpoint"]):
        model["checkpoint"] = str(Path(model["checkpoint"]).resolve())
    if model.get("config") and Path(model["config"]).is_file():
        model["config"] = str(Path(model["config"]).resolve())
    return values


# ------------------------------------------------------------------------------------------------ trials


def _report_epoch(record: Any, checkpoint_path: Path | None) -> None:
    """Report one epoch to Tune with its checkpoint (a folder holding checkpoint.pt and metrics.json)."""
    from ray import tune

    metrics = record.metrics()
    if checkpoint_path is None:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="masseg-report-") as folder:
        target = Path(folder) / CHECKPOINT_FILE
        try:
            os.link(checkpoint_path, target)  # no copy of a large file when the folders share a filesystem
        except OSError:
            shutil.copy2(checkpoint_path, target)
        (Path(folder) / "metrics.json").write_text(json.dumps(metrics, indent=1))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def run_trial(params: dict[str, Any], base_config: dict[str, Any]) -> None:
    """The Tune function trainable: one fine-tuning run, resumed from Tune's checkpoint after a failure."""
    from ray import tune

    from masseg_search.finetune.loop import train_run

    config = trial_config(base_config, params)
    checkpoint = tune.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="masseg-trial-") as scratch:
        resume_from = None
        if checkpoint is not None:
            local = checkpoint.to_directory(str(Path(scratch) / "restored"))
            resume_from = Path(local) / CHECKPOINT_FILE
        train_run(config, Path(scratch) / "run", resume_from=resume_from, on_epoch=_report_epoch, progress=False,
                  write_best=False)


def _train_worker(worker_config: dict[str, Any]) -> None:
    """One Ray Train worker of a data-parallel trial (DDP over gloo on CPU, NCCL on GPU)."""
    import ray.train
    import ray.train.torch

    from masseg_search.finetune.loop import train_run

    context = ray.train.get_context()
    config = trial_config(worker_config["base_config"], worker_config["params"])

    def report(record: Any, checkpoint_path: Path | None) -> None:
        metrics = record.metrics()
        if checkpoint_path is None:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory(prefix="masseg-report-") as folder:
            shutil.copy2(checkpoint_path, Path(folder) / CHECKPOINT_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    checkpoint = ray.train.get_checkpoint()
    with tempfile.TemporaryDirectory(prefix="masseg-worker-") as scratch:
        resume_from = None
        if checkpoint is not None:
            resume_from = Path(checkpoint.to_directory(str(Path(scratch) / "restored"))) / CHECKPOINT_FILE
        train_run(config, Path(scratch) / "run", resume_from=resume_from, on_epoch=report, progress=False,
                  rank=context.get_world_rank(), world_size=context.get_world_size(),
                  wrap_model=lambda model: ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True}),
                  device=str(ray.train.torch.get_device()), write_best=False)


def run_distributed_trial(params: dict[str, Any], base_config: dict[str, Any], workers: int, gpus_per_worker: float,
                          cpus_per_worker: float, storage_path: str) -> None:
    """A Tune trial that drives a ``TorchTrainer`` of ``workers`` DDP workers (NCCL on GPUs, gloo on CPUs); rank 0's
    reports (metrics + the path of the checkpoint Ray Train stored) reach Tune through ``TuneReportCallback``.
    Ray Train resumes a run of the same name from its latest checkpoint, so a retried trial continues."""
    import ray.train
    from ray import tune
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    plan = TrialPlan(workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker)
    use_gpu = gpus_per_worker > 0
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"params": params, "base_config": base_config},
        torch_config=TorchConfig(backend=plan.backend, timeout_s=DDP_TIMEOUT_S),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=ray.train.RunConfig(name=tune.get_context().get_trial_id(), storage_path=storage_path,
                                       callbacks=[TuneReportCallback()],
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
    )
    trainer.fit()


# ------------------------------------------------------------------------------------------ results table


def _checkpoint_file(path: str | None) -> str | None:
    return None if not path else str(Path(path) / CHECKPOINT_FILE)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


class ResultsTable:
    """Rows per trial, written as CSV + Parquet (and the best checkpoint path) after every change.

    Ray calls it as a Tune callback (:meth:`as_callback`); :meth:`from_results` rebuilds it from a ResultGrid.
    """

    def __init__(self, folder: Path, param_keys: list[str], max_epochs: int):
        self.folder = Path(folder)
        self.param_keys = list(param_keys)
        self.max_epochs = int(max_epochs)
        self.rows: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        """Keep the rows of an interrupted run (a restored sweep does not report finished trials again)."""
        import pandas as pd

        path = self.folder / f"{TABLE_NAME}.csv"
        if path.is_file() and path.stat().st_size > 0:
            for row in pd.read_csv(path).to_dict("records"):
                self.rows[str(row["trial_id"])] = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}

    def row(self, trial_id: str, params: dict[str, Any]) -> dict[str, Any]:
        row = self.rows.setdefault(trial_id, {"trial_id": trial_id, "status": "RUNNING", "epochs_run": 0,
                                              "best_val_jf": None, "best_epoch": None, "last_val_jf": None,
                                              "checkpoint": None})
        for key in self.param_keys:
            if key in params:
                row[key] = params[key]
        return row

    def on_result(self, trial_id: str, params: dict[str, Any], result: dict[str, Any]) -> None:
        row = self.row(trial_id, params)
        row["epochs_run"] = int(result.get("training_iteration", result.get("epoch", 0)) or 0)
        value = result.get(METRIC)
        row["last_val_jf"] = value if _finite(value) else None
        if _finite(value) and (row["best_val_jf"] is None or value > row["best_val_jf"]):
            row["best_val_jf"], row["best_epoch"] = value, int(result.get("epoch", row["epochs_run"]))
            if result.get("checkpoint_path"):  # TorchTrainer trials: the checkpoint already in storage
                row["checkpoint"] = _checkpoint_file(result["checkpoint_path"])
        self.write()

    def on_checkpoint(self, trial_id: str, params: dict[str, Any], last_result: dict[str, Any], path: str) -> None:
        row = self.row(trial_id, params)
        if _finite(last_result.get(METRIC)) and last_result.get(METRIC) == row["best_val_jf"]:
            row["checkpoint"] = _checkpoint_file(path)
            self.write()

    def on_status(self, trial_id: str, params: dict[str, Any], status: str) -> None:
        self.row(trial_id, params)["status"] = status
        self.write()

    def best(self) -> tuple[str | None, float]:
        scored = [r for r in self.rows.values() if _finite(r.get("best_val_jf")) and r.get("checkpoint")]
        if not scored:
            return None, float("nan")
        top = max(scored, key=lambda r: r["best_val_jf"])
        return top["checkpoint"], float(top["best_val_jf"])

    def write(self) -> None:
        """CSV, Parquet and best_checkpoint.txt, each written to a temporary name and renamed."""
        import io

        import pandas as pd

        for row in self.rows.values():  # ASHA's stop leaves Tune's status TERMINATED: say it was stopped early
            row["stopped_early"] = bool(row.get("status") == "TERMINATED" and int(row.get("epochs_run") or 0) < self.max_epochs)
        columns = ["trial_id", "status", *self.param_keys, "epochs_run", "stopped_early", "best_val_jf", "best_epoch",
                   "last_val_jf", "checkpoint"]
        frame = pd.DataFrame(list(self.rows.values()))
        frame = frame.reindex(columns=columns + [c for c in frame.columns if c not in columns])
        frame = frame.sort_values("trial_id", kind="stable")
        atomic_write_bytes(self.folder / f"{TABLE_NAME}.csv", frame.to_csv(index=False).encode())
        buffer = io.BytesIO()
        frame.astype({"checkpoint": "string", "status": "string", "trial_id": "string"}).to_parquet(buffer, index=False)
        atomic_write_bytes(self.folder / f"{TABLE_NAME}.parquet", buffer.getvalue())
        best_path, _ = self.best()
        if best_path:
            atomic_write_bytes(self.folder / BEST_FILE, (best_path + "\n").encode())

    def as_callback(self) -> Any:
        """A Tune callback that feeds this table."""
        from ray.tune import Callback

        table = self

        class _TableCallback(Callback):
            def setup(self, **info):  # a restored sweep unpickles this callback: start from the table on disk
                table.rows = {}
                table._load()

            def on_trial_result(self, iteration, trials, trial, result, **info):
                table.on_result(trial.trial_id, trial.config, result)

            def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
                table.on_checkpoint(trial.trial_id, trial.config, trial.last_result or {}, checkpoint.path)

            def on_trial_complete(self, iteration, trials, trial, **info):
                table.on_status(trial.trial_id, trial.config, "TERMINATED")

            def on_trial_error(self, iteration, trials, trial, **info):
                table.on_status(trial.trial_id, trial.config, "ERROR")

        return _TableCallback()

    def update_from_results(self, results: Any) -> None:
        """Fill every row from a ``ResultGrid`` (the authority at the end, restored trials included)."""
        for result in results:
            trial_id = result.metrics.get("trial_id") if result.metrics else None
            if trial_id is None:  # nothing readable for this trial: the callback's row stands
                continue
            params = dict(result.config or {})
            row = self.row(str(trial_id), params)
            if result.error:  # other statuses come from the callback (an interrupted trial is not TERMINATED)
                row["status"] = "ERROR"
            frame = result.metrics_dataframe
            if frame is not None and METRIC in frame and frame[METRIC].notna().any():
                best_index = frame[METRIC].idxmax()
                row["best_val_jf"] = float(frame[METRIC][best_index])
                row["best_epoch"] = int(frame["epoch"][best_index]) if "epoch" in frame else None
                row["last_val_jf"] = float(frame[METRIC].iloc[-1])
                row["epochs_run"] = int(frame["training_iteration"].max()) if "training_iteration" in frame else len(frame)
            best = [(ckpt, m) for ckpt, m in result.best_checkpoints if _finite(m.get(METRIC))]
            if best:
                checkpoint, _ = max(best, key=lambda item: item[1][METRIC])
                row["checkpoint"] = _checkpoint_file(checkpoint.path)
            elif result.metrics and result.metrics.get("checkpoint_path") and row.get("checkpoint") is None:
                row["checkpoint"] = _checkpoint_file(result.metrics["checkpoint_path"])
        self.write()


# ---------------------------------------------------------------------------------------- the cluster


def _is_uri(text: str) -> bool:
    return "://" in text


@contextlib.contextmanager
def ray_session(address: str | None, storage: str) -> Iterator[bool]:
    """Start or join Ray for a sweep (reusing a session already running in this process); yields True when the
    cluster is remote. A local Ray started here is stopped on the way out, so its daemons stop taking CPU and memory
    once the sweep is over (a later stage of the demo, say) and a CLI exit does not wait on Ray's exit hook."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    remote = address not in (None, "local")
    if remote and not _is_uri(storage) and not Path(storage).is_absolute():
        raise MassegError(
            f"a remote Ray cluster ({address}) cannot write to the local relative storage path {storage!r}",
            storage, "set train_sweep.storage to shared storage every node sees (an absolute NFS path or s3://...)")
    if ray.is_initialized():
        yield remote
        return
    if remote:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(include_dashboard=False, log_to_driver=True)
    try:
        yield remote
    finally:
        ray.shutdown()  # disconnects from a remote cluster; stops the processes of a local one


def check_resources(gpus_per_trial: float, cpus_per_trial: float, workers: int = 1) -> None:
    """Fail now, with the fix, when the cluster could never run a trial (Ray would leave it PENDING forever)."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    if gpus_per_trial > gpus:
        raise MassegError(
            f"each trial asks for {gpus_per_trial:g} GPU(s) but the Ray cluster has {gpus:g}",
            fix="use --gpus-per-trial 0 for a CPU sweep, or join a cluster with GPUs (--address / RAY_ADDRESS)")
    needed_cpus = cpus_per_trial * workers + (DRIVER_CPUS if workers > 1 else 0)
    if needed_cpus > cpus:
        raise MassegError(f"each trial asks for {needed_cpus:g} CPU(s) but the Ray cluster has {cpus:g}",
                          fix="lower --cpus-per-trial")


# ------------------------------------------------------------------------------------------------ sweep


def run_sweep(
    config: ProjectConfig,
    name: str | None = None,
    samples: int | None = None,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None,
    resume: bool = False,
    address: str | None = None,
    trainable: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run (or with ``resume`` restore and finish) the sweep described by ``config.train_sweep``.

    Arguments override the config's values. ``trainable(params, base_config)`` replaces :func:`run_trial`
    (for wrapping it, e.g. in tests). A local Ray started here is stopped when the sweep ends (see
    :func:`ray_session`); a Ray this process already runs is used and left running.
    """
    section = config.train_sweep
    name = name or section.name
    samples = samples or section.samples
    gpus = section.gpus_per_trial if gpus_per_trial is None else gpus_per_trial
    cpus = section.cpus_per_trial if cpus_per_trial is None else cpus_per_trial
    space = search_space(section.space)
    plan = trial_plan(gpus, cpus, section.workers_per_trial)
    with ray_session(address, section.storage):
        check_resources(gpus, cpus, plan.workers)
        return _run_tuner(config, name, samples, space, plan, gpus, cpus, resume, trainable)


def _run_tuner(config: ProjectConfig, name: str, samples: int, space: dict[str, Any], plan: TrialPlan, gpus: float,
               cpus: float, resume: bool, trainable: Callable[[dict[str, Any], dict[str, Any]], None] | None
               ) -> SweepResult:
    """The Tune part of :func:`run_sweep`, on a connected Ray."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    section = config.train_sweep
    storage = section.storage
    storage_path = storage if _is_uri(storage) else str(Path(storage).resolve())
    experiment_dir = Path(storage_path) / name if not _is_uri(storage) else Path("results/sweeps").resolve() / name

    base_config = absolute_paths(config.model_dump(by_alias=True, exclude={"source"}))
    table = ResultsTable(experiment_dir, list(space), config.train.epochs)
    if plan.workers > 1:
        function = tune.with_parameters(run_distributed_trial, base_config=base_config, workers=plan.workers,
                                        gpus_per_worker=plan.gpus_per_worker, cpus_per_worker=plan.cpus_per_worker,
                                        storage_path=f"{storage_path.rstrip('/')}/{name}/train_runs")
        resources = {"cpu": DRIVER_CPUS}  # the trial only waits on the TorchTrainer; its workers hold the resources
    else:
        function = tune.with_parameters(trainable or run_trial, base_config=base_config)
        resources = {"cpu": cpus, "gpu": gpus}
    function = tune.with_resources(function, resources)

    experiment_path = f"{storage_path.rstrip('/')}/{name}"
    optuna_url = optuna_storage_url(config) if section.searcher == "optuna" else None
    if resume:
        if not tune.Tuner.can_restore(experiment_path):
            raise MassegError("no sweep to resume here", experiment_path, "drop --resume to start it, or check --name")
        tuner = tune.Tuner.restore(experiment_path, trainable=function, resume_errored=True)
    else:
        if tune.Tuner.can_restore(experiment_path):
            raise MassegError("a sweep of this name already exists", experiment_path,
                              "pass --resume to finish it, or choose another --name")
        tuner = tune.Tuner(
            function,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode="max", num_samples=samples,
                scheduler=ASHAScheduler(time_attr="training_iteration", max_t=config.train.epochs,
                                        grace_period=section.asha.grace_period,
                                        reduction_factor=section.asha.reduction_factor),
                search_alg=_searcher(config, name, optuna_url),
                max_concurrent_trials=section.max_concurrent if section.searcher == "optuna" else None,
                reuse_actors=True,  # a trial process keeps torch/sam2 imported for the next trial
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage_path,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=section.keep_checkpoints,
                                                        checkpoint_score_attribute=METRIC, checkpoint_score_order="max"),
                failure_config=tune.FailureConfig(max_failures=section.max_failures),
                # Tune's CSV and JSON loggers (progress.csv, result.json: what a restored sweep reads back), but
                # not its TensorBoard logger: see _without_tensorboard_logger
                callbacks=[table.as_callback(), CSVLoggerCallback(), JsonLoggerCallback()],
                verbose=1,
            ),
        )
    # a sweep restored from before the loggers were explicit keeps Tune's default ones (TensorBoard included)
    with _sigterm_stops_gracefully(), _without_tensorboard_logger(enabled=not resume):
        results = tuner.fit()
    table = ResultsTable(experiment_dir, list(space), config.train.epochs)  # what the (maybe restored) callback wrote
    table.update_from_results(results)
    best_path, best_value = table.best()
    finished = results.num_terminated + results.num_errors
    unfinished = max(expected_trials(config.train_sweep.space, samples) - finished, len(results) - finished)
    log.info("sweep %s: %d trials (%d unfinished), best val J&F %.4f at %s", name, len(results), unfinished,
             best_value, best_path)
    return SweepResult(experiment_dir, experiment_dir / f"{TABLE_NAME}.csv", experiment_dir / f"{TABLE_NAME}.parquet",
                       Path(best_path) if best_path else None, best_value, len(results), unfinished,
                       _dashboard_url(optuna_url) if optuna_url else None)


def expected_trials(space: dict[str, SearchDimension], samples: int) -> int:
    """How many trials a finished sweep has: ``samples`` times every combination of the ``grid`` dimensions."""
    count = samples
    for dimension in space.values():
        if dimension.grid and dimension.choices is not None:
            count *= len(dimension.choices)
    return count


@contextlib.contextmanager
def _without_tensorboard_logger(enabled: bool = True) -> Iterator[None]:
    """While Tune sets up, keep it from adding its default loggers (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``; the
    sweep passes the CSV and JSON ones itself). The one left out is TensorBoard's: tensorboardX imports torch into
    the driver, 1.2 s of CPU just as Tune asks for the first trial's process. Without it the first trial runs in
    the Ray worker that was starting as ``ray.init`` returned; with it (measured on a 2-core machine) the trial got
    a worker started afresh and began training 1.2-1.5 s later, and a one-trial sweep cost about 2 s more in all.
    results.csv and each trial's progress.csv carry the same numbers. Setting TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0
    yourself brings the TensorBoard logger back."""
    variable = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"
    if not enabled or variable in os.environ:
        yield
        return
    os.environ[variable] = "1"
    try:
        yield
    finally:
        os.environ.pop(variable, None)


@contextlib.contextmanager
def _sigterm_stops_gracefully():
    """While the sweep runs, SIGTERM does what Ctrl-C does: Tune saves its state one last time and stops (Tune
    itself only catches SIGINT and SIGUSR1). A second SIGTERM ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        interrupt = signal.getsignal(signal.SIGINT)  # Tune's handler while fit() runs
        if callable(interrupt):
            interrupt(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def optuna_storage_url(config: ProjectConfig) -> str:
    """The project's Optuna storage: ``train_sweep.optuna_storage``, else ``mss.storage``, else the storage of
    tune-mss's default study (``sqlite:///studies/val.db``), the one the README's dashboard command opens."""
    from masseg_search.mss.studies import default_storage_url

    return config.train_sweep.optuna_storage or config.mss.storage or default_storage_url(MSS_DEFAULT_STUDY)


def _dashboard_url(url: str) -> str:
    """What optuna-dashboard takes for a storage string: the file of a journal, else the URL."""
    from masseg_search.mss.studies import journal_path

    journal = journal_path(url)
    return str(journal) if journal is not None else url


def _searcher(config: ProjectConfig, name: str, optuna_url: str | None = None) -> Any:
    """Tune's random search (seeded) or OptunaSearch writing study ``train-sweep-<name>`` to the project's Optuna
    storage (opened as tune-mss opens it: SQLite, ``journal:PATH`` files or PostgreSQL without a password)."""
    section = config.train_sweep
    if section.searcher == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=section.seed, max_concurrent=section.max_concurrent or 0)
    from ray.tune.search.optuna import OptunaSearch

    from masseg_search.mss.studies import open_storage

    storage = open_storage(optuna_url or optuna_storage_url(config), study=MSS_DEFAULT_STUDY).storage
    return OptunaSearch(metric=METRIC, mode="max", study_name=f"train-sweep-{name}", storage=storage, seed=section.seed)
