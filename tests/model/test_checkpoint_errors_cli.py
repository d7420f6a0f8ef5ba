"""Every way a checkpoint can be bad gives one line on stderr naming the file (no traceback), from each command
that takes a checkpoint; the reading is done in one place (model.build.read_checkpoint)."""
from __future__ import annotations

import argparse
import io
import pickle
import zipfile
from pathlib import Path
from typing import Callable

import pytest
import torch

from masseg_search.cli import main
from masseg_search.errors import MassegError
from masseg_search.model.build import load_state_dict_file


def _text(path: Path, good: Path) -> None:
    path.write_text("hello world\n")  # torch's weights-only unpickler raises a bare KeyError: 101 here


def _notes(path: Path, good: Path) -> None:
    path.write_text("model weights live on the shared drive\n")  # ... and an UnpicklingError here


def _empty(path: Path, good: Path) -> None:
    path.write_bytes(b"")


def _truncated(path: Path, good: Path) -> None:
    path.write_bytes(good.read_bytes()[:4000])


def _plain_pickle(path: Path, good: Path) -> None:
    path.write_bytes(pickle.dumps({"model": {"weight": [1.0, 2.0]}}))  # pickle.dump, not torch.save


def _other_zip(path: Path, good: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a torch archive")


def _folder(path: Path, good: Path) -> None:
    path.mkdir()


def _refused_object(path: Path, good: Path) -> None:
    torch.save({"model": {}, "args": argparse.Namespace(lr=1.0)}, path)


def _not_a_dict(path: Path, good: Path) -> None:
    torch.save([torch.zeros(2)], path)


def _no_model_key(path: Path, good: Path) -> None:
    torch.save({"weights": torch.zeros(2), "epoch": 3}, path)


def _non_tensor_entries(path: Path, good: Path) -> None:
    torch.save({"model": {"image_encoder.weight": 1.5}}, path)


def _wrong_keys(path: Path, good: Path) -> None:
    state = torch.load(good, map_location="cpu", weights_only=True)["model"]
    state = {f"module.{key}": value for key, value in state.items()}  # a DataParallel-style prefix
    torch.save({"model": state}, path)


def _wrong_shapes(path: Path, good: Path) -> None:
    state = torch.load(good, map_location="cpu", weights_only=True)["model"]
    state["no_mem_embed"] = torch.zeros(1, 1, 7)
    torch.save({"model": state}, path)


BAD_CHECKPOINTS: dict[str, tuple[Callable[[Path, Path], None], str]] = {
    "text file": (_text, r"not a torch\.save file, or corrupt or truncated \(KeyError: 101\)"),
    "text notes": (_notes, r"not a torch\.save file"),
    "empty file": (_empty, "checkpoint file is empty"),
    "truncated": (_truncated, "not a torch.save file, or corrupt or truncated"),
    "plain pickle": (_plain_pickle, "not a torch.save file, or corrupt"),
    "zip of other files": (_other_zip, "not a torch.save file, or corrupt or truncated"),
    "folder": (_folder, "checkpoint is a folder, not a file"),
    "refused object": (_refused_object, "argparse.Namespace object, which weights_only=True refuses"),
    "not a dict": (_not_a_dict, "no 'model' state dict in checkpoint"),
    "no model key": (_no_model_key, "no 'model' state dict in checkpoint"),
    "non-tensor entries": (_non_tensor_entries, "entries are not tensors"),
    "wrong keys": (_wrong_keys, "keys missing from the checkpoint"),
    "wrong shapes": (_wrong_shapes, r"shape mismatches: no_mem_embed checkpoint \(1, 1, 7\)"),
}


def _one_line_error(capsys: pytest.CaptureFixture, path: Path, pattern: str) -> None:
    import re

    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("masseg-search: error:")]
    assert len(lines) == 1, err
    assert str(path) in lines[0] and "Fix:" in lines[0]
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("kind", sorted(BAD_CHECKPOINTS))
def test_model_check_names_the_bad_checkpoint(kind: str, tiny_checkpoint: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    write, pattern = BAD_CHECKPOINTS[kind]
    path = tmp_path / "bad.pt"
    write(path, tiny_checkpoint)
    assert main(["model", "check", "--model-config", "tiny64", "--checkpoint", str(path)]) == 1
    _one_line_error(capsys, path, pattern)


def test_missing_checkpoint_names_the_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "nowhere" / "ckpt.pt"
    assert main(["model", "check", "--model-config", "tiny64", "--checkpoint", str(path)]) == 1
    _one_line_error(capsys, path, "checkpoint not found")


def test_text_checkpoint_in_infer_and_export(tiny_checkpoint: Path, engine_videos: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "notes.txt"
    _text(text, tiny_checkpoint)
    assert main(["infer", "--model-config", "tiny64", "--checkpoint", str(text), "--data", str(engine_videos),
                 "--configs", "20,-10", "--out", str(tmp_path / "pred")]) == 1
    _one_line_error(capsys, text, "not a torch.save file")
    assert main(["model", "export", "--checkpoint", str(text), "--out", str(tmp_path / "out.pt")]) == 1
    _one_line_error(capsys, text, "not a torch.save file")
    assert not (tmp_path / "out.pt").exists()


def test_plain_sam2_reference_gets_the_same_error(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from masseg_search.model.build import build_plain_predictor

    text = tmp_path / "notes.txt"
    _text(text, tiny_checkpoint)
    with pytest.raises(MassegError, match="not a torch.save file") as error:
        build_plain_predictor("tiny64", text)
    assert error.value.path == text


def test_resume_from_a_bad_training_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    from masseg_search.finetune.loop import load_training_state

    text = tmp_path / "checkpoint.pt"
    _text(text, tiny_checkpoint)
    with pytest.raises(MassegError, match="not a torch.save file") as error:
        load_training_state(text)
    assert error.value.path == text
    with pytest.raises(MassegError, match=r"not a training checkpoint \(missing \['optimizer', 'epoch', 'steps'\]\)"):
        load_training_state(tiny_checkpoint)


def test_state_dict_reader_accepts_the_good_one(tiny_checkpoint: Path) -> None:
    buffer = io.BytesIO(tiny_checkpoint.read_bytes())
    reference = torch.load(buffer, map_location="cpu", weights_only=True)["model"]
    state = load_state_dict_file(tiny_checkpoint)
    assert state.keys() == reference.keys()
    assert all(torch.equal(state[key], reference[key]) for key in state)
