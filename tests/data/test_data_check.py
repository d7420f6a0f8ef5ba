"""`data check`: a clean dataset has no problem; every kind of damage is reported with its file and a fix."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from masseg_search.data.check import ERROR, WARNING, check_dataset, check_dataset_with_summary, summary_table
from masseg_search.data.layout import read_mask, write_mask

VIDEO = "video_0001"


@pytest.fixture
def dataset_copy(tiny_dataset: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(tiny_dataset, root)
    return root


def _frames(root: Path) -> Path:
    return root / "JPEGImages" / VIDEO


def _annotations(root: Path) -> Path:
    return root / "Annotations" / VIDEO


def _remove_middle_frame(root: Path) -> Path:
    (_frames(root) / "00003.jpg").unlink()
    (_annotations(root) / "00003.png").unlink()
    return _frames(root)


def _non_integer_name(root: Path) -> Path:
    (_frames(root) / "00007.jpg").rename(_frames(root) / "last.jpg")
    (_annotations(root) / "00007.png").rename(_annotations(root) / "last.png")
    return _frames(root)


def _annotation_wrong_size(root: Path) -> Path:
    path = _annotations(root) / "00002.png"
    write_mask(path, np.zeros((32, 48), np.uint8) + read_mask(path)[:32, :48])
    return path


def _rgb_annotation(root: Path) -> Path:
    path = _annotations(root) / "00004.png"
    Image.open(path).convert("RGB").save(path)
    return path


def _grayscale_annotation(root: Path) -> Path:
    path = _annotations(root) / "00004.png"
    Image.fromarray(read_mask(path), mode="L").save(path)
    return path


def _late_object(root: Path) -> Path:
    path = _annotations(root) / "00005.png"
    mask = read_mask(path)
    mask[:3, :3] = 9
    write_mask(path, mask)
    return _annotations(root)


def _empty_first_mask(root: Path) -> Path:
    path = _annotations(root) / "00000.png"
    write_mask(path, np.zeros_like(read_mask(path)))
    return path


def _truncated_jpeg(root: Path) -> Path:
    path = _frames(root) / "00001.jpg"
    path.write_bytes(path.read_bytes()[:-200])
    return path


def _corrupt_jpeg(root: Path) -> Path:
    path = _frames(root) / "00001.jpg"
    path.write_bytes(b"not a jpeg at all")
    return path


def _truncated_png(root: Path) -> Path:
    path = _annotations(root) / "00006.png"
    path.write_bytes(path.read_bytes()[:60])
    return path


def _empty_video_folder(root: Path) -> Path:
    for path in _frames(root).iterdir():
        path.unlink()
    return _frames(root)


def _annotations_without_images(root: Path) -> Path:
    shutil.copytree(_annotations(root), root / "Annotations" / "orphan_video")
    return root / "Annotations" / "orphan_video"


def _annotation_without_its_frame(root: Path) -> Path:
    shutil.copy(_annotations(root) / "00000.png", _annotations(root) / "00042.png")
    return _annotations(root)


def _no_annotations(root: Path) -> Path:
    shutil.rmtree(_annotations(root))
    return _annotations(root)


def _frame_of_other_size(root: Path) -> Path:
    Image.new("RGB", (80, 64)).save(_frames(root) / "00002.jpg")
    return _frames(root)


DAMAGE: dict[str, tuple[Callable[[Path], Path], str, str]] = {
    "missing frame": (_remove_middle_frame, "missing-frames", "missing frames"),
    "non-integer name": (_non_integer_name, "frame-names", "not integers"),
    "annotation size": (_annotation_wrong_size, "size-mismatch", "32x48"),
    "rgb annotation": (_rgb_annotation, "not-indexed", "RGB"),
    "grayscale annotation": (_grayscale_annotation, "not-indexed", "grayscale"),
    "late object": (_late_object, "late-object", "object id 9"),
    "empty first mask": (_empty_first_mask, "empty-first-mask", "empty first-frame mask"),
    "truncated jpeg": (_truncated_jpeg, "corrupt-file", "truncated"),
    "corrupt jpeg": (_corrupt_jpeg, "corrupt-file", "cannot read image"),
    "truncated png": (_truncated_png, "corrupt-file", "corrupt or truncated PNG"),
    "empty video folder": (_empty_video_folder, "empty-video", "empty video folder"),
    "annotations without images": (_annotations_without_images, "annotations-without-images", "no frame folder"),
    "annotation without its frame": (_annotation_without_its_frame, "annotations-without-images", "00042.png"),
    "no annotation": (_no_annotations, "missing-annotation", "no annotation"),
    "frame sizes differ": (_frame_of_other_size, "size-mismatch", "different sizes"),
}


def test_clean_dataset_has_no_problem(tiny_dataset: Path) -> None:
    problems, summary = check_dataset_with_summary(tiny_dataset, workers=2)
    assert problems == []
    assert (summary.videos, summary.frames, summary.annotations) == (8, 64, 64)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_each_damage_is_reported_with_its_file_and_fix(dataset_copy: Path, damage: str) -> None:
    make, kind, words = DAMAGE[damage]
    path = make(dataset_copy)
    problems = check_dataset(dataset_copy)
    matching = [p for p in problems if p.kind == kind and p.path == path]
    assert matching, f"no {kind!r} problem at {path}; got {[str(p) for p in problems]}"
    assert words in matching[0].message
    assert matching[0].severity == ERROR and matching[0].fix
    assert all(p.path.is_relative_to(dataset_copy) for p in problems)


def test_every_problem_is_reported_not_just_the_first(dataset_copy: Path) -> None:
    paths = [_rgb_annotation(dataset_copy), _truncated_jpeg(dataset_copy), _late_object(dataset_copy)]
    other = dataset_copy / "Annotations" / "video_0002" / "00000.png"
    write_mask(other, np.zeros_like(read_mask(other)))
    problems = check_dataset(dataset_copy)
    assert {p.path for p in problems} >= {*paths, other}
    kinds = {row[0]: row[1] for row in summary_table(problems)}
    assert kinds["not-indexed"] == 1 and kinds["empty-first-mask"] == 1


def test_late_objects_allowed_for_training_clips(dataset_copy: Path) -> None:
    _late_object(dataset_copy)
    assert check_dataset(dataset_copy, allow_late_objects=True) == []


def test_stride_between_frames_is_not_a_gap_but_a_late_first_annotation_warns(dataset_copy: Path) -> None:
    for index in range(7, -1, -1):  # 0..7 -> 0, 5, ..., 35 (YouTube-VOS style)
        (_frames(dataset_copy) / f"{index:05d}.jpg").rename(_frames(dataset_copy) / f"{index * 5:05d}.jpg")
        (_annotations(dataset_copy) / f"{index:05d}.png").rename(_annotations(dataset_copy) / f"{index * 5:05d}.png")
    assert check_dataset(dataset_copy) == []
    (_annotations(dataset_copy) / "00000.png").unlink()
    problems = check_dataset(dataset_copy)
    assert [(p.kind, p.severity) for p in problems] == [("first-frame", WARNING)]


def test_split_list_selects_videos_and_names_missing_ones(dataset_copy: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("video_0000\nno_such_video\nvideo_0000\n")
    _empty_first_mask(dataset_copy)  # video_0001 is not listed: not checked
    problems = check_dataset(dataset_copy, split_list=listing)
    assert sorted(p.kind for p in problems) == ["missing-video", "split-list"]


def test_not_a_dataset(tmp_path: Path) -> None:
    problems = check_dataset(tmp_path / "nowhere")
    assert len(problems) == 1 and problems[0].kind == "layout" and problems[0].fix


def test_davis_layout_with_imagesets(tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "davis"
    shutil.copytree(tiny_dataset / "JPEGImages", root / "JPEGImages" / "480p")
    shutil.copytree(tiny_dataset / "Annotations", root / "Annotations" / "480p")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    shutil.copy(tiny_dataset / "val.txt", root / "ImageSets" / "2017" / "val.txt")
    assert check_dataset(root, split_list=root / "ImageSets" / "2017" / "val.txt") == []
    bad = root / "Annotations" / "480p" / (tiny_dataset / "val.txt").read_text().split()[0] / "00003.png"
    Image.open(bad).convert("L").save(bad)
    problems = check_dataset(root)
    assert [(p.kind, p.path) for p in problems] == [("not-indexed", bad)]
