"""`train-sweep`'s driver: start or join Ray, build the Tuner (ASHA, checkpoints, failures, the searcher), run or
restore it, stop cleanly on a signal, and return the best trial.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from masseg_search.cluster import LOCAL, check_fits_a_node, ray_connection, require_shared_paths
from masseg_search.config import ProjectConfig, SearchDimension, TrainSweepSection
from masseg_search.errors import MassegError
from masseg_search.finetune.sweep.space import absolute_paths, is_uri, search_space
from masseg_search.finetune.sweep.table import TABLE_NAME, ResultsTable
from masseg_search.finetune.sweep.trial import (
    METRIC,
    TrialPlan,
    run_distributed_trial,
    run_trial,
    trial_plan,
)
from masseg_search.mss.studies import default_storage_url, journal_path, open_storage

log = logging.getLogger(__name__)

DRIVER_CPUS = 0.01  # a data-parallel trial's own process (Ray refuses an empty resource request)
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


@contextlib.contextmanager
def ray_session(address: str | None, storage: str, inputs: dict[str, str | None] | None = None) -> Iterator[bool]:
    """Start or join Ray for a sweep (reusing a session already running in this process); yields True when the
    cluster is remote. A local Ray started here listens on 127.0.0.1 only and is stopped on the way out, so its
    daemons stop taking CPU and memory once the sweep is over (a later stage of the demo, say) and a CLI exit does
    not wait on Ray's exit hook. On a cluster of several nodes the storage folder and the ``inputs`` (label ->
    path: the data, the checkpoint) must be visible on every node, checked before any trial starts."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    remote = address not in (None, LOCAL)
    if remote and not is_uri(storage) and not Path(storage).is_absolute():
        raise MassegError(
            f"a remote Ray cluster ({address}) cannot write to the local relative storage path {storage!r}",
            storage, "set train_sweep.storage to shared storage every node sees (an absolute NFS path or s3://...)")
    outputs = {} if is_uri(storage) else {"sweep storage (train_sweep.storage)": str(Path(storage).resolve())}
    with ray_connection(address, log_to_driver=True):
        require_shared_paths(inputs={label: path for label, path in (inputs or {}).items() if path}, outputs=outputs)
        yield remote


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
    check_fits_a_node(cpus_per_trial, gpus_per_trial / workers if workers > 1 else gpus_per_trial,
                      "a trial (or each data-parallel worker of one)", "lower --cpus-per-trial / --gpus-per-trial, "
                      "or add a node that has them")


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
    section = sweep_section(config)
    name = name or section.name
    samples = samples or section.samples
    gpus = section.gpus_per_trial if gpus_per_trial is None else gpus_per_trial
    cpus = section.cpus_per_trial if cpus_per_trial is None else cpus_per_trial
    space = search_space(section.space)
    plan = trial_plan(gpus, cpus, section.workers_per_trial)
    checkpoint = config.model.checkpoint
    inputs = {"dataset (data.root)": str(Path(config.data.root).resolve()),
              "checkpoint (model.checkpoint)": str(Path(checkpoint).resolve()) if checkpoint else None}
    with ray_session(address, section.storage, inputs):
        check_resources(gpus, cpus, plan.workers)
        return _run_tuner(config, name, samples, space, plan, gpus, cpus, resume, trainable)


def sweep_section(config: ProjectConfig) -> TrainSweepSection:
    """``config.train_sweep``; a clear error when the config has none (``train_sweep: null``)."""
    if config.train_sweep is None:
        raise MassegError("the config has no sweep (train_sweep: null)", config.source,
                          "give the config a train_sweep section (see configs/masseg_paper.yaml), or fine-tune once "
                          "with `masseg-search train`; `masseg-search run` then starts from model.checkpoint")
    return config.train_sweep


def _run_tuner(config: ProjectConfig, name: str, samples: int, space: dict[str, Any], plan: TrialPlan, gpus: float,
               cpus: float, resume: bool, trainable: Callable[[dict[str, Any], dict[str, Any]], None] | None
               ) -> SweepResult:
    """The Tune part of :func:`run_sweep`, on a connected Ray."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
    from ray.tune.schedulers import ASHAScheduler

    section = sweep_section(config)
    storage = section.storage
    storage_path = storage if is_uri(storage) else str(Path(storage).resolve())
    experiment_dir = Path(storage_path) / name if not is_uri(storage) else Path("results/sweeps").resolve() / name

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
    unfinished = max(expected_trials(section.space, samples) - finished, len(results) - finished)
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
    """While Tune sets up, keep it from adding its default loggers (the sweep passes the CSV and JSON ones itself):
    TensorBoard's imports torch into the driver just as Tune asks for the first trial's process, which delays it
    (benchmarks/README.md, train-sweep). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 brings it back."""
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
    own = config.train_sweep.optuna_storage if config.train_sweep is not None else None
    return own or config.mss.storage or default_storage_url(MSS_DEFAULT_STUDY)


def _dashboard_url(url: str) -> str:
    """What optuna-dashboard takes for a storage string: the file of a journal, else the URL."""
    journal = journal_path(url)
    return str(journal) if journal is not None else url


def _searcher(config: ProjectConfig, name: str, optuna_url: str | None = None) -> Any:
    """Tune's random search (seeded) or OptunaSearch writing study ``train-sweep-<name>`` to the project's Optuna
    storage (opened as tune-mss opens it: SQLite, ``journal:PATH`` files or PostgreSQL without a password)."""
    section = sweep_section(config)
    if section.searcher == "random":
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=section.seed, max_concurrent=section.max_concurrent or 0)
    from ray.tune.search.optuna import OptunaSearch

    storage = open_storage(optuna_url or optuna_storage_url(config), study=MSS_DEFAULT_STUDY).storage
    return OptunaSearch(metric=METRIC, mode="max", study_name=f"train-sweep-{name}", storage=storage, seed=section.seed)
