"""One way to configure: --config plus --set key.path=value, validated by the schema."""
from __future__ import annotations

from pathlib import Path

import pytest

from masseg_search import PROJECT_ROOT
from masseg_search.cli import main
from masseg_search.config import load_config, parse_overrides
from masseg_search.data.layout import find_split_list
from masseg_search.errors import MassegError


def test_set_values_are_yaml_and_go_through_the_schema() -> None:
    overrides = parse_overrides(["mss.trials=8", "data.synth=null", "ensemble.flip=false", "model.config=tiny64",
                                 "train_sweep.space.lr={low: 1.0e-4, high: 3.0e-4}", "mss.trials=9"])
    assert overrides == {"mss.trials": 9, "data.synth": None, "ensemble.flip": False, "model.config": "tiny64",
                         "train_sweep.space.lr": {"low": 1.0e-4, "high": 3.0e-4}}
    config = load_config("demo", overrides)
    assert config.mss.trials == 9 and config.data.synth is None and config.ensemble.flip is False
    assert config.train_sweep.space["lr"].high == 3.0e-4
    # a section set to null in the file takes keys again (its other keys at their defaults)
    config = load_config("demo", {"train_sweep": None})
    assert config.train_sweep is None
    assert load_config("demo", {"train_sweep": None, "train_sweep.samples": 2}).train_sweep.samples == 2


@pytest.mark.parametrize("assignment, message", [
    ("mss.trails=3", "unknown key 'mss.trails' (did you mean 'mss.trials'?)"),
    ("pipelin.out=x", "unknown key 'pipelin' (did you mean 'pipeline'?)"),
    ("train.loss.dise=2", "unknown key 'train.loss.dise' (did you mean 'train.loss.dice'?)"),
    ("mss.trials=many", "mss.trials: Input should be a valid integer"),
])
def test_a_bad_set_names_the_key_and_the_closest_valid_one(assignment: str, message: str) -> None:
    with pytest.raises(MassegError) as caught:
        load_config("demo", parse_overrides([assignment]))
    assert message in str(caught.value) and "in --set" in str(caught.value)


def test_set_syntax_errors() -> None:
    with pytest.raises(MassegError, match="is not KEY=VALUE"):
        parse_overrides(["mss.trials"])
    with pytest.raises(MassegError, match="'model.config' is a value"):
        load_config("demo", parse_overrides(["model.config.name=x"]))


def test_every_stage_command_takes_config_and_set(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for command in (["train"], ["train-sweep"], ["tune-mss"], ["infer", "--out", str(tmp_path)], ["ensemble"],
                    ["run"], ["demo"], ["data", "synth"], ["data", "scene-types", str(tmp_path)]):
        assert main([*command, "--set", "mss.trails=3"]) == 1, command
        assert "did you mean 'mss.trials'" in capsys.readouterr().err, command


def test_the_bundled_checkpoint_is_found_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_config().model.checkpoint == str(PROJECT_ROOT / "configs" / "checkpoints" / "tiny128_base.pt")


def test_a_split_may_be_a_list_file(tmp_path: Path) -> None:
    listing = tmp_path / "lists" / "sam2_val.txt"
    listing.parent.mkdir()
    listing.write_text("a\nb\n")
    assert find_split_list(tmp_path / "root", str(listing)) == listing
    with pytest.raises(MassegError, match="split list file not found"):
        find_split_list(tmp_path / "root", str(tmp_path / "missing.txt"))
