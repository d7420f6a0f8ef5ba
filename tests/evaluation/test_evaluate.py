"""Dataset-level evaluation: tables and CSVs, workers, scene types, every bad input, the CLI, no torch."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from masseg_search.cli import main
from masseg_search.data.layout import list_files, open_dataset, read_mask, write_mask
from masseg_search.errors import MassegError
from masseg_search.evaluation import evaluate_predictions, jf_by_object, score_video
from masseg_search.evaluation.protocols.davis import GLOBAL_COLUMNS as DAVIS_GLOBAL_COLUMNS
from masseg_search.evaluation.protocols.davis import OBJECT_COLUMNS as DAVIS_OBJECT_COLUMNS
from masseg_search.evaluation.protocols.mosev2 import GLOBAL_COLUMNS as MOSEV2_GLOBAL_COLUMNS

FRAMES, HEIGHT, WIDTH = 6, 24, 32


def video_masks(seed: int) -> np.ndarray:
    """Two moving rectangles (ids 1, 2) over FRAMES frames."""
    masks = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    for t in range(FRAMES):
        masks[t, 2 + t : 10 + t, 3 + seed : 12 + seed] = 1
        masks[t, 14:20, 15 + t : 25 + t] = 2
    return masks


def write_video(root: Path, video: str, masks: np.ndarray) -> None:
    for t, mask in enumerate(masks):
        write_mask(root / video / f"{t:05d}.png", mask)


@pytest.fixture()
def gt_and_pred(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """A MOSE-layout ground truth (Annotations only) with two videos and a perturbed prediction tree."""
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    arrays = {}
    for seed, video in enumerate(["vid_a", "vid_b"]):
        gt = video_masks(seed)
        pred = np.roll(gt, 1 + seed, axis=2)
        write_video(gt_root / "Annotations", video, gt)
        write_video(pred_root, video, pred)
        arrays[video] = (gt, pred)
    return gt_root, pred_root, arrays


def test_tables_match_in_memory_scores_and_csvs(gt_and_pred, tmp_path: Path) -> None:
    gt_root, pred_root, arrays = gt_and_pred
    result = evaluate_predictions(gt_root, pred_root, progress=False)
    assert list(result.global_table.columns) == DAVIS_GLOBAL_COLUMNS
    assert list(result.per_object.columns) == ["Sequence", *DAVIS_OBJECT_COLUMNS, "video", "object_id", "in_first_frame"]
    assert result.per_object["Sequence"].tolist() == ["vid_a_1", "vid_a_2", "vid_b_1", "vid_b_2"]
    in_memory = score_video(*arrays["vid_b"], video="vid_b")
    frames = result.per_frame[result.per_frame["video"] == "vid_b"]
    assert frames["J"].tolist() == in_memory.j.ravel().tolist()
    assert frames["F"].tolist() == in_memory.f.ravel().tolist()
    assert frames["frame"].tolist()[:4] == ["00001", "00002", "00003", "00004"]
    assert in_memory.object_j_and_f_means() == {1: jf_by_object(result)[("vid_b", 1)], 2: jf_by_object(result)[("vid_b", 2)]}
    j_mean = np.mean(result.per_object["J-Mean"].to_numpy())
    f_mean = np.mean(result.per_object["F-Mean"].to_numpy())
    assert result.global_table["J&F-Mean"][0] == (j_mean + f_mean) / 2
    assert jf_by_object(result)[("vid_a", 2)] == (result.per_object["J-Mean"][1] + result.per_object["F-Mean"][1]) / 2

    out = result.write(tmp_path / "out")
    global_csv = pd.read_csv(out / "global.csv")
    per_object_csv = pd.read_csv(out / "per_object.csv")
    per_frame_csv = pd.read_csv(out / "per_frame.csv", dtype={"frame": str})
    assert list(global_csv.columns) == DAVIS_GLOBAL_COLUMNS
    assert list(per_object_csv.columns) == ["Sequence", *DAVIS_OBJECT_COLUMNS]
    assert list(per_frame_csv.columns) == ["video", "object_id", "frame", "J", "F"]
    assert global_csv.equals(result.global_table)  # full float precision survives the round trip
    assert per_object_csv.equals(result.per_object[["Sequence", *DAVIS_OBJECT_COLUMNS]])
    assert not (out / "per_scene_type.csv").exists()


def test_perfect_prediction_scores_one_on_synthetic_split(tiny_dataset: Path) -> None:
    result = evaluate_predictions(tiny_dataset, tiny_dataset / "Annotations", split_list=tiny_dataset / "val.txt", progress=False)
    assert len(result.per_object) > 0
    assert set(result.per_object["video"]) == set(open_dataset(tiny_dataset, split="val").video_names)
    assert result.global_table.iloc[0].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_workers_give_identical_tables(gt_and_pred) -> None:
    gt_root, pred_root, _ = gt_and_pred
    one = evaluate_predictions(gt_root, pred_root, workers=1, progress=False)
    two = evaluate_predictions(gt_root, pred_root, workers=2, progress=False)
    assert one.per_frame.equals(two.per_frame) and one.per_object.equals(two.per_object)


def test_plain_method_gives_identical_tables(gt_and_pred) -> None:
    gt_root, pred_root, _ = gt_and_pred
    fast = evaluate_predictions(gt_root, pred_root, progress=False)
    plain = evaluate_predictions(gt_root, pred_root, method="plain", progress=False)
    assert fast.per_frame.equals(plain.per_frame) and fast.global_table.equals(plain.global_table)


def test_compiled_and_python_kernels_give_identical_tables(gt_and_pred, monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluator's tables do not depend on which kernel the fast path runs, with one process or two."""
    from masseg_search.evaluation.kernels import compiled

    gt_root, pred_root, _ = gt_and_pred
    default = evaluate_predictions(gt_root, pred_root, progress=False)
    monkeypatch.setattr(compiled, "kernel", None)
    for workers in (1, 2):
        python_kernel = evaluate_predictions(gt_root, pred_root, workers=workers, progress=False)
        assert default.per_frame.equals(python_kernel.per_frame) and default.per_object.equals(python_kernel.per_object)
        assert default.global_table.equals(python_kernel.global_table)


def test_mosev2_protocol_tables(gt_and_pred, tmp_path: Path) -> None:
    gt_root, pred_root, _ = gt_and_pred
    result = evaluate_predictions(gt_root, pred_root, protocol="mosev2", progress=False)
    assert list(result.global_table.columns) == MOSEV2_GLOBAL_COLUMNS
    assert set(jf_by_object(result).values()) == set(result.per_object["J&F_dot-Mean"])
    out = result.write(tmp_path / "mose")
    assert "F_dot" in pd.read_csv(out / "per_frame.csv").columns


def test_scene_type_table(gt_and_pred, tmp_path: Path) -> None:
    gt_root, pred_root, _ = gt_and_pred
    types_csv = tmp_path / "types.csv"
    pd.DataFrame(
        {"video": ["vid_a", "vid_a", "vid_b", "vid_b"], "object_id": [1, 2, 1, 2], "scene_type": ["small", "crowded", "small", "small"], "area": [0.1] * 4}
    ).to_csv(types_csv, index=False)
    result = evaluate_predictions(gt_root, pred_root, scene_types=types_csv, progress=False)
    table = result.per_scene_type.set_index("scene_type")
    assert table.loc["small", "objects"] == 3 and table.loc["crowded", "objects"] == 1
    small = result.per_object[result.per_object["scene_type"] == "small"]
    assert table.loc["small", "J-Mean"] == np.mean(small["J-Mean"].to_numpy())
    assert (result.write(tmp_path / "out") / "per_scene_type.csv").is_file()

    pd.DataFrame({"video": ["vid_a"], "object_id": [1], "scene_type": ["small"]}).to_csv(types_csv, index=False)
    with pytest.raises(MassegError, match="3 scored object\\(s\\) have no scene type") as error:
        evaluate_predictions(gt_root, pred_root, scene_types=types_csv, progress=False)
    assert str(types_csv) in str(error.value)
    pd.DataFrame({"video": ["vid_a"], "type": ["small"]}).to_csv(types_csv, index=False)
    with pytest.raises(MassegError, match="lacks column"):
        evaluate_predictions(gt_root, pred_root, scene_types=types_csv, progress=False)


# ------------------------------------------------------------------------------------------------- bad input
def test_missing_prediction_video(gt_and_pred) -> None:
    gt_root, pred_root, arrays = gt_and_pred
    for path in list_files(pred_root / "vid_b", (".png",)):
        path.unlink()
    (pred_root / "vid_b").rmdir()
    with pytest.raises(MassegError, match="no prediction for video 'vid_b'") as error:
        evaluate_predictions(gt_root, pred_root, progress=False)
    assert str(pred_root / "vid_b") in str(error.value) and "--allow-missing" in str(error.value)
    with pytest.raises(MassegError, match="no prediction for video 'vid_b'"):  # raised inside a worker process
        evaluate_predictions(gt_root, pred_root, workers=2, progress=False)
    result = evaluate_predictions(gt_root, pred_root, allow_missing=True, progress=False)
    missing = result.per_object[result.per_object["video"] == "vid_b"]
    assert missing["J-Mean"].tolist() == [0.0, 0.0] and missing["F-Mean"].tolist() == [0.0, 0.0]


def test_missing_prediction_frame(gt_and_pred) -> None:
    gt_root, pred_root, arrays = gt_and_pred
    (pred_root / "vid_a" / "00003.png").unlink()
    (pred_root / "vid_a" / "00005.png").unlink()  # the last frame is not scored: not needed
    with pytest.raises(MassegError, match="prediction frame missing") as error:
        evaluate_predictions(gt_root, pred_root, progress=False)
    assert str(pred_root / "vid_a" / "00003.png") in str(error.value)
    result = evaluate_predictions(gt_root, pred_root, allow_missing=True, progress=False)
    frame = result.per_frame[(result.per_frame["video"] == "vid_a") & (result.per_frame["frame"] == "00003")]
    assert frame["J"].tolist() == [0.0, 0.0]


def test_unknown_predicted_id(gt_and_pred) -> None:
    gt_root, pred_root, arrays = gt_and_pred
    mask = read_mask(pred_root / "vid_a" / "00002.png")
    mask[0, 0] = 7
    write_mask(pred_root / "vid_a" / "00002.png", mask)
    with pytest.raises(MassegError, match=r"id\(s\) \[7\]") as error:
        evaluate_predictions(gt_root, pred_root, progress=False)
    assert str(pred_root / "vid_a" / "00002.png") in str(error.value)


def test_size_mismatch(gt_and_pred) -> None:
    gt_root, pred_root, _ = gt_and_pred
    write_mask(pred_root / "vid_b" / "00001.png", np.zeros((HEIGHT, WIDTH + 2), np.uint8))
    with pytest.raises(MassegError, match="predicted mask is 34x24, the ground truth 32x24") as error:
        evaluate_predictions(gt_root, pred_root, progress=False)
    assert str(pred_root / "vid_b" / "00001.png") in str(error.value)


def test_non_indexed_png(gt_and_pred) -> None:
    gt_root, pred_root, _ = gt_and_pred
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(pred_root / "vid_a" / "00004.png")
    with pytest.raises(MassegError, match="not an indexed") as error:
        evaluate_predictions(gt_root, pred_root, progress=False)
    assert str(pred_root / "vid_a" / "00004.png") in str(error.value)


def test_too_few_ground_truth_frames_and_unknown_videos(gt_and_pred, tmp_path: Path) -> None:
    gt_root, pred_root, arrays = gt_and_pred
    write_video(gt_root / "Annotations", "short", arrays["vid_a"][0][:2])
    with pytest.raises(MassegError, match="needs at least 3"):
        evaluate_predictions(gt_root, pred_root, videos=["short"], allow_missing=True, progress=False)
    with pytest.raises(MassegError, match="not in the ground truth"):
        evaluate_predictions(gt_root, pred_root, videos=["nope"], progress=False)
    listed = tmp_path / "list.txt"
    listed.write_text("vid_a\nghost\n")
    with pytest.raises(MassegError, match="no ground-truth annotations for video 'ghost'"):
        evaluate_predictions(gt_root, pred_root, split_list=listed, progress=False)


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_end_to_end(gt_and_pred, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_root, pred_root, _ = gt_and_pred
    out = tmp_path / "eval"
    code = main(["evaluate", "--gt", str(gt_root / "Annotations"), "--pred", str(pred_root), "--out", str(out), "--workers", "1", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and str(out) in printed
    assert {p.name for p in out.iterdir()} == {"global.csv", "per_object.csv", "per_frame.csv", "evaluation.json"}
    code = main(["evaluate", "--gt", str(gt_root), "--pred", str(tmp_path / "nowhere"), "--out", str(out), "--no-progress"])
    assert code == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and "nowhere" in message and "Traceback" not in message


def test_evaluate_does_not_import_torch_sam2_or_ray(gt_and_pred, tmp_path: Path) -> None:
    gt_root, pred_root, _ = gt_and_pred
    script = (
        "import sys\n"
        "from masseg_search.cli import main\n"
        f"assert main(['evaluate', '--gt', {str(gt_root)!r}, '--pred', {str(pred_root)!r}, '--out', {str(tmp_path / 'o')!r},"
        " '--workers', '1', '--no-progress']) == 0\n"
        "heavy = sorted({'torch', 'sam2', 'ray', 'skimage'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr


def test_write_records_what_was_scored(gt_and_pred, tmp_path: Path) -> None:
    """evaluation.json names the ground truth and prediction folders (the report draws overlays from them)."""
    import json

    gt_root, pred_root, _ = gt_and_pred
    out = evaluate_predictions(gt_root, pred_root, progress=False).write(tmp_path / "out")
    sources = json.loads((out / "evaluation.json").read_text())
    assert sources == {"gt_root": str(gt_root.resolve()), "pred_root": str(pred_root.resolve()), "split_list": None,
                       "protocol": "davis", "objects": "official", "meta": None}
