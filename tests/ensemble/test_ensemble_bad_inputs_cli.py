"""`ensemble` with a predictions folder that is missing, empty, or lacks a named configuration: one error line
that names the folder it looked at (the command line, and the Python API)."""
from __future__ import annotations

from pathlib import Path

import pytest
from ensemble_store import clean_logits, write_store

from masseg_search.cli import main
from masseg_search.data import layout
from masseg_search.ensemble import plan_from_dict, run_ensemble
from masseg_search.ensemble.select import select_fusion
from masseg_search.errors import MassegError


def _error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("masseg-search: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_predictions_folder(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "predictions" / "test"
    assert main(["ensemble", "--predictions", str(missing), "--data", str(tiny_dataset), "--split", "test",
                 "--out", str(tmp_path / "sub")]) == 1
    line = _error_line(capsys)
    assert f"{missing}: predictions folder not found" in line and "Fix:" in line
    assert main(["ensemble", "--select-on", "val", "--predictions", str(missing), "--data", str(tiny_dataset),
                 "--out-plan", str(tmp_path / "plan.yaml")]) == 1
    assert f"{missing}: predictions folder not found" in _error_line(capsys)


def test_predictions_folder_without_configurations(tiny_dataset: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "predictions" / "test"
    (empty / "not_a_config").mkdir(parents=True)
    assert main(["ensemble", "--predictions", str(empty), "--data", str(tiny_dataset), "--split", "test",
                 "--out", str(tmp_path / "sub")]) == 1
    assert f"{empty}: no stored configurations found" in _error_line(capsys)


def test_configuration_not_stored_names_the_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    videos = layout.open_dataset(tiny_dataset, split="test").video_names
    stored = write_store(tmp_path / "predictions", tiny_dataset, videos, {"s20_b-10": lambda g, i, v: clean_logits(g)})
    plan = plan_from_dict({"method": "single", "configs": ["s7.5_b-4"]})
    with pytest.raises(MassegError, match=r"configs \['s7.5_b-4'\].*are not in the predictions") as error:
        run_ensemble(stored, plan, tiny_dataset, tmp_path / "sub", split_list=tiny_dataset / "test.txt", progress=False)
    assert error.value.path == stored
    with pytest.raises(MassegError, match="predictions folder not found") as error:
        select_fusion(tmp_path / "elsewhere", tiny_dataset, tmp_path / "plan.yaml", split_list=tiny_dataset / "test.txt")
    assert error.value.path == tmp_path / "elsewhere"
