"""The `run` runner on stand-in stages (no model: seconds): skip when done and unchanged, rerun from a changed
stage, reset what changed inputs made stale, continue after an interruption, --from/--until, and pipeline.yaml."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from masseg_search.cli import main
from masseg_search.config import ProjectConfig
from masseg_search.errors import MassegError
from masseg_search.pipeline.record import PipelineRecord
from masseg_search.pipeline.runner import output_overrides, resolve_run_config, run_pipeline
from masseg_search.pipeline.stages import STAGES, Stage, StageContext, StageResult, insert_stage, stage_names


class Recorder:
    """Stand-in stages that write one file each and log what ran and what was reset."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.resets: dict[str, set[str]] = {}
        self.fail_in: str | None = None

    def stage(self, name: str, keys: tuple[str, ...], choose: Any = None) -> Stage:
        def run(ctx: StageContext) -> StageResult:
            self.ran.append(name)
            if self.fail_in == name:
                raise KeyboardInterrupt  # what Ctrl-C leaves: the stage recorded running, nothing done
            path = ctx.paths.out / f"{name}.txt"
            path.write_text(f"{name} {ctx.config.ensemble.top_k}\n")
            return StageResult(outputs=[str(path)], choices={"value": choose(ctx.config) if choose else name},
                               commands=[f"masseg-search {name}"])

        def reset(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
            self.resets[name] = changed

        return Stage(name, f"stand-in {name}", keys, run, reset=reset)

    def stages(self) -> tuple[Stage, ...]:
        return (self.stage("first", ("data.root",)),
                self.stage("second", ("mss.trials",), choose=lambda config: config.mss.trials),
                self.stage("third", ("ensemble.top_k", "ensemble.workers")),
                self.stage("fourth", ("pipeline.report",)))


def _config(tmp_path: Path) -> ProjectConfig:
    from masseg_search.config import config_from_dict

    return config_from_dict({"data": {"root": str(tmp_path / "data")}}, "test")


def test_done_stages_are_skipped_and_a_change_reruns_from_its_stage(tmp_path: Path) -> None:
    recorder = Recorder()
    out = tmp_path / "run"
    result = run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), progress=False)
    assert result.ran == ["first", "second", "third", "fourth"] and result.skipped == []
    record = yaml.safe_load((out / "pipeline.yaml").read_text())
    entry = record["stages"]["second"]
    assert entry["status"] == "done" and entry["config"] == {"mss.trials": 24}
    assert entry["choices"] == {"value": 24} and entry["commands"] == ["masseg-search second"]
    assert entry["outputs"] == [str(out / "second.txt")] and entry["seconds"] >= 0 and entry["finished"]
    assert record["config_file"] == str(out / "config.yaml") and (out / "config.yaml").is_file()

    recorder.ran.clear()
    again = run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), progress=False)
    assert again.ran == [] and again.skipped == ["first", "second", "third", "fourth"] and recorder.ran == []

    # a key of the third stage: it and the later ones run again; its reset hears which key changed
    again = run_pipeline(_config(tmp_path), {"ensemble.top_k": 2}, out=out, stages=recorder.stages(), progress=False)
    assert again.skipped == ["first", "second"] and again.ran == ["third", "fourth"]
    assert recorder.resets == {"third": {"ensemble.top_k"}}
    # a runtime-only key (processes) is recorded but does not rerun anything
    again = run_pipeline(_config(tmp_path), {"ensemble.top_k": 2, "ensemble.workers": 7}, out=out,
                         stages=recorder.stages(), progress=False)
    assert again.ran == []
    # a changed choice of an earlier stage reaches the later stages as a changed upstream
    recorder.resets.clear()
    again = run_pipeline(_config(tmp_path), {"ensemble.top_k": 2, "mss.trials": 9}, out=out, stages=recorder.stages(),
                         progress=False)
    assert again.ran == ["second", "third", "fourth"]
    assert recorder.resets == {"second": {"mss.trials"}, "third": {"upstream"}, "fourth": {"upstream"}}


def test_an_interrupted_stage_is_recorded_running_and_the_rerun_continues_it(tmp_path: Path) -> None:
    recorder = Recorder()
    out = tmp_path / "run"
    recorder.fail_in = "third"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), progress=False)
    stages = PipelineRecord.load(out / "pipeline.yaml").data["stages"]
    assert {name: entry["status"] for name, entry in stages.items()} == {"first": "done", "second": "done",
                                                                         "third": "running"}
    recorder.fail_in, recorder.ran = None, []
    result = run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), progress=False)
    assert result.skipped == ["first", "second"] and result.ran == ["third", "fourth"]
    assert recorder.resets == {}  # same inputs: continued, nothing cleared


def test_a_stage_whose_outputs_are_gone_runs_again(tmp_path: Path) -> None:
    recorder = Recorder()
    out = tmp_path / "run"
    run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), progress=False)
    (out / "second.txt").unlink()
    result = run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), progress=False)
    assert result.skipped == ["first"] and result.ran == ["second", "third", "fourth"]


def test_from_and_until(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recorder = Recorder()
    out = tmp_path / "run"
    result = run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), until_stage="second", progress=False)
    assert result.ran == ["first", "second"] and PipelineRecord.load(out / "pipeline.yaml").stage("third") is None
    result = run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), from_stage="second", progress=False)
    assert result.skipped == ["first"] and result.ran == ["second", "third", "fourth"]
    with pytest.raises(MassegError, match="did you mean 'third'"):
        run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), from_stage="thrid", progress=False)
    with pytest.raises(MassegError, match="comes after --until"):
        run_pipeline(_config(tmp_path), out=out, stages=recorder.stages(), from_stage="fourth", until_stage="first")
    # --from needs the stages before it done with these inputs
    with pytest.raises(MassegError, match="'first' is not done"):
        run_pipeline(_config(tmp_path), {"data.root": str(tmp_path / "other")}, out=out, stages=recorder.stages(),
                     from_stage="third", progress=False)


def test_stages_list_is_extended_by_inserting_a_stage() -> None:
    extra = Stage("policy", "a learned scaling policy", ("mss",), lambda ctx: StageResult())
    stages = insert_stage(STAGES, extra, after="tune-mss")
    assert stage_names(stages)[2:5] == ["tune-mss", "policy", "infer-val"] and len(stages) == len(STAGES) + 1
    assert stage_names(insert_stage(STAGES, extra))[-1] == "policy"
    with pytest.raises(MassegError, match="already in the list"):
        insert_stage(stages, extra)
    with pytest.raises(MassegError, match="no stage 'nope'"):
        insert_stage(STAGES, Stage("x", "x", (), lambda ctx: StageResult()), before="nope")


def test_another_out_gathers_the_default_output_paths(tmp_path: Path) -> None:
    config = resolve_run_config(None, {"train_sweep.storage": "/shared/sweeps"}, out=tmp_path / "mine")
    out = tmp_path / "mine"
    assert config.pipeline.out == str(out)
    assert config.train_sweep.storage == "/shared/sweeps"  # set by the user: kept
    assert config.mss.results_dir == str(out / "mss") and config.mss.storage == f"sqlite:///{out}/studies/val.db"
    assert config.mss.artifact_dir == str(out / "studies" / "artifacts") and config.data.root == str(out / "data")
    # the default out keeps every path where the single-stage commands look
    default = resolve_run_config(None)
    assert default.mss.storage is None and default.data.root == "results/data/synthetic"
    assert default.pipeline.out == str(Path("results").resolve())
    assert output_overrides(default, Path("/x"))["train_sweep.storage"] == "/x/sweeps"
    (tmp_path / "file").write_text("")
    with pytest.raises(MassegError, match="--out is a file"):
        resolve_run_config(None, out=tmp_path / "file")


def test_run_cli_names_the_closest_key_and_stage(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--out", str(tmp_path), "--set", "mss.trails=3"]) == 1
    assert "unknown key 'mss.trails' (did you mean 'mss.trials'?)" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path), "--from", "tune_mss"]) == 1
    assert "did you mean 'tune-mss'?" in capsys.readouterr().err
    assert main(["run", "--out", str(tmp_path), "--set", "pipeline.evaluate=sometimes"]) == 1
    assert "pipeline.evaluate" in capsys.readouterr().err


def test_one_run_at_a_time_per_folder(tmp_path: Path) -> None:
    from filelock import FileLock

    from masseg_search.pipeline.runner import LOCK_FILE

    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / LOCK_FILE)):  # what a run in another process holds (flock: gone when it dies)
        with pytest.raises(MassegError, match="another `run` is working in this folder"):
            run_pipeline(_config(tmp_path), out=out, stages=Recorder().stages(), progress=False)
    assert run_pipeline(_config(tmp_path), out=out, stages=Recorder().stages(), progress=False).ran


def test_the_help_lists_the_stages_in_order() -> None:
    from masseg_search.cli.run import STAGE_LIST

    assert STAGE_LIST.split(", ") == stage_names(STAGES)
