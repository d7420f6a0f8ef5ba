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


def test_default_check_reads_the_annotations_beside_the_images(valid: Path, tiny_dataset: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """An id that is not in the first frame fails the plain `--images` check: the split's Annotations are found."""
    from masseg_search.ensemble.submission import check_submission_report

    png = _first_png(valid)
    mask = layout.read_mask(png)
    mask[:2, :2] = 42
    layout.write_mask(png, mask)
    split = ["--split-list", str(tiny_dataset / "test.txt")]
    assert main(["submission", "check", str(valid), "--images", str(tiny_dataset / "JPEGImages"), *split]) == 1
    out = capsys.readouterr().out
    videos = layout.open_dataset(tiny_dataset, split="test").video_names
    assert f"ids checked against the first-frame masks in {tiny_dataset / 'Annotations'} (00000.png for {len(videos)} videos)" in out
    assert "[42]" in out and png.name in out
    assert main(["submission", "check", str(valid), "--images", str(tiny_dataset), *split, "--no-annotations"]) == 0
    assert "ids not checked (--no-annotations)" in capsys.readouterr().out
    report = check_submission_report(valid, tiny_dataset / "JPEGImages", videos=videos)
    assert report.annotations_root == tiny_dataset / "Annotations"
    assert set(report.first_masks) == set(videos) and set(report.first_masks.values()) == {"00000.png"}
    assert any("[42]" in p.message for p in report.problems)


def test_no_annotations_beside_the_images_is_an_error_naming_where_it_looked(valid: Path, tiny_dataset: Path,
                                                                             tmp_path: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    images = tmp_path / "valid" / "JPEGImages"
    shutil.copytree(tiny_dataset / "JPEGImages", images)
    split = ["--split-list", str(tiny_dataset / "test.txt")]
    assert main(["submission", "check", str(valid), "--images", str(images), *split]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'valid' / 'Annotations'}: no first-frame masks beside the JPEG folder" in err
    assert "--no-annotations" in err and "Traceback" not in err
    assert main(["submission", "check", str(valid), "--images", str(images), *split,
                 "--annotations", str(tmp_path / "nowhere")]) == 1
    assert f"{tmp_path / 'nowhere'}: first-frame masks folder not found" in capsys.readouterr().err


def test_videos_without_a_first_mask_are_listed(valid: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    from masseg_search.ensemble.submission import check_submission_report

    videos = layout.open_dataset(tiny_dataset, split="test").video_names
    annotations = tmp_path / "Annotations"
    for video in videos[1:]:
        shutil.copytree(tiny_dataset / "Annotations" / video, annotations / video)
    report = check_submission_report(valid, tiny_dataset / "JPEGImages", annotations, videos=videos)
    assert report.problems == [] and report.videos_without_masks == [videos[0]]
    assert f"1 video(s) have no mask there, ids not checked for them: {videos[0]}" in report.masks_summary()


def test_annotations_beside_each_layout(tmp_path: Path) -> None:
    from masseg_search.ensemble.submission import annotations_beside

    (tmp_path / "davis" / "JPEGImages" / "480p").mkdir(parents=True)
    (tmp_path / "davis" / "Annotations" / "480p").mkdir(parents=True)
    assert annotations_beside(tmp_path / "valid" / "JPEGImages") == tmp_path / "valid" / "Annotations"
    assert annotations_beside(tmp_path / "davis" / "JPEGImages" / "480p") == tmp_path / "davis" / "Annotations" / "480p"
    assert annotations_beside(tmp_path / "davis") == tmp_path / "davis" / "Annotations" / "480p"
