"""Every converter round-trips every mask exactly (after the id renumbering and resizing rules), and resumes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from masseg_search.data.check import ERROR, check_dataset
from masseg_search.data.layout import image_size, list_files, read_mask
from masseg_search.data.moseplus import convert_source
from masseg_search.data.moseplus import fake_sources as fake
from masseg_search.data.moseplus.writer import output_size
from masseg_search.errors import MassegError

WRITERS = {
    "davis": fake.write_fake_davis,
    "ytvos": fake.write_fake_ytvos,
    "vis": fake.write_fake_vis,
    "ovis": fake.write_fake_ovis,
    "burst": fake.write_fake_burst,
}


def read_manifests(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    frames = pd.read_csv(out / "manifest_frames.csv", dtype=str, keep_default_na=False)
    objects = pd.read_csv(out / "manifest_objects.csv", dtype={"video": str, "first_frame": str, "source_video": str})
    return frames, objects


def assert_round_trip(source: fake.FakeSource, out: Path, shorter_side: int | None) -> int:
    """Every labelled output frame equals its source truth, resized with Pillow's NEAREST and ids mapped back."""
    frames, objects = read_manifests(out)
    checked = 0
    for video, video_frames in frames.groupby("video"):
        mapping = objects[objects["video"] == video]
        ids = sorted(mapping["object_id"])
        assert ids == list(range(1, len(ids) + 1)), f"{video}: ids are not 1..N"
        # renumbered in order of first appearance
        firsts = mapping.sort_values("object_id")["first_frame"].tolist()
        assert firsts == sorted(firsts)
        to_source = np.zeros(256, dtype=np.int64)
        to_source[mapping["object_id"].to_numpy()] = mapping["source_object_id"].to_numpy()
        for row in video_frames.itertuples():
            if row.labelled != "True":
                assert not (out / "Annotations" / video / f"{row.frame}.png").exists()
                continue
            mask = read_mask(out / "Annotations" / video / f"{row.frame}.png")
            truth = source.truth[row.source_video][row.source_frame]
            height, width = output_size(*truth.shape, shorter_side)
            expected = np.asarray(Image.fromarray(truth.astype(np.int32), mode="I").resize((width, height), Image.NEAREST))
            assert mask.shape == (height, width)
            assert image_size(out / "JPEGImages" / video / f"{row.frame}.jpg") == (height, width)
            np.testing.assert_array_equal(to_source[mask], expected, err_msg=f"{video} frame {row.frame}")
            checked += 1
    return checked


@pytest.mark.parametrize("format_name", sorted(WRITERS))
def test_round_trip_at_source_size(tmp_path: Path, format_name: str) -> None:
    source = WRITERS[format_name](tmp_path / "src")
    out = tmp_path / "out"
    summary = convert_source(format_name, source.src, out, ann=source.ann, shorter_side=None, progress=False)
    labelled = sum(len(frames) for frames in source.truth.values())
    assert assert_round_trip(source, out, None) == labelled
    assert len(summary.videos) == len(source.truth)
    assert (out / "videos.txt").read_text().split() == summary.videos
    problems = [p for p in check_dataset(out, out / "videos.txt", allow_late_objects=True) if p.severity == ERROR]
    assert problems == []


@pytest.mark.parametrize("format_name", ["davis", "vis", "burst"])
def test_round_trip_resized(tmp_path: Path, format_name: str) -> None:
    source = WRITERS[format_name](tmp_path / "src")
    out = tmp_path / "out"
    convert_source(format_name, source.src, out, ann=source.ann, shorter_side=24, progress=False)
    assert assert_round_trip(source, out, 24) > 0
    for video in (out / "JPEGImages").iterdir():
        assert min(image_size(list_files(video, (".jpg",))[0])) == 24


def test_vis_2019_layout_and_every_segmentation_kind(tmp_path: Path) -> None:
    for style in ("rle", "compressed", "polygon"):
        source = fake.write_fake_vis(tmp_path / style, style=style, layout="2019")
        assert source.ann.parent != source.src
        convert_source("vis", source.src, tmp_path / f"out-{style}", ann=source.ann, shorter_side=None, progress=False)
        assert assert_round_trip(source, tmp_path / f"out-{style}", None) == 10


def test_ytvos_annotated_or_all_frames_and_late_objects(tmp_path: Path) -> None:
    all_frames = tmp_path / "train_all_frames" / "JPEGImages"
    source = fake.write_fake_ytvos(tmp_path / "src", videos=1, frames=11, all_frames=all_frames)
    annotated, every = tmp_path / "annotated", tmp_path / "all"
    convert_source("ytvos", source.src, annotated, shorter_side=None, frames="annotated", progress=False)
    convert_source("ytvos", source.src, every, shorter_side=None, frames="all", images=all_frames, progress=False)
    frames_a, objects_a = read_manifests(annotated)
    frames_b, objects_b = read_manifests(every)
    assert frames_a["source_frame"].tolist() == ["00000", "00005", "00010"]
    assert frames_b["source_frame"].tolist() == [f"{t:05d}" for t in range(11)]
    assert frames_b["labelled"].tolist() == ["True" if t % 5 == 0 else "False" for t in range(11)]
    # the late object (source id 3) keeps its start frame
    late_a = objects_a[objects_a["source_object_id"] == 3].iloc[0]
    late_b = objects_b[objects_b["source_object_id"] == 3].iloc[0]
    assert (late_a["object_id"], late_a["first_frame"], late_a["category"]) == (2, "00001", "dog")
    assert (late_b["first_frame"], str(late_b["first_source_frame"]).zfill(5)) == ("00005", "00005")
    assert assert_round_trip(source, annotated, None) == 3
    assert assert_round_trip(source, every, None) == 3
    assert [p for p in check_dataset(every, allow_late_objects=True) if p.severity == ERROR] == []
    assert any(p.kind == "late-object" for p in check_dataset(every, allow_late_objects=False))


def test_clip_starts_at_first_frame_with_an_object(tmp_path: Path) -> None:
    source = fake.write_fake_vis(tmp_path / "src", videos=1, style="compressed")
    data = json.loads(source.ann.read_text())
    for annotation in data["annotations"]:
        annotation["segmentations"][0] = None  # frame 0 now shows no object
    source.ann.write_text(json.dumps(data))
    out = tmp_path / "out"
    convert_source("vis", source.src, out, ann=source.ann, shorter_side=None, progress=False)
    frames, _ = read_manifests(out)
    assert frames["source_frame"].tolist() == ["00001", "00002", "00003", "00004"]
    assert frames["frame"].tolist() == ["00000", "00001", "00002", "00003"]


def test_rerun_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    source = fake.write_fake_davis(tmp_path / "src", videos=2)
    out = tmp_path / "out"
    convert_source("davis", source.src, out, shorter_side=None, progress=False)
    stamp = (out / "Annotations" / "davis-clip000" / "00000.png").stat().st_mtime_ns
    # a half-written second video (no done record) is redone; the finished first one is kept as is
    (out / ".done" / "davis-clip001.json").unlink()
    (out / "Annotations" / "davis-clip001" / "00003.png").unlink()
    again = convert_source("davis", source.src, out, shorter_side=None, progress=False)
    assert again.frames == 5  # only the redone video's frames were written
    assert (out / "Annotations" / "davis-clip000" / "00000.png").stat().st_mtime_ns == stamp
    assert assert_round_trip(source, out, None) == 10
    with pytest.raises(MassegError, match="other settings"):
        convert_source("davis", source.src, out, shorter_side=24, progress=False)


def test_davis_split_list(tmp_path: Path) -> None:
    source = fake.write_fake_davis(tmp_path / "src", videos=3)
    summary = convert_source("davis", source.src, tmp_path / "out", split="train", shorter_side=None, progress=False)
    assert summary.videos == ["davis-clip000", "davis-clip001"]


def test_parallel_conversion_writes_the_same_and_skips_clips_without_objects(tmp_path: Path) -> None:
    source = fake.write_fake_vis(tmp_path / "src", videos=3, style="compressed")
    data = json.loads(source.ann.read_text())
    for annotation in data["annotations"]:
        if annotation["video_id"] == 2:
            annotation["segmentations"] = [None] * len(annotation["segmentations"])
    source.ann.write_text(json.dumps(data))
    serial = convert_source("vis", source.src, tmp_path / "serial", ann=source.ann, shorter_side=24, progress=False)
    parallel = convert_source("vis", source.src, tmp_path / "parallel", ann=source.ann, shorter_side=24,
                              progress=False, workers=2)
    assert serial.skipped == parallel.skipped == ["vis-clip001"]
    assert serial.videos == parallel.videos == ["vis-clip000", "vis-clip002"]
    for name in ("manifest_frames.csv", "manifest_objects.csv", "videos.txt"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "parallel" / name).read_bytes()
    for path in (tmp_path / "serial" / "Annotations").rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "parallel" / path.relative_to(tmp_path / "serial")).read_bytes()
    rerun = convert_source("vis", source.src, tmp_path / "serial", ann=source.ann, shorter_side=24, progress=False)
    assert (rerun.videos, rerun.skipped, rerun.frames) == (serial.videos, serial.skipped, 0)


def test_json_object_id_255_is_an_object_not_void(tmp_path: Path) -> None:
    source = fake.write_fake_vis(tmp_path / "src", videos=1, style="compressed")
    data = json.loads(source.ann.read_text())
    old_id = data["annotations"][0]["id"]
    data["annotations"][0]["id"] = 255
    source.ann.write_text(json.dumps(data))
    for frame in source.truth["vis-clip000"].values():
        frame[frame == old_id] = 255
    out = tmp_path / "out"
    convert_source("vis", source.src, out, ann=source.ann, shorter_side=None, progress=False)
    assert assert_round_trip(source, out, None) == 5
    assert 255 in set(read_manifests(out)[1]["source_object_id"])


def test_davis_void_label_stays_void(tmp_path: Path) -> None:
    from masseg_search.data.layout import write_mask

    source = fake.write_fake_davis(tmp_path / "src", videos=1)
    png = source.src / "Annotations" / "480p" / "davis-clip000" / "00001.png"
    mask = read_mask(png)
    mask[:2, :] = 255
    write_mask(png, mask)
    out = tmp_path / "out"
    convert_source("davis", source.src, out, shorter_side=None, progress=False)
    converted = read_mask(out / "Annotations" / "davis-clip000" / "00001.png")
    assert (converted[:2, :] == 255).all()
    assert set(read_manifests(out)[1]["object_id"]) == {1, 2, 3}


def test_ytvos_every_frame_from_a_separate_image_folder(tmp_path: Path) -> None:
    all_frames = tmp_path / "train_all_frames" / "JPEGImages"
    source = fake.write_fake_ytvos(tmp_path / "train", videos=1, frames=11, all_frames=all_frames)
    assert len(list((source.src / "JPEGImages" / "ytclip000").iterdir())) == 3  # the split ships every 5th frame
    out = tmp_path / "out"
    convert_source("ytvos", source.src, out, shorter_side=None, frames="all", images=all_frames, progress=False)
    frames, _ = read_manifests(out)
    assert len(frames) == 11 and frames["labelled"].tolist().count("True") == 3
    assert assert_round_trip(source, out, None) == 3


def test_burst_every_frame_leaves_unannotated_ones_unlabelled(tmp_path: Path) -> None:
    source = fake.write_fake_burst(tmp_path / "src", videos=1, frames=7)
    out = tmp_path / "out"
    convert_source("burst", source.src, out, ann=source.ann, shorter_side=None, frames="all", progress=False)
    frames, _ = read_manifests(out)
    assert frames["source_frame"].tolist() == [f"frame{t:04d}" for t in range(1, 8)]
    assert frames["labelled"].tolist() == ["True", "False"] * 3 + ["True"]
    assert assert_round_trip(source, out, None) == 4


@pytest.mark.parametrize("format_name,layout", [("davis", None), ("ytvos", None), ("vis", "2021"), ("vis", "2019"),
                                                ("ovis", None), ("burst", None)])
def test_cli_convert_each_format(tmp_path: Path, format_name: str, layout: str | None,
                                 capsys: pytest.CaptureFixture) -> None:
    from masseg_search.cli import main

    writer = WRITERS[format_name]
    source = writer(tmp_path / "src", layout=layout) if layout else writer(tmp_path / "src")
    out = tmp_path / "out"
    args = ["data", "convert", "--format", format_name, "--src", str(source.src), "--out", str(out),
            "--shorter-side", "24"]
    if source.ann is not None and layout != "2021":  # YouTube-VIS 2021 keeps instances.json beside JPEGImages/
        args += ["--ann", str(source.ann)]
    assert main(args) == 0
    assert f"{len(source.truth)} videos in {out}" in capsys.readouterr().out
    assert assert_round_trip(source, out, 24) == sum(len(frames) for frames in source.truth.values())
