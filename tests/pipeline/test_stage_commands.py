"""Each stage command alone on a fresh folder, with the config's paths (the ones `run` uses with the default out):
it makes what it needs, or names the command that makes what is missing."""
from __future__ import annotations

from pathlib import Path

import pytest

from masseg_search.cli import main
from masseg_search.store.predictions import list_config_ids
from tiny_config import tiny_values, write_config


def test_missing_inputs_name_the_command_that_makes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["ensemble"]) == 1
    error = capsys.readouterr().err
    assert "results/predictions/test: no stored predictions of the test split" in error
    assert "masseg-search run --until infer-test" in error and "masseg-search infer --split test" in error
    assert main(["ensemble", "--select-on", "val"]) == 1
    assert "masseg-search run --until infer-val" in capsys.readouterr().err
    (tmp_path / "results" / "predictions" / "test" / "s20_b-10").mkdir(parents=True)
    assert main(["ensemble"]) == 1
    error = capsys.readouterr().err
    assert "results/plans/val.yaml: no fusion plan chosen on validation yet" in error
    assert "masseg-search ensemble --select-on val" in error
    assert main(["train-sweep", "--set", "train_sweep=null"]) == 1
    assert "the config has no sweep (train_sweep: null)" in capsys.readouterr().err


def test_the_stage_commands_chain_by_hand_on_a_fresh_folder(tmp_path: Path, tiny_checkpoint: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """tune-mss makes the config's synthetic data; infer --split and ensemble (--select-on val) find everything at
    the config's paths, as `run` lays them out. tune-mss --policy learned leaves policy.yaml, which infer --policy
    runs (policy/ beside per_type/)."""
    monkeypatch.chdir(tmp_path)
    config = str(write_config(tmp_path / "tiny.yaml", tiny_values(None, tiny_checkpoint, ensemble={"flip": False})))
    assert main(["tune-mss", "--study", "val", "--config", config, "--no-progress", "--policy", "learned"]) == 0
    assert "learned policy (" in capsys.readouterr().out
    assert (tmp_path / "results" / "data" / "synthetic" / "val.txt").is_file()
    best, policy = "results/mss/val/best_configs.yaml", "results/mss/val/policy.yaml"
    for split in ("val", "test"):
        assert main(["infer", "--config", config, "--split", split, "--configs", "20,-10;7.5,-4", "--per-type", best,
                     "--policy", policy, "--no-progress"]) == 0
        assert list_config_ids(tmp_path / "results" / "predictions" / split) == ["s20_b-10", "s7.5_b-4"]
        assert (tmp_path / "results" / "predictions" / split / "policy").is_dir()
    assert main(["ensemble", "--config", config, "--select-on", "val"]) == 0
    assert (tmp_path / "results" / "plans" / "val.yaml").is_file()
    assert main(["ensemble", "--config", config]) == 0
    assert (tmp_path / "results" / "submissions" / "tiny.zip").is_file()
    assert "submission check passed" in capsys.readouterr().out
