"""One sweep trial: a fine-tuning run inside Ray Tune (its own process, or ``workers`` data-parallel workers through
Ray Train's ``TorchTrainer``) that reports validation J&F and a checkpoint every epoch.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from masseg_search.errors import MassegError
from masseg_search.finetune.loop import train_run
from masseg_search.finetune.sweep.space import trial_config

METRIC = "val_jf"
CHECKPOINT_FILE = "checkpoint.pt"
DDP_TIMEOUT_S = 6 * 3600  # rank 0 validates alone while the other ranks wait in their next all-reduce: a 200-video
# MOSE validation at 1024 px can outlast torch.distributed's default 30 minutes


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
