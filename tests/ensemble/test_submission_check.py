"""The submission check accepts valid folders and zips and rejects every kind of broken submission, naming the file."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masseg_search.cli import main
from masseg_search.data import layout
from masseg_search.ensemble.submission import check_submission, write_submission_zip


@pytest.fixture()
def valid(tiny_dataset: Path, tmp_path: Path) -> Path:
    """A valid submission folder: the ground truth of the test split (ids come from frame 0)."""
    folder = tmp_path / "sub"
    for video in layout.open_dataset(tiny_dataset, split="test").videos():
        shutil.copytree(video.annotation_dir, folder / video.name)
    return folder


def _check(tiny_dataset: Path, location: Path) -> list:
    videos = layout.open_dataset(tiny_dataset, split="test").video_names
    return check_submission(location, tiny_dataset / "JPEGImages", tiny_dataset / "Annotations", videos=videos)


def _first_png(folder: Path) -> Path:
    return sorted(sorted(folder.iterdir())[0].glob("*.png"))[3]


def _only(problems: list, words: str, path_part: str) -> None:
    assert problems, "the broken submission was accepted"
    assert any(words in p.message and path_part in p.path for p in problems), [str(p) for p in problems]
    assert all(p.fix for p in problems)


def test_valid_folder_and_zips_pass(valid: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    assert _check(tiny_dataset, valid) == []
    zipped = write_submission_zip(valid, tmp_path / "sub.zip")
    assert _check(tiny_dataset, zipped) == []
    wrapped = tmp_path / "wrapped.zip"
    with zipfile.ZipFile(wrapped, "w") as archive:  # one wrapper folder is accepted too
        for png in sorted(valid.rglob("*.png")):
            archive.write(png, f"results/{png.relative_to(valid).as_posix()}")
    assert _check(tiny_dataset, wrapped) == []


def test_missing_video(valid: Path, tiny_dataset: Path) -> None:
    victim = sorted(valid.iterdir())[0]
    shutil.rmtree(victim)
    _only(_check(tiny_dataset, valid), "missing", victim.name)


def test_missing_and_extra_frames(valid: Path, tiny_dataset: Path) -> None:
    png = _first_png(valid)
    png.rename(png.with_name("99999.png"))
    problems = _check(tiny_dataset, valid)
    _only(problems, "frames missing", png.parent.name)
    _only(problems, "no JPEG frame", "99999.png")


def test_wrong_size(valid: Path, tiny_dataset: Path) -> None:
    png = _first_png(valid)
    layout.write_mask(png, np.zeros((32, 48), np.uint8))
    _only(_check(tiny_dataset, valid), "48x32", png.name)


def test_not_indexed(valid: Path, tiny_dataset: Path) -> None:
    png = _first_png(valid)
    Image.fromarray(layout.read_mask(png)).convert("RGB").save(png)
    _only(_check(tiny_dataset, valid), "not an indexed", png.name)


def test_values_outside_the_first_frame_ids(valid: Path, tiny_dataset: Path) -> None:
    png = _first_png(valid)
    mask = layout.read_mask(png)
    mask[:2, :2] = 42
    layout.write_mask(png, mask)
    _only(_check(tiny_dataset, valid), "[42]", png.name)


def test_stray_files(valid: Path, tiny_dataset: Path) -> None:
    (sorted(valid.iterdir())[0] / ".DS_Store").write_bytes(b"x")
    (valid / "README.txt").write_text("hello")
    (valid / "not_a_video").mkdir()
    layout.write_mask(valid / "not_a_video" / "00000.png", np.zeros((64, 64), np.uint8))
    problems = _check(tiny_dataset, valid)
    _only(problems, "stray", "README.txt")
    _only(problems, "stray", ".DS_Store")
    _only(problems, "not a video of the split", "not_a_video")


def test_zip_with_videos_nested_too_deep(valid: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    deep = tmp_path / "deep.zip"
    with zipfile.ZipFile(deep, "w") as archive:
        for png in sorted(valid.rglob("*.png")):
            archive.write(png, f"a/b/{png.relative_to(valid).as_posix()}")
    _only(_check(tiny_dataset, deep), "no video folder at the top", ".")


def test_not_a_zip(tiny_dataset: Path, tmp_path: Path) -> None:
    from masseg_search.errors import MassegError

    bogus = tmp_path / "sub.zip"
    bogus.write_text("not a zip")
    with pytest.raises(MassegError, match="not a zip"):
        _check(tiny_dataset, bogus)


def test_cli_exit_codes_and_listing(valid: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split = str(tiny_dataset / "test.txt")
    common = ["--images", str(tiny_dataset / "JPEGImages"), "--annotations", str(tiny_dataset), "--split-list", split]
    assert main(["submission", "check", str(valid), *common]) == 0
    assert "submission OK" in capsys.readouterr().out
    assert main(["submission", "zip", str(valid), "--out", str(tmp_path / "ok.zip"), *common]) == 0
    assert main(["submission", "check", str(tmp_path / "ok.zip"), *common, "--workers", "2"]) == 0
    (valid / "junk.bin").write_bytes(b"0")
    capsys.readouterr()
    assert main(["submission", "check", str(valid), *common]) == 1
    out = capsys.readouterr().out
    assert "junk.bin" in out and "Fix: delete it" in out and "1 problem(s)" in out
    assert main(["submission", "zip", str(valid), "--out", str(tmp_path / "bad.zip"), *common]) == 1
    assert not (tmp_path / "bad.zip").exists()
