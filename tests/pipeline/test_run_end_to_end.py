"""`masseg-search run` end to end with a tiny model: a full run from Python, a rerun that skips every stage, a changed
section that reruns from its stage, the recorded commands, configs/mose.yaml from the CLI with synthetic data and a
tiny model set by --set, and kill -9 inside every stage followed by the same command."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from masseg_search.cli import build_parser, main
from masseg_search.config import config_from_dict
from masseg_search.data.layout import open_dataset
from masseg_search.errors import MassegError
from masseg_search.pipeline.record import PipelineRecord
from masseg_search.pipeline.runner import run_pipeline
from masseg_search.pipeline.stages import STAGES, RunPaths, StageContext, run_train_sweep, stage_names
from masseg_search.store.predictions import META_FILE
from tiny_config import first_frame_only_copy, tiny_values, write_config

HERE = Path(__file__).parent
NAMES = stage_names(STAGES)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path, tiny_checkpoint: Path) -> dict:
    """One full run of the tiny config from Python (timed)."""
    folder = tmp_path_factory.mktemp("run")
    config = write_config(folder / "tiny.yaml", tiny_values(tiny_dataset, tiny_checkpoint))
    started = time.perf_counter()
    result = run_pipeline(config, out=folder / "out", progress=False)
    return {"config": config, "result": result, "seconds": time.perf_counter() - started, "out": folder / "out"}


@pytest.mark.slow
def test_a_full_tiny_run_records_every_stage(tiny_run: dict, capsys: pytest.CaptureFixture) -> None:
    result, out = tiny_run["result"], tiny_run["out"]
    assert result.ran == NAMES and result.skipped == []
    record = yaml.safe_load((out / "pipeline.yaml").read_text())
    assert record["command"].startswith("masseg-search run --config") and record["config_file"] == str(out / "config.yaml")
    stages = record["stages"]
    assert list(stages) == NAMES and {entry["status"] for entry in stages.values()} == {"done"}
    for name, entry in stages.items():
        assert entry["config"] and entry["fingerprint"] and entry["finished"] >= entry["started"], name
        assert all(Path(path).exists() for path in entry["outputs"]), name
    # the choices: best checkpoint (with the second trial as a view), per-type configurations, the plan and its score
    sweep = stages["train-sweep"]["choices"]
    assert sweep["checkpoint"] == sweep["ranked"][0] and len(sweep["ranked"]) == 2 and len(sweep["sha256"]) == 64
    tuned = stages["tune-mss"]["choices"]
    assert set(tuned["types"]) == {"crowded", "regular"} and tuned["folds"] and tuned["heldout_jf"]
    views = [view["view"] for view in stages["infer-val"]["choices"]["views"]]
    assert views == [None, "flip", "trial2", "trial2.flip"]
    chosen = stages["select"]["choices"]
    assert chosen["held_out"] and 0 <= chosen["val_jf"] <= 1 and chosen["candidates"] > 4
    plan = yaml.safe_load(Path(chosen["plan"]).read_text())
    assert plan["selection"]["chosen"] == chosen["chosen"]
    # test: only what the chosen plan reads (and nothing for a view it does not read)
    needed = set(chosen["needed_configs"])
    stored = {config for view in stages["infer-test"]["choices"]["views"] for config in view["configs"]}
    assert stored == needed
    assert Path(stages["ensemble"]["choices"]["zip"]).is_file() and stages["check"]["choices"]["valid"]
    evaluated = stages["evaluate"]["choices"]
    assert evaluated["evaluated"] and 0 <= evaluated["jf"] <= 1
    assert (out / "evaluations" / "tiny" / "global.csv").is_file() and (out / "report.html").is_file()
    # every recorded command is a valid command line of this CLI; the check one runs as recorded
    parser = build_parser()
    for name, entry in stages.items():
        assert entry["commands"] or name == "report", name
        for line in entry["commands"]:
            words = shlex.split(line)
            assert words[0] == "masseg-search"
            parser.parse_args(words[1:])
    capsys.readouterr()
    assert main(shlex.split(stages["check"]["commands"][0])[1:]) == 0
    assert "submission OK" in capsys.readouterr().out


@pytest.mark.slow
def test_a_rerun_skips_every_stage(tiny_run: dict) -> None:
    started = time.perf_counter()
    again = run_pipeline(tiny_run["config"], out=tiny_run["out"], progress=False)
    seconds = time.perf_counter() - started
    assert again.ran == [] and again.skipped == NAMES
    print(f"full tiny run {tiny_run['seconds']:.1f} s, rerun skipping every stage {seconds:.2f} s")
    assert seconds < tiny_run["seconds"] / 10


@pytest.mark.slow
def test_a_changed_section_reruns_from_its_stage(tiny_run: dict) -> None:
    out = tiny_run["out"]
    before = {path: path.stat().st_mtime_ns for path in (out / "predictions" / "val").rglob(META_FILE)}
    again = run_pipeline(tiny_run["config"], {"ensemble.top_k": 2}, out=out, progress=False)
    assert again.skipped == ["data", "train-sweep", "tune-mss", "infer-val"]
    assert again.ran == ["select", "infer-test", "ensemble", "check", "evaluate", "report"]
    plan = yaml.safe_load((out / "plans" / "val.yaml").read_text())
    assert plan["selection"]["top_k"] == 2
    assert before == {path: path.stat().st_mtime_ns for path in (out / "predictions" / "val").rglob(META_FILE)}
    record = PipelineRecord.load(out / "pipeline.yaml")
    assert record.stage("select")["config"]["ensemble.top_k"] == 2


def test_without_a_sweep_the_run_starts_from_the_given_checkpoint(tmp_path: Path, tiny_checkpoint: Path) -> None:
    config = config_from_dict({"model": {"checkpoint": str(tiny_checkpoint)}, "train_sweep": None})
    context = StageContext(config, RunPaths(tmp_path), PipelineRecord.load(tmp_path / "pipeline.yaml"))
    result = run_train_sweep(context)
    assert result.choices["checkpoint"] == str(tiny_checkpoint) and result.choices["ranked"] == []
    assert result.choices["sha256"] == context.record.file_digest(tiny_checkpoint) and not result.choices["swept"]
    missing = config_from_dict({"model": {"checkpoint": str(tmp_path / "gone.pt")}, "train_sweep": None})
    with pytest.raises(MassegError, match="model.checkpoint not found"):
        run_train_sweep(StageContext(missing, RunPaths(tmp_path), context.record))


@pytest.mark.slow
def test_the_mose_config_runs_end_to_end_on_synthetic_data_and_a_tiny_model(
        tmp_path: Path, tiny_dataset: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    """configs/mose.yaml as shipped, with paths, model and budgets overridden from the command line: MOSE valid's
    stand-in has first-frame masks only, so the run checks the submission and does not evaluate."""
    valid = first_frame_only_copy(tiny_dataset, "test", tmp_path / "valid")
    out = tmp_path / "mose"
    sets = {"data.root": tiny_dataset, "data.train_split": tiny_dataset / "train.txt",
            "data.val_split": tiny_dataset / "val.txt", "data.test_root": valid, "model.config": "tiny64",
            "model.checkpoint": tiny_checkpoint, "model.device": "cpu", "train.epochs": 1,
            "train.iterations_per_epoch": 2, "train.batch_size": 1, "train.num_frames": 3, "train.max_objects": 2,
            "train.num_workers": 0, "train.val_videos": 2, "train.amp": "false", "train.warmup_iterations": 0,
            "train_sweep.samples": 1, "train_sweep.gpus_per_trial": 0, "train_sweep.cpus_per_trial": 1,
            "train_sweep.asha.grace_period": 1, "mss.trials": 3, "mss.batch": 3, "mss.cv_folds": 2,
            "mss.bootstrap": 50, "ensemble.workers": 1, "ensemble.trials": 1, "pipeline.report_overlays": "false"}
    arguments = ["run", "--config", "mose", "--out", str(out), "--no-progress"]
    for key, value in sets.items():
        arguments += ["--set", f"{key}={value}"]
    assert main(arguments) == 0
    printed = capsys.readouterr().out
    assert "evaluate: skipped (the test split has first-frame masks only)" in printed
    record = PipelineRecord.load(out / "pipeline.yaml")
    assert [name for name in NAMES if record.stage(name)["status"] == "done"] == NAMES
    assert record.stage("data")["choices"]["test_ground_truth"] is False
    assert record.stage("evaluate")["choices"] == {"evaluated": False,
                                                   "reason": "the test split has first-frame masks only"}
    assert record.stage("train-sweep")["config"]["train_sweep"]["searcher"] == "optuna"  # the paper's recipe
    zip_path = out / "submissions" / "mose_valid.zip"
    assert zip_path.is_file() and record.stage("check")["choices"]["valid"]
    assert len(open_dataset(valid).video_names) == record.stage("ensemble")["choices"]["videos"]
    # the same command again: nothing to do
    assert main(arguments) == 0
    assert "(0 stages ran, 10 skipped)" in capsys.readouterr().out
    assert PipelineRecord.load(out / "pipeline.yaml").stage("report")["finished"] == record.stage("report")["finished"]


def _kill_inside(stage: str, arguments: list[str], log: Path) -> int:
    with open(log, "ab") as handle:
        process = subprocess.run([sys.executable, str(HERE / "kill_inside.py"), stage, "--", *arguments],
                                 stdout=handle, stderr=subprocess.STDOUT, timeout=600,
                                 env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])})
    return process.returncode


def _finished_files(out: Path) -> dict[Path, int]:
    """Finished predictions and synthetic videos: (file, modification time)."""
    files = [*(out / "predictions").rglob(META_FILE), *(out / "data" / "metadata").glob("*.json")]
    return {path: path.stat().st_mtime_ns for path in files}


@pytest.mark.slow
def test_kill_9_inside_every_stage_then_the_same_command_continues(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """For each stage in turn: the same `run` command, SIGKILLed by itself part-way through that stage's work; the
    record says that stage was running and every earlier one done; what was finished stays (same files). The last
    command finishes the run."""
    out = tmp_path / "out"
    config = write_config(tmp_path / "tiny.yaml", tiny_values(None, tiny_checkpoint, ensemble={"flip": True,
                                                                                                "trials": 1}))
    arguments = ["run", "--config", str(config), "--out", str(out), "--no-progress"]
    log = tmp_path / "log.txt"
    finished: dict[Path, int] = {}
    for index, stage in enumerate(NAMES):
        code = _kill_inside(stage, arguments, log)
        assert code == -signal.SIGKILL, f"{stage}: exit {code}\n{log.read_text()[-3000:]}"
        record = PipelineRecord.load(out / "pipeline.yaml")
        assert record.stage(stage)["status"] == "running", stage
        assert [record.stage(name)["status"] for name in NAMES[:index]] == ["done"] * index, stage
        now = _finished_files(out)
        assert {path: now.get(path) for path in finished} == finished, f"{stage}: finished files were redone"
        finished = now
    sweep_table = out / "sweeps" / "tiny" / "results.csv"
    trials_before = set(pd.read_csv(sweep_table)["trial_id"])
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "masseg_search", *arguments], check=True, capture_output=True, timeout=600)
    record = PipelineRecord.load(out / "pipeline.yaml")
    assert [record.stage(name)["status"] for name in NAMES] == ["done"] * len(NAMES)
    assert set(pd.read_csv(sweep_table)["trial_id"]) == trials_before  # no trial started again
    assert {path: _finished_files(out).get(path) for path in finished} == finished
    assert (out / "submissions" / "tiny.zip").is_file() and (out / "report.html").is_file()
    print(f"kill -9 in each of {len(NAMES)} stages; the last rerun took {time.perf_counter() - started:.1f} s")
