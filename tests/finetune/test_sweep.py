"""The Ray Tune sweep on a local 2-CPU Ray with the tiny model: ASHA, failure retries, kill + resume, the results
table, the GPU check, shared storage for clusters, the Optuna searcher, and data-parallel trials (slow)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from masseg_search.cluster import start_local_ray
from masseg_search.config import config_from_dict
from masseg_search.errors import MassegError
from masseg_search.finetune import sweep as sweep_module
from masseg_search.finetune.sweep import driver as sweep_driver
from masseg_search.finetune.sweep import run_sweep

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray (2 CPUs) for the module: starting Ray is the slow part."""
    import ray

    if ray.is_initialized():  # another module's session: share it
        yield ray
        return
    start_local_ray(num_cpus=2, configure_logging=False)  # on 127.0.0.1 only, as the project starts its own
    yield ray
    ray.shutdown()


def sweep_values(dataset: Path, checkpoint: Path, storage: Path, space: dict, **sweep: object) -> dict:
    return {
        "model": {"config": "tiny64", "checkpoint": str(checkpoint), "device": "cpu"},
        "data": {"root": str(dataset), "synth": None},
        "train": {"epochs": 2, "iterations_per_epoch": 4, "num_frames": 4, "max_objects": 3, "warmup_iterations": 1,
                  "val_videos": 2, "lr": 3e-4, "vision_lr": None},
        "train_sweep": {"name": "test", "samples": 1, "storage": str(storage), "space": space, "max_concurrent": 1,
                        "asha": {"grace_period": 1, "reduction_factor": 2}, **sweep},
    }


def test_asha_stops_a_trial_that_cannot_learn(ray_session, tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    from masseg_search.model.build import build_model

    # lr 1e-9 leaves the random model as it is (it predicts nothing here: J&F 0); lr 3e-4 runs first and learns
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"lr": {"choices": [3e-4, 1e-9], "grid": True}})
    result = run_sweep(config_from_dict(values), name="asha")
    table = pd.read_csv(result.table_csv).set_index("lr")
    assert result.trials == 2 and set(table["status"]) == {"TERMINATED"}
    assert table.loc[3e-4, "epochs_run"] == 2 and not table.loc[3e-4, "stopped_early"]
    assert table.loc[1e-9, "epochs_run"] == 1 and table.loc[1e-9, "stopped_early"]
    assert table.loc[1e-9, "best_val_jf"] < table.loc[3e-4, "best_val_jf"]
    parquet = pd.read_parquet(result.table_parquet)
    assert len(parquet) == 2 and list(parquet.columns) == list(pd.read_csv(result.table_csv).columns)
    # the best checkpoint is a sam2-format file the engine loads
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert (result.experiment_dir / "best_checkpoint.txt").read_text().strip() == str(result.best_checkpoint)
    assert result.best_val_jf == pytest.approx(table["best_val_jf"].max())
    build_model("tiny64", result.best_checkpoint, device="cpu")
    assert ray_session.is_initialized()  # a Ray the caller started is left running
    # Tune's CSV and JSON logs in every trial folder, no TensorBoard log (it would import torch into the driver)
    trial_dirs = [path for path in result.experiment_dir.iterdir() if (path / "params.json").is_file()]
    assert len(trial_dirs) == 2
    for trial_dir in trial_dirs:
        assert (trial_dir / "progress.csv").is_file() and (trial_dir / "result.json").is_file()
        assert not list(trial_dir.glob("events.out.tfevents*"))
    assert "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS" not in os.environ  # set only while Tune set up


def failing_once(params: dict, base_config: dict) -> None:
    """First attempt: one epoch (a checkpoint), then the trial raises; each attempt logs what it restored from."""
    from ray import tune

    log_file = Path(base_config["train_sweep"]["storage"]) / "attempts.json"
    attempts = json.loads(log_file.read_text()) if log_file.is_file() else []
    attempts.append({"restored": tune.get_checkpoint() is not None})
    log_file.write_text(json.dumps(attempts))
    if len(attempts) == 1:
        first = json.loads(json.dumps(base_config))
        first["train"]["epochs"] = 1
        sweep_module.run_trial(params, first)
        raise RuntimeError("trial dies after its first epoch")
    sweep_module.run_trial(params, base_config)


def test_a_trial_that_raises_is_retried_from_its_checkpoint(ray_session, tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"choices": [1.0]}}, max_failures=1)
    result = run_sweep(config_from_dict(values), name="retry", trainable=failing_once)
    attempts = json.loads((tmp_path / "attempts.json").read_text())
    assert [attempt["restored"] for attempt in attempts] == [False, True]
    row = pd.read_csv(result.table_csv).iloc[0]
    assert row["status"] == "TERMINATED" and row["epochs_run"] == 2


@pytest.mark.slow
def test_no_retry_budget_leaves_the_trial_errored(ray_session, tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"choices": [1.0]}}, max_failures=0)
    result = run_sweep(config_from_dict(values), name="noretry", trainable=failing_once)
    assert len(json.loads((tmp_path / "attempts.json").read_text())) == 1
    assert pd.read_csv(result.table_csv).iloc[0]["status"] == "ERROR"


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_finished_trials(ray_session, tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"low": 0.5, "high": 2.0}}, samples=3,
                          asha={"grace_period": 2, "reduction_factor": 2})
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text(yaml.safe_dump(values))
    table_path = tmp_path / "killed" / "results.csv"
    command = [sys.executable, "-m", "masseg_search", "train-sweep", "--config", str(config_path), "--name", "killed"]
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.DEVNULL, stderr=stderr,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # wait until one trial has finished, then kill (plain `kill`: SIGTERM)
            if table_path.is_file() and (pd.read_csv(table_path)["status"] == "TERMINATED").any():
                break
            assert process.poll() is None, "the sweep ended before it could be interrupted"
            time.sleep(0.5)
        else:
            pytest.fail("no trial finished in time")
        # kept current during the run: the best checkpoint so far is named and on disk
        best_so_far = Path((tmp_path / "killed" / "best_checkpoint.txt").read_text().strip())
        assert best_so_far.is_file()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 130  # stopped after Tune saved its state, and says so
    finally:
        if process.poll() is None:
            process.kill()
    assert "--resume" in stderr_path.read_text()
    before = pd.read_csv(table_path).set_index("trial_id")
    finished = before.index[before["status"] == "TERMINATED"].tolist()
    assert 1 <= len(finished) < 3
    epochs_before = {t: len(pd.read_csv(next((tmp_path / "killed").glob(f"*{t}*/progress.csv")))) for t in finished}

    with pytest.raises(MassegError, match="--resume"):
        run_sweep(config_from_dict(values), name="killed")
    result = run_sweep(config_from_dict(values), name="killed", resume=True)
    after = pd.read_csv(result.table_csv).set_index("trial_id")
    assert len(after) == 3 and set(after["status"]) == {"TERMINATED"} and (after["epochs_run"] == 2).all()
    for trial_id in finished:  # not run again: same rows in its progress log
        assert len(pd.read_csv(next((tmp_path / "killed").glob(f"*{trial_id}*/progress.csv")))) == epochs_before[trial_id]


def test_a_gpu_trial_on_a_cluster_without_gpus_fails_before_scheduling(ray_session, tiny_dataset, tiny_checkpoint, tmp_path,
                                                                      capsys) -> None:
    from masseg_search.cli import main

    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"choices": [1.0]}}, gpus_per_trial=1)
    with pytest.raises(MassegError, match="GPU"):
        run_sweep(config_from_dict(values), name="gpu")
    assert not (tmp_path / "gpu").exists()
    # the data-parallel request from the command line: the same error, at once, nothing written
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text(yaml.safe_dump(values))
    started = time.monotonic()
    assert main(["train-sweep", "--config", str(config_path), "--name", "gpu2", "--gpus-per-trial", "2"]) == 1
    assert time.monotonic() - started < 30
    error = capsys.readouterr().err
    assert "asks for 2 GPU(s) but the Ray cluster has 0" in error and "--gpus-per-trial 0" in error
    assert not (tmp_path / "gpu2").exists()


def test_the_sweep_driver_stops_the_ray_it_started_and_never_imports_torch(tiny_dataset, tiny_checkpoint,
                                                                          tmp_path) -> None:
    # a fresh process, as `masseg-search train-sweep` runs: the GPU check fails once Ray is up
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"choices": [1.0]}}, gpus_per_trial=1)
    config_path = tmp_path / "sweep.yaml"
    config_path.write_text(yaml.safe_dump(values))
    script = ("import json, sys, ray\n"
              "from masseg_search.cli import main\n"
              f"code = main(['train-sweep', '--config', {str(config_path)!r}, '--name', 'gpu'])\n"
              "print(json.dumps({'code': code, 'ray_running': ray.is_initialized(), 'torch': 'torch' in sys.modules}))")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", script], cwd=PROJECT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 1 and "asks for 1 GPU(s)" in done.stderr
    assert outcome == {"code": 1, "ray_running": False, "torch": False}  # torch (1.5 s) is the trials' business


def test_gpus_per_trial_plans_one_process_or_data_parallel_workers() -> None:
    plan = sweep_module.trial_plan(2, 4)  # --gpus-per-trial 2: two DDP workers with a GPU each, on NCCL
    assert (plan.workers, plan.gpus_per_worker, plan.cpus_per_worker, plan.backend) == (2, 1.0, 4.0, "nccl")
    plan = sweep_module.trial_plan(1, 8)
    assert (plan.workers, plan.gpus_per_worker, plan.backend) == (1, 1.0, None)
    plan = sweep_module.trial_plan(0.5, 1)  # two trials share a GPU
    assert (plan.workers, plan.gpus_per_worker, plan.backend) == (1, 0.5, None)
    plan = sweep_module.trial_plan(0, 0.5, workers_per_trial=2)  # what the gloo test below runs
    assert (plan.workers, plan.gpus_per_worker, plan.backend) == (2, 0.0, "gloo")
    with pytest.raises(MassegError, match="whole number"):
        sweep_module.trial_plan(1.5, 1)
    with pytest.raises(MassegError, match="workers_per_trial"):
        sweep_module.trial_plan(3, 1, workers_per_trial=2)


def test_a_remote_cluster_needs_shared_storage(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"choices": [1.0]}})
    values["train_sweep"]["storage"] = "results/sweeps"
    with pytest.raises(MassegError, match="shared storage"):
        run_sweep(config_from_dict(values), address="ray://head.example:10001")


def test_space_keys_must_be_train_settings() -> None:
    from masseg_search.config import SearchDimension

    with pytest.raises(MassegError, match="loss.dise"):
        sweep_module.search_space({"loss.dise": SearchDimension(low=0.1, high=1.0)})
    with pytest.raises(MassegError, match="whole section"):
        sweep_module.search_space({"loss": SearchDimension(low=0.1, high=1.0)})


@pytest.mark.slow
def test_data_parallel_trial_with_two_cpu_workers_on_gloo(ray_session, tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"choices": [1.0]}},
                          workers_per_trial=2, cpus_per_trial=0.5)
    result = run_sweep(config_from_dict(values), name="ddp")
    row = pd.read_csv(result.table_csv).iloc[0]
    assert row["status"] == "TERMINATED" and row["epochs_run"] == 2
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert (result.experiment_dir / "train_runs") in result.best_checkpoint.parents  # stored by Ray Train's rank 0


def test_optuna_storage_is_the_project_one(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    space = {"loss.dice": {"low": 0.5, "high": 2.0, "log": True}}
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, space, searcher="optuna")
    assert sweep_module.optuna_storage_url(config_from_dict(values)) == "sqlite:///studies/val.db"  # tune-mss's default
    values["mss"] = {"storage": "journal:studies/shared.log"}
    assert sweep_module.optuna_storage_url(config_from_dict(values)) == "journal:studies/shared.log"
    values["train_sweep"]["optuna_storage"] = "sqlite:///elsewhere.db"
    assert sweep_module.optuna_storage_url(config_from_dict(values)) == "sqlite:///elsewhere.db"


def test_optuna_searcher_records_trials_in_a_journal_storage(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    import optuna

    journal = tmp_path / "studies" / "val.log"
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"low": 0.5, "high": 2.0, "log": True}},
                          searcher="optuna", optuna_storage=f"journal:{journal}")  # as tune-mss writes it
    config = config_from_dict(values)
    searcher = sweep_driver._searcher(config, "opt")
    searcher.set_search_properties("val_jf", "max", sweep_module.search_space(config.train_sweep.space))
    suggestion = searcher.suggest("trial-1")
    assert 0.5 <= suggestion["loss.dice"] <= 2.0
    searcher.on_trial_complete("trial-1", {"val_jf": 0.25, "training_iteration": 2})
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (trial,) = optuna.load_study(study_name="train-sweep-opt", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.25
    assert trial.params["loss.dice"] == suggestion["loss.dice"]


@pytest.mark.slow
def test_optuna_sweep_shows_its_trials_in_the_storage(ray_session, tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies' / 'val.db'}"
    values = sweep_values(tiny_dataset, tiny_checkpoint, tmp_path, {"loss.dice": {"low": 0.5, "high": 2.0, "log": True}},
                          searcher="optuna", optuna_storage=storage, samples=2)
    values["train"].update(epochs=1, iterations_per_epoch=2)
    result = run_sweep(config_from_dict(values), name="optuna")
    assert result.unfinished == 0 and result.optuna_storage == storage
    table = pd.read_csv(result.table_csv).set_index("loss.dice")
    trials = optuna.load_study(study_name="train-sweep-optuna", storage=storage).trials
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for trial in trials:  # Optuna holds each trial's final val J&F, the table's last value for those parameters
        assert trial.value == pytest.approx(table.loc[trial.params["loss.dice"], "last_val_jf"])
