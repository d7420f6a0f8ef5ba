"""The overlay viewer: sources of every kind, side-by-side strips, per-frame scores, GIF/MP4, clear errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from masseg_search.data.layout import DAVIS_PALETTE, open_dataset, read_mask, write_mask
from masseg_search.errors import MassegError
from masseg_search.report.overlays import OVERLAY_ALPHA, frame_scores, overlay, render_overlays


@pytest.fixture(scope="module")
def val_video(tiny_dataset: Path) -> str:
    return open_dataset(tiny_dataset, split="val").video_names[0]


def test_overlay_blends_palette_colour_and_keeps_background() -> None:
    frame = np.full((32, 32, 3), 100, np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    panel = overlay(frame, mask, (32, 32))
    expected = np.round((1 - OVERLAY_ALPHA) * 100 + OVERLAY_ALPHA * DAVIS_PALETTE[1].astype(float)).astype(np.uint8)
    assert (panel[16, 16] == expected).all()  # inside, away from the contour
    assert (panel[0, 0] == 100).all()  # background untouched
    assert not (panel[8, 16] == expected).all()  # the contour is drawn on the object's edge


def test_frame_scores_perfect_shifted_and_empty() -> None:
    gt = np.zeros((3, 40, 40), np.uint8)
    gt[:, 8:24, 8:24] = 1
    j, f = frame_scores(gt, gt.copy(), [1])
    assert j.tolist() == [1.0, 1.0, 1.0] and f.tolist() == [1.0, 1.0, 1.0]
    shifted = np.roll(gt, 4, axis=2)  # overlap 16x12 of union 16x20
    j, f = frame_scores(gt, shifted, [1])
    assert np.allclose(j, 12 / 20) and (f < 1).all() and (f > 0).all()
    both_empty = np.zeros_like(gt)
    assert np.mean(frame_scores(both_empty, both_empty, [1]), axis=0).tolist() == [1.0, 1.0, 1.0]


def test_frame_scores_match_the_evaluator(tmp_path: Path, tiny_dataset: Path, val_video: str, shifted_prediction) -> None:
    from masseg_search.evaluation import evaluate_predictions

    prediction = shifted_prediction(tiny_dataset, tmp_path / "pred", 2, [val_video])
    video = open_dataset(tiny_dataset).video(val_video)
    gt = [read_mask(p) for p in video.annotation_paths()]
    pred = [read_mask(p) for p in sorted((prediction / val_video).glob("*.png"))]
    ids = [int(i) for i in np.unique(gt[0]) if i]
    j, f = frame_scores(gt, pred, ids)
    per_frame = evaluate_predictions(tiny_dataset, prediction, videos=[val_video], progress=False).per_frame
    expected = per_frame.groupby("frame")[["J", "F"]].mean()
    assert np.allclose(j[1:-1], expected["J"].to_numpy()) and np.allclose(f[1:-1], expected["F"].to_numpy())


def test_render_side_by_side_annotations_and_stored(tmp_path: Path, tiny_dataset: Path, val_video: str, shifted_prediction, stored_prediction) -> None:
    shifted = shifted_prediction(tiny_dataset, tmp_path / "shifted", 3, [val_video])
    stored_root = tmp_path / "stored"
    stored_prediction(tiny_dataset, stored_root, val_video, 20.0, -10.0)
    stored_prediction(tiny_dataset, stored_root, val_video, 7.5, -4.0)

    written = render_overlays(tiny_dataset, val_video, [shifted, stored_root], tmp_path / "out", mp4=True)

    video = open_dataset(tiny_dataset).video(val_video)
    frames = [p for p in written if p.parent.name == "frames"]
    assert [p.stem for p in frames] == video.frame_names
    strip = np.asarray(Image.open(frames[0]).convert("RGB"))
    # GT + shifted + the two stored configurations of the root = 4 panels of 256 px (64 px video scaled 4x) + gaps.
    assert strip.shape[1] == 4 * 256 + 3 * 4
    assert strip.shape[0] == 256 + 23  # the label bar on top
    sheet = tmp_path / "out" / val_video / "contact_sheet.png"
    assert sheet in written and Image.open(sheet).size[1] > strip.shape[0] * 5
    gif = Image.open(tmp_path / "out" / val_video / f"{val_video}.gif")
    assert gif.n_frames == len(video.frame_paths)
    capture = cv2.VideoCapture(str(tmp_path / "out" / val_video / f"{val_video}.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(video.frame_paths)

    # The GT panel shows the ground truth: its object pixels carry the palette colour blended in.
    gt0 = read_mask(video.annotation_paths()[0])
    ys, xs = np.nonzero(cv2.erode((gt0 == 1).astype(np.uint8), np.ones((3, 3), np.uint8)))
    y, x = 23 + ys[0] * 4 + 2, xs[0] * 4 + 2
    panel_pixel = strip[y, x].astype(int)
    frame_pixel = cv2.resize(np.asarray(Image.open(video.frame_paths[0]).convert("RGB")), (256, 256))[y - 23, x].astype(int)
    expected = (1 - OVERLAY_ALPHA) * frame_pixel + OVERLAY_ALPHA * DAVIS_PALETTE[1]
    assert np.abs(panel_pixel - expected).max() <= 2


def test_render_without_gt_panel_when_dataset_has_no_annotations(tmp_path: Path, tiny_dataset: Path, val_video: str, shifted_prediction, stored_prediction) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset / "JPEGImages" / val_video, data / "JPEGImages" / val_video)
    prediction = shifted_prediction(tiny_dataset, tmp_path / "pred", 0, [val_video])
    written = render_overlays(data, val_video, [prediction], tmp_path / "out", gif=False, frame_strips=False)
    assert [p.name for p in written] == ["contact_sheet.png"]
    sheet = Image.open(written[0])
    assert sheet.size[0] == 256  # one panel only: no ground truth to show


def test_bad_prediction_folders_are_clear_errors(tmp_path: Path, tiny_dataset: Path, val_video: str, shifted_prediction, stored_prediction) -> None:
    with pytest.raises(MassegError, match="no prediction of video"):
        render_overlays(tiny_dataset, val_video, [tmp_path], tmp_path / "out")
    short = shifted_prediction(tiny_dataset, tmp_path / "short", 0, [val_video])
    sorted((short / val_video).glob("*.png"))[-1].unlink()
    with pytest.raises(MassegError, match="mask PNGs for") as caught:
        render_overlays(tiny_dataset, val_video, [short], tmp_path / "out")
    assert str(short / val_video) in str(caught.value)
    wrong_size = tmp_path / "wrong" / val_video
    for index in range(len(list((tiny_dataset / "JPEGImages" / val_video).iterdir()))):
        write_mask(wrong_size / f"{index:05d}.png", np.zeros((10, 10), np.uint8))
    with pytest.raises(MassegError, match="the video is 64x64"):
        render_overlays(tiny_dataset, val_video, [tmp_path / "wrong"], tmp_path / "out")
    half_written = tmp_path / "stored" / "s20_b-10" / val_video
    half_written.mkdir(parents=True)
    with pytest.raises(MassegError, match="neither mask PNGs nor a complete stored prediction"):
        render_overlays(tiny_dataset, val_video, [tmp_path / "stored" / "s20_b-10"], tmp_path / "out")
    with pytest.raises(MassegError, match="labels for"):
        render_overlays(tiny_dataset, val_video, [short], tmp_path / "out", labels=["a", "b"])


def test_cli_view_writes_files(tmp_path: Path, tiny_dataset: Path, val_video: str, shifted_prediction, stored_prediction) -> None:
    prediction = shifted_prediction(tiny_dataset, tmp_path / "pred", 2, [val_video])
    done = subprocess.run([sys.executable, "-m", "masseg_search", "view", "--data", str(tiny_dataset), "--video", val_video,
                           "--predictions", str(prediction), "--labels", "shifted", "--out", str(tmp_path / "out"), "--mp4"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / val_video / f"{val_video}.mp4").is_file()
    assert "frame strips in" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "masseg_search", "view", "--data", str(tiny_dataset), "--video", val_video,
                              "--predictions", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1
    assert "prediction folder not found" in missing.stderr and "Traceback" not in missing.stderr


def test_long_videos_gif_is_sampled_and_contact_sheet_rows_capped(tmp_path: Path, tiny_dataset: Path, val_video: str,
                                                                   shifted_prediction, monkeypatch) -> None:
    import masseg_search.report.overlays as view

    monkeypatch.setattr(view, "MAX_GIF_FRAMES", 3)
    prediction = shifted_prediction(tiny_dataset, tmp_path / "pred", 1, [val_video])
    written = render_overlays(tiny_dataset, val_video, [prediction], tmp_path / "out", frame_strips=False, contact_rows=2)
    assert Image.open(tmp_path / "out" / val_video / f"{val_video}.gif").n_frames == 3
    strip_height = 256 + 23
    assert Image.open(written[0]).size[1] == 2 * strip_height + 4
