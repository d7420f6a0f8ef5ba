"""Bad input gets a MassegError that names the file and the fix (Python API and CLI)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from masseg_search.cli import main
from masseg_search.data.moseplus import convert_source
from masseg_search.data.moseplus import fake_sources as fake
from masseg_search.data.moseplus.sources.vis import rle_counts
from masseg_search.errors import MassegError


def convert(source: fake.FakeSource, format_name: str, out: Path) -> None:
    convert_source(format_name, source.src, out, ann=source.ann, shorter_side=None, progress=False)


def test_rle_counts_match_pycocotools_strings() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((23, 31)) > 0.6
    compressed = fake.compressed_rle(mask)["counts"]
    assert rle_counts(compressed) == fake.uncompressed_rle(mask)["counts"]


def test_vis_rle_size_disagrees_with_video(tmp_path: Path) -> None:
    source = fake.write_fake_vis(tmp_path / "src", videos=1, style="rle")
    data = json.loads(source.ann.read_text())
    data["annotations"][0]["segmentations"][1]["size"] = [41, 56]
    source.ann.write_text(json.dumps(data))
    with pytest.raises(MassegError, match=r"RLE size \[41, 56\] disagrees with the video's \[40, 56\]") as error:
        convert(source, "vis", tmp_path / "out")
    assert error.value.path == source.ann and "Fix:" in str(error.value)


def test_burst_rle_for_another_image_size(tmp_path: Path) -> None:
    source = fake.write_fake_burst(tmp_path / "src", videos=1)
    data = json.loads(source.ann.read_text())
    data["sequences"][0]["height"] = 48  # the RLEs were made for 40 rows
    source.ann.write_text(json.dumps(data))
    with pytest.raises(MassegError, match="RLE covers 2240 pixels but the video has 48x56") as error:
        convert(source, "burst", tmp_path / "out")
    assert error.value.path == source.ann


def test_frame_listed_in_json_but_missing_on_disk(tmp_path: Path) -> None:
    source = fake.write_fake_ovis(tmp_path / "src", videos=1)
    missing = source.src / "ovis000" / "img_0000003.jpg"
    missing.unlink()
    with pytest.raises(MassegError, match="lists frame 'ovis000/img_0000003.jpg' but it is missing on disk") as error:
        convert(source, "ovis", tmp_path / "out")
    assert error.value.path == missing


def test_ytvos_meta_frame_without_annotation(tmp_path: Path) -> None:
    source = fake.write_fake_ytvos(tmp_path / "src", videos=1)
    (source.src / "Annotations" / "ytclip000" / "00005.png").unlink()
    with pytest.raises(MassegError, match="meta.json lists frame '00005'.*annotation is missing"):
        convert(source, "ytvos", tmp_path / "out")


@pytest.mark.parametrize("format_name,drop", [("vis", "videos"), ("burst", "seq_name"), ("vis", "segmentations")])
def test_json_missing_required_keys(tmp_path: Path, format_name: str, drop: str) -> None:
    source = (fake.write_fake_vis if format_name == "vis" else fake.write_fake_burst)(tmp_path / "src", videos=1)
    data = json.loads(source.ann.read_text())
    if drop == "videos":
        del data["videos"]
    elif drop == "seq_name":
        del data["sequences"][0]["seq_name"]
    else:
        del data["annotations"][1]["segmentations"]
    source.ann.write_text(json.dumps(data))
    with pytest.raises(MassegError, match=f"lacks required key.*{drop}") as error:
        convert(source, format_name, tmp_path / "out")
    assert error.value.path == source.ann


def test_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(MassegError, match="unknown format 'mots'.*davis, ytvos, vis, ovis, burst"):
        convert_source("mots", tmp_path, tmp_path / "out", progress=False)


def test_source_folder_of_another_format(tmp_path: Path) -> None:
    source = fake.write_fake_ytvos(tmp_path / "yt", videos=1)
    with pytest.raises(MassegError, match="not a davis source folder.*looks like ytvos: use --format ytvos") as error:
        convert_source("davis", source.src, tmp_path / "out", progress=False)
    assert error.value.path == source.src
    davis = fake.write_fake_davis(tmp_path / "davis", videos=1)
    with pytest.raises(MassegError, match="not a ytvos source folder.*use --format davis"):
        convert_source("ytvos", davis.src, tmp_path / "out2", progress=False)
    with pytest.raises(MassegError, match="not a vis source folder"):
        convert_source("vis", davis.src, tmp_path / "out3", progress=False)


def test_burst_frames_root_of_another_dataset(tmp_path: Path) -> None:
    source = fake.write_fake_burst(tmp_path / "src", videos=1)
    davis = fake.write_fake_davis(tmp_path / "davis", videos=1)
    with pytest.raises(MassegError, match="not a burst source folder.*use --format davis"):
        convert_source("burst", davis.src, tmp_path / "out", ann=source.ann, progress=False)


def test_cli_prints_the_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    source = fake.write_fake_vis(tmp_path / "src", videos=1)
    data = json.loads(source.ann.read_text())
    del data["annotations"]
    source.ann.write_text(json.dumps(data))
    code = main(["data", "convert", "--format", "vis", "--src", str(source.src), "--ann", str(source.ann),
                 "--out", str(tmp_path / "out")])
    assert code == 1
    message = capsys.readouterr().err
    assert str(source.ann) in message and "lacks required key(s) ['annotations']" in message and "Fix:" in message


def test_vis_2019_folder_without_ann_asks_for_it(tmp_path: Path) -> None:
    source = fake.write_fake_vis(tmp_path / "src", videos=1, layout="2019")
    with pytest.raises(MassegError, match="no instances.json.*pass it with --ann") as error:
        convert_source("vis", source.src, tmp_path / "out", progress=False)
    assert error.value.path == source.src / "instances.json"


def test_burst_frame_listed_in_json_but_missing_on_disk(tmp_path: Path) -> None:
    source = fake.write_fake_burst(tmp_path / "src", videos=1)
    missing = source.src / "train" / "LaSOT" / "seq000" / "frame0003.jpg"
    missing.unlink()
    with pytest.raises(MassegError, match="lists frame 'frame0003.jpg' of sequence 'LaSOT_seq000' but it is missing "
                                          "on disk.*Fix: re-extract BURST's frames") as error:
        convert(source, "burst", tmp_path / "out")
    assert error.value.path == missing


def test_ytvos_meta_frame_without_image(tmp_path: Path) -> None:
    source = fake.write_fake_ytvos(tmp_path / "src", videos=1)
    missing = source.src / "JPEGImages" / "ytclip000" / "00010.jpg"
    missing.unlink()
    with pytest.raises(MassegError, match="frame '00010' of video 'ytclip000' has an annotation but its image is missing.*Fix: re-extract") as error:
        convert(source, "ytvos", tmp_path / "out")
    assert error.value.path == missing


@pytest.mark.parametrize("format_name", ["ytvos", "ovis"])
def test_json_missing_required_keys_ytvos_and_ovis(tmp_path: Path, format_name: str) -> None:
    if format_name == "ytvos":
        source = fake.write_fake_ytvos(tmp_path / "src", videos=1)
        path = source.src / "meta.json"
        data = json.loads(path.read_text())
        del data["videos"]["ytclip000"]["objects"]["1"]["frames"]
        drop = "frames"
    else:
        source = fake.write_fake_ovis(tmp_path / "src", videos=1)
        path = source.ann
        data = json.loads(path.read_text())
        del data["videos"][0]["file_names"]
        drop = "file_names"
    path.write_text(json.dumps(data))
    with pytest.raises(MassegError, match=f"lacks required key.*{drop}.*Fix:") as error:
        convert(source, format_name, tmp_path / "out")
    assert error.value.path == path
