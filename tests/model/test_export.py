"""`model export`: a training checkpoint stripped to official weights that load back unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from masseg_search.cli import main
from masseg_search.model.build import export_checkpoint, load_state_dict_file


def test_export_strips_training_state_and_keeps_weights(tiny_checkpoint: Path, tmp_path: Path) -> None:
    weights = load_state_dict_file(tiny_checkpoint)
    training = tmp_path / "training.pt"
    torch.save({"model": weights, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3, "steps": 30}, training)
    out = export_checkpoint(training, tmp_path / "exported.pt", model_config="tiny64")
    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert set(saved) == {"model"}
    assert saved["model"].keys() == weights.keys()
    assert all(torch.equal(saved["model"][key], weights[key]) for key in weights)


def test_export_refuses_weights_of_another_config(tiny_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["model", "export", "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "x.pt"),
                 "--model-config", "tiny128"])
    assert code == 1
    error = capsys.readouterr().err
    assert "do not fit" in error and "tiny64" in error
    assert not (tmp_path / "x.pt").exists()


def test_bundled_base_checkpoint_fits_tiny128() -> None:
    """The demo's bundled base (configs/checkpoints/README.md) is an official-format tiny128 checkpoint."""
    from masseg_search import CONFIGS_DIR
    from masseg_search.model.build import build_model

    model = build_model("tiny128", CONFIGS_DIR / "checkpoints" / "tiny128_base.pt")
    assert model.image_size == 128
