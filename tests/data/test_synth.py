"""The synthetic MOSE-like generator: layout, determinism, resume, and the hard cases it promises."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masseg_search.data.layout import open_dataset, read_frame, read_mask
from masseg_search.data.synth import SMALL_AREA_FRACTION, assign_kinds, assign_splits, generate_dataset, generate_video, load_metadata
from masseg_search.errors import MassegError


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hard_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough videos that every scene kind appears several times."""
    return generate_dataset(tmp_path_factory.mktemp("synth") / "hard", videos=24, seed=5, height=96, width=128, frames=10)


def test_layout_splits_and_every_frame_annotated(tiny_dataset: Path) -> None:
    lists = {split: (tiny_dataset / f"{split}.txt").read_text().split() for split in ("train", "val", "test")}
    assert sorted(sum(lists.values(), [])) == sorted(p.name for p in (tiny_dataset / "JPEGImages").iterdir())
    assert [len(lists[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    val = open_dataset(tiny_dataset, split="val")
    assert val.video_names == lists["val"]
    for video in open_dataset(tiny_dataset).videos():
        assert video.frame_names == [f"{i:05d}" for i in range(8)]
        assert [p.stem for p in video.annotation_paths()] == video.frame_names
        first = read_mask(video.annotation_paths()[0])
        assert first.shape == (64, 64) and read_frame(video.frame_paths[0]).shape == (64, 64, 3)
        first_ids = set(np.unique(first)) - {0}
        assert first_ids, f"{video.name} has an empty first frame"
        for path in video.annotation_paths()[1:]:
            assert set(np.unique(read_mask(path))) - {0} <= first_ids


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = _tree_bytes(generate_dataset(tmp_path / "a", videos=5, seed=3, height=48, width=64, frames=4))
    second = _tree_bytes(generate_dataset(tmp_path / "b", videos=5, seed=3, height=48, width=64, frames=4, workers=2))
    other = _tree_bytes(generate_dataset(tmp_path / "c", videos=5, seed=4, height=48, width=64, frames=4))
    assert first == second
    assert first.keys() == other.keys()
    assert any(first[name] != other[name] for name in first if name.endswith(".jpg"))


def test_resume_rebuilds_only_unfinished_videos_and_refuses_other_parameters(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "d", videos=5, seed=1, height=48, width=64, frames=4)
    before = _tree_bytes(root)
    kept = root / "JPEGImages" / "video_0001" / "00000.jpg"
    kept_mtime = kept.stat().st_mtime_ns
    (root / "metadata" / "video_0003.json").unlink()  # as if interrupted before video 3 finished
    (root / "Annotations" / "video_0003" / "00002.png").unlink()
    generate_dataset(root, videos=5, seed=1, height=48, width=64, frames=4)
    assert _tree_bytes(root) == before
    assert kept.stat().st_mtime_ns == kept_mtime
    with pytest.raises(MassegError, match="other parameters"):
        generate_dataset(root, videos=5, seed=2, height=48, width=64, frames=4)


def test_kinds_and_splits_are_stratified() -> None:
    kinds = assign_kinds(40, seed=0)
    counts = {kind: kinds.count(kind) for kind in set(kinds)}
    assert counts["regular"] == 20 and all(counts[k] >= 4 for k in ("small", "crowded", "lookalike", "occlusion"))
    splits = assign_splits(kinds, {"train": 0.5, "val": 0.25, "test": 0.25})
    assert [splits.count(s) for s in ("train", "val", "test")] == [20, 10, 10]
    for kind in ("regular", "crowded"):  # every split gets its share of each kind
        in_val = sum(1 for k, s in zip(kinds, splits) if k == kind and s == "val")
        assert in_val >= 1


def test_metadata_matches_the_masks(hard_dataset: Path) -> None:
    for video in open_dataset(hard_dataset).videos():
        metadata = load_metadata(hard_dataset, video.name)
        masks = np.stack([read_mask(p) for p in video.annotation_paths()])
        pixels = masks.shape[1] * masks.shape[2]
        assert metadata["num_objects"] == len(metadata["objects"]) == len(set(np.unique(masks[0])) - {0})
        for record in metadata["objects"]:
            visible = (masks == record["id"]).reshape(len(masks), -1).sum(1)
            assert record["area_fraction_first_frame"] == pytest.approx(visible[0] / pixels)
            assert record["visible_frames"] == int((visible > 0).sum())
            assert record["small"] == (visible[0] / pixels < SMALL_AREA_FRACTION)


def test_hard_cases_are_present(hard_dataset: Path) -> None:
    summary = json.loads((hard_dataset / "synth.json").read_text())["videos"]
    by_kind: dict[str, list[dict]] = {}
    for row in summary:
        by_kind.setdefault(row["kind"], []).append(load_metadata(hard_dataset, row["video"]))
    assert len(by_kind["regular"]) >= len(summary) // 2 - 1
    assert all(1 <= m["num_objects"] <= 3 for m in by_kind["regular"])
    # small objects: below 0.5% of the frame in the first frame
    assert all(any(o["small"] for o in m["objects"]) for m in by_kind["small"])
    # crowded: 5-10 objects, several of them touching or overlapping at some point
    assert all(5 <= m["num_objects"] <= 10 for m in by_kind["crowded"])
    # look-alike: every object of the video has the same colour
    assert all(len({tuple(o["color"]) for o in m["objects"]}) == 1 and m["num_objects"] >= 2 for m in by_kind["lookalike"])
    # disappearance then reappearance, checked on the masks themselves
    for metadata in by_kind["occlusion"]:
        video = open_dataset(hard_dataset).video(metadata["video"])
        masks = np.stack([read_mask(p) for p in video.annotation_paths()])
        hidden_then_back = []
        for record in metadata["objects"]:
            present = (masks == record["id"]).reshape(len(masks), -1).any(1)
            gone = np.nonzero(~present)[0]
            if len(gone) and present[0] and present[gone[-1] + 1 :].any():
                hidden_then_back.append(record["id"])
            assert [e["event"] for e in record["events"]][:2] in ([], ["disappears", "reappears"], ["disappears"])
        assert hidden_then_back, f"{video.name}: no object disappears and comes back"
    # occlusion by other objects: some object is partly covered in some frame
    assert any(o["min_visible_fraction"] < 0.9 for m in by_kind["crowded"] for o in m["objects"])


def test_sizes_from_tiny_to_720p() -> None:
    frames, masks, metadata = generate_video("big", "crowded", seed=0, index=0, height=720, width=1280, frames=2)
    assert frames[0].shape == (720, 1280, 3) and masks[1].shape == (720, 1280)
    assert 5 <= metadata["num_objects"] <= 10
    frames, masks, metadata = generate_video("tiny", "occlusion", seed=0, index=1, height=32, width=32, frames=6)
    assert masks[0].max() >= 1 and set(np.unique(masks[0])) - {0} == {o["id"] for o in metadata["objects"]}


def test_bad_parameters_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(MassegError, match="frames >= 2"):
        generate_dataset(tmp_path / "x", videos=2, frames=1)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MassegError, match="not a synthetic dataset"):
        generate_dataset(tmp_path / "busy", videos=2)
