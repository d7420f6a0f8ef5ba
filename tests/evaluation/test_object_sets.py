"""Which objects a video scores: the official DAVIS set (1..max first-frame id), the first frame's ids, a meta.json.

Rules checked against davisvideochallenge/davis2017-evaluation (``davis2017/davis.py``: the object list is
``1..max`` of the first mask with 255 set to 0; ``evaluation.py``: one row per object ``<seq>_<i>``) and
henghuiding/MOSE-api ``MOSEv2/sam2_rcms/tools/score.py`` (objects from ``meta.json``'s ``videos.<v>.objects``; a
missing prediction video scores J = F = 0 and no disappearance / reappearance). Every expected value below is
worked out by hand from the masks: predictions are either exact (J = F = 1), empty where the ground truth is not
(J = F = 0, MOSEv2's J = 1 / (area + 1)) or empty where it is empty too (J = F = 1).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from masseg_search.cli import main
from masseg_search.data.layout import write_mask
from masseg_search.errors import MassegError
from masseg_search.evaluation import (
    OBJECT_SETS,
    PROTOCOLS,
    evaluate_predictions,
    first_frame_object_ids,
    object_ids_of,
    score_video,
)
from masseg_search.evaluation.dataset import NOT_IN_FIRST_FRAME, read_meta_objects, tables_from_scores

FRAMES, HEIGHT, WIDTH = 6, 120, 160  # frames 1..4 are scored; big enough for MOSEv2 radii >= 1 px


def late_object_video() -> np.ndarray:
    """Frame 0 holds ids 1 and 3 (and void); id 2 appears at frames 3-4, id 4 (above the first frame's max) at 2-4."""
    gt = np.zeros((FRAMES, HEIGHT, WIDTH), np.uint8)
    gt[:, 1:5, 1:6] = 1
    gt[:, 9:14, 12:18] = 3
    gt[0, 0, WIDTH - 1] = 255  # void in the first frame: never an object, never the max
    gt[3:5, 8:11, 2:5] = 2  # 9 px where it is visible
    gt[2:5, 1:3, 15:17] = 4  # 4 px
    return gt


def exact_for(gt: np.ndarray, ids: list[int]) -> np.ndarray:
    """A prediction equal to the ground truth for ``ids``, empty elsewhere."""
    return np.where(np.isin(gt, ids), gt, 0).astype(np.uint8)


def write_video(root: Path, video: str, masks: np.ndarray) -> None:
    for t, mask in enumerate(masks):
        write_mask(root / video / f"{t:05d}.png", mask)


def test_object_sets_of_a_first_frame() -> None:
    first = np.zeros((4, 5), np.uint8)
    first[0, :2], first[1, 3], first[2, 0], first[3, 4] = 1, 4, 255, 7
    assert OBJECT_SETS == ("official", "present")
    assert object_ids_of(first) == [1, 2, 3, 4, 5, 6, 7]  # void is neither an object nor the max
    assert object_ids_of(first, "present") == first_frame_object_ids(first) == [1, 4, 7]
    contiguous = np.array([[0, 2], [1, 3]], np.uint8)
    assert object_ids_of(contiguous, "official") == object_ids_of(contiguous, "present") == [1, 2, 3]
    assert object_ids_of(np.array([[0, 255]], np.uint8)) == []
    with pytest.raises(MassegError, match="unknown object set 'all'"):
        object_ids_of(first, "all")


def test_official_set_scores_an_object_that_appears_after_the_first_frame() -> None:
    gt = late_object_video()
    pred = exact_for(gt, [1, 3])  # a semi-supervised method given frame 0 only: id 2 never predicted
    official = score_video(gt, pred)
    assert official.object_ids == [1, 2, 3] and official.first_frame_ids == [1, 3]
    assert np.array_equal(official.j, [[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]])  # id 2: empty vs empty, then missed
    assert np.array_equal(official.f, official.j)
    table = tables_from_scores([official]).per_object.set_index("Sequence")
    assert table.loc["video_2", ["J-Mean", "J-Recall", "F-Mean", "F-Recall"]].tolist() == [0.5, 0.5, 0.5, 0.5]
    assert table["in_first_frame"].tolist() == [True, False, True]
    assert tables_from_scores([official]).global_table["J&F-Mean"].item() == pytest.approx(2.5 / 3)

    present = score_video(gt, pred, objects="present")
    assert present.object_ids == [1, 3] and np.all(present.j == 1) and np.all(present.f == 1)
    assert tables_from_scores([present]).global_table["J&F-Mean"].item() == 1.0
    # the same measurements for the objects both sets share
    assert np.array_equal(official.j[[0, 2]], present.j) and np.array_equal(official.f[[0, 2]], present.f)
    plain = score_video(gt, pred, method="plain")
    assert np.array_equal(plain.j, official.j) and np.array_equal(plain.f, official.f)


def test_predicting_an_id_missing_from_the_first_frame() -> None:
    """Official: id 2 is an object, so predicting it is scored (here exactly); present: it is an unknown id."""
    gt = late_object_video()
    pred = exact_for(gt, [1, 2, 3])
    assert np.all(score_video(gt, pred).j == 1)
    with pytest.raises(MassegError, match=r"id\(s\) \[2\] are not in the ground truth's objects \[1, 3\]"):
        score_video(gt, pred, objects="present")
    with pytest.raises(MassegError, match=r"id\(s\) \[4\] are not in the ground truth's objects \[1, 2, 3\]"):
        score_video(gt, exact_for(gt, [1, 3, 4]))  # above the first frame's max: background for the official code


def test_an_id_absent_from_every_ground_truth_frame_is_an_empty_object() -> None:
    gt = late_object_video()
    gt[gt == 2] = 0  # now id 2 never appears: an empty-GT object under the official set
    pred = exact_for(gt, [1, 3])
    scores = score_video(gt, pred)
    assert scores.object_ids == [1, 2, 3] and np.all(scores.j == 1) and np.all(scores.f == 1)
    pred[2, 0:2, 0:3] = 2  # a false positive on frame 2: J = 0 (empty G) and F = 0 (precision 0)
    scores = score_video(gt, pred)
    assert scores.j[1].tolist() == [1, 0, 1, 1] and scores.f[1].tolist() == [1, 0, 1, 1]
    assert score_video(gt, pred, method="plain").j[1].tolist() == [1, 0, 1, 1]


def test_contiguous_ids_score_bit_identically_under_both_sets() -> None:
    gt = late_object_video()
    gt[gt == 3] = 2  # frame 0 holds 1, 2: both sets are [1, 2]
    gt[gt == 4] = 0
    pred = np.roll(gt, (1, 2), axis=(1, 2))
    official = score_video(gt, pred)
    present = score_video(gt, pred, objects="present")
    tracked = score_video(gt, pred, [1, 2])
    assert official.object_ids == present.object_ids == [1, 2]
    for other in (present, tracked):
        assert np.array_equal(official.j, other.j) and np.array_equal(official.f, other.f)
    pd.testing.assert_frame_equal(tables_from_scores([official]).per_object, tables_from_scores([present]).per_object)


# --------------------------------------------------------------------------------------------- from files
@pytest.fixture()
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """Ground truth: ``late`` (frame 0: ids 1, 3; id 2 and 4 later) and ``plain`` (ids 1, 2); exact predictions of
    the first frame's objects."""
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    late = late_object_video()
    plain = late.copy()
    plain[(plain == 3) | (plain == 2)] = 2
    plain[plain == 4] = 0
    for name, gt in (("late", late), ("plain", plain)):
        write_video(gt_root / "Annotations", name, gt)
        write_video(pred_root, name, exact_for(gt, first_frame_object_ids(gt[0])))
    return gt_root, pred_root


def test_evaluate_official_and_present_from_files(roots: tuple[Path, Path]) -> None:
    gt_root, pred_root = roots
    official = evaluate_predictions(gt_root, pred_root, progress=False)
    assert official.per_object["Sequence"].tolist() == ["late_1", "late_2", "late_3", "plain_1", "plain_2"]
    assert official.global_table["J-Mean"].item() == pytest.approx(4.5 / 5)
    present = evaluate_predictions(gt_root, pred_root, objects="present", progress=False)
    assert present.per_object["Sequence"].tolist() == ["late_1", "late_3", "plain_1", "plain_2"]
    assert present.global_table["J&F-Mean"].item() == 1.0
    with pytest.raises(MassegError, match="unknown object set 'every'"):
        evaluate_predictions(gt_root, pred_root, objects="every", progress=False)


def test_scene_types_give_objects_absent_from_the_first_frame_their_own_row(roots: tuple[Path, Path]) -> None:
    gt_root, pred_root = roots
    types = pd.DataFrame({"video": ["late", "late", "plain", "plain"], "object_id": [1, 3, 1, 2],
                          "scene_type": ["small", "large", "small", "large"]})
    result = evaluate_predictions(gt_root, pred_root, scene_types=types, progress=False)
    rows = result.per_scene_type.set_index("scene_type")
    assert rows["objects"].to_dict() == {"large": 2, NOT_IN_FIRST_FRAME: 1, "small": 2}
    assert rows.loc[NOT_IN_FIRST_FRAME, "J-Mean"] == 0.5
    assert NOT_IN_FIRST_FRAME not in evaluate_predictions(gt_root, pred_root, scene_types=types, objects="present",
                                                          progress=False).per_scene_type["scene_type"].tolist()
    with pytest.raises(MassegError, match="1 scored object"):  # a first-frame object without a type is still an error
        evaluate_predictions(gt_root, pred_root, scene_types=types.iloc[1:], progress=False)


def write_meta(path: Path, videos: dict) -> Path:
    path.write_text(json.dumps({"videos": videos}))
    return path


def test_mosev2_takes_the_objects_from_meta_json(roots: tuple[Path, Path], tmp_path: Path) -> None:
    """meta lists [1, 3, 4] for ``late``: not the official [1, 2, 3], nor the present [1, 3]."""
    gt_root, pred_root = roots
    meta = write_meta(tmp_path / "meta.json", {"late": {"length": FRAMES, "objects": [1, 3, 4]},
                                               "plain": {"length": FRAMES, "objects": ["1", "2"]},
                                               "unscored": {"objects": [1]}})
    result = evaluate_predictions(gt_root, pred_root, protocol="mosev2", meta=meta, progress=False)
    table = result.per_object.set_index("Sequence")
    assert table.index.tolist() == ["late_1", "late_3", "late_4", "plain_1", "plain_2"]
    # id 4: empty vs empty on frames 1 (both empty), then 4 px missed on frames 2-4: J = 1 / (4 + 1)
    assert table.loc["late_4", "J-Mean"] == pytest.approx((1 + 3 * 0.2) / 4)
    assert table.loc["late_4", "F_dot-Mean"] == table.loc["late_4", "F-Mean"] == 0.25
    assert np.isnan(table.loc["late_4", "Disappear-J"]) and table.loc["late_4", "Reappear-J"] == pytest.approx(0.2)
    assert table.loc["late_4", "Reappear-F_dot"] == 0.0
    assert (table.drop("late_4")[["J-Mean", "F-Mean", "F_dot-Mean"]] == 1).all().all()
    assert table["in_first_frame"].tolist() == [True, True, False, True, True]
    assert result.global_table["J-Mean"].item() == pytest.approx((4 + 0.4) / 5)
    assert result.sources["objects"] == "meta" and result.sources["meta"] == str(meta.resolve())
    # the same file chooses the objects under the DAVIS rules too
    davis = evaluate_predictions(gt_root, pred_root, meta=meta, progress=False)
    assert davis.per_object["Sequence"].tolist() == table.index.tolist()
    assert davis.per_object.set_index("Sequence").loc["late_4", "J-Mean"] == 0.25


def test_mosev2_scores_a_missing_prediction_video_zero(roots: tuple[Path, Path], tmp_path: Path) -> None:
    gt_root, pred_root = roots
    for png in (pred_root / "plain").iterdir():
        png.unlink()
    (pred_root / "plain").rmdir()
    with pytest.raises(MassegError, match="no prediction for video 'plain'"):
        evaluate_predictions(gt_root, pred_root, protocol="mosev2", progress=False)
    result = evaluate_predictions(gt_root, pred_root, protocol="mosev2", allow_missing=True, objects="present", progress=False)
    missing = result.per_object[result.per_object["video"] == "plain"]
    assert (missing[["J-Mean", "F-Mean", "F_dot-Mean"]] == 0).all().all()
    assert missing[["Disappear-J", "Disappear-F_dot", "Reappear-J", "Reappear-F_dot"]].isna().all().all()
    assert [s.prediction_missing for s in result.video_scores] == [False, True]
    assert result.video_scores[1].gt_empty is not None and not result.video_scores[1].gt_empty.any()
    # DAVIS keeps the project's rule: the missing video is scored against empty masks (J = F = 0 where visible)
    davis = evaluate_predictions(gt_root, pred_root, allow_missing=True, objects="present", progress=False)
    assert (davis.per_object[davis.per_object["video"] == "plain"]["J-Mean"] == 0).all()


def test_meta_file_forms_and_errors(roots: tuple[Path, Path], tmp_path: Path) -> None:
    gt_root, pred_root = roots
    # YouTube-VOS writes "objects" as a dict keyed by the id as a string
    ytvos = write_meta(tmp_path / "ytvos.json", {"late": {"objects": {"3": {"category": "cat", "frames": ["00000"]},
                                                                       "1": {"category": "dog", "frames": ["00000"]}}}})
    assert read_meta_objects(ytvos) == {"late": [1, 3]}
    missing = tmp_path / "nope.json"
    with pytest.raises(MassegError, match="meta file not found") as error:
        read_meta_objects(missing)
    assert str(missing) in str(error.value)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(MassegError, match="not JSON"):
        read_meta_objects(broken)
    broken.write_text(json.dumps({"late": {"objects": [1]}}))
    with pytest.raises(MassegError, match='no "videos" object'):
        read_meta_objects(broken)
    for objects, message in ((None, 'no "objects" list'), (["one"], "not an integer"), ([0, 1], "outside 1..254")):
        write_meta(broken, {"late": {"objects": objects}})
        with pytest.raises(MassegError, match=message):
            read_meta_objects(broken)
    with pytest.raises(MassegError, match=r"1 video\(s\) to score are not in the meta file \(e.g. \['plain'\]\)") as error:
        evaluate_predictions(gt_root, pred_root, meta=ytvos, progress=False)
    assert str(ytvos) in str(error.value)
    with pytest.raises(MassegError, match="choose the objects"):
        evaluate_predictions(gt_root, pred_root, meta=ytvos, objects="present", progress=False)
    write_meta(broken, {"late": {"objects": [1]}, "plain": {"objects": [1, 2]}})
    with pytest.raises(MassegError, match=r"id\(s\) \[3\] are not in the ground truth's objects \[1\]"):
        evaluate_predictions(gt_root, pred_root, meta=broken, progress=False)


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_objects_and_meta(roots: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt_root, pred_root = roots
    base = ["evaluate", "--gt", str(gt_root), "--pred", str(pred_root), "--workers", "1", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "official")]) == 0
    assert pd.read_csv(tmp_path / "official" / "per_object.csv")["Sequence"].tolist() == ["late_1", "late_2", "late_3", "plain_1", "plain_2"]
    assert main([*base, "--out", str(tmp_path / "present"), "--objects", "present"]) == 0
    assert pd.read_csv(tmp_path / "present" / "per_object.csv")["Sequence"].tolist() == ["late_1", "late_3", "plain_1", "plain_2"]
    meta = write_meta(tmp_path / "meta.json", {"late": {"objects": [1, 3, 4]}, "plain": {"objects": [1, 2]}})
    assert main([*base, "--out", str(tmp_path / "meta"), "--protocol", "mosev2", "--meta", str(meta)]) == 0
    assert pd.read_csv(tmp_path / "meta" / "per_object.csv")["Sequence"].tolist() == ["late_1", "late_3", "late_4", "plain_1", "plain_2"]
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "x"), "--meta", str(tmp_path / "absent.json")]) == 1
    assert f"{tmp_path / 'absent.json'}: meta file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--out", str(tmp_path / "x"), "--objects", "present", "--meta", str(meta)])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"scoring rules: {', '.join(PROTOCOLS)} (default: davis)" in text
    assert f"its objects: {', '.join(OBJECT_SETS)}" in text


def test_registering_the_command_does_not_import_the_evaluator() -> None:
    """The --protocol / --objects choices come from the evaluation package, read only when parsing needs them."""
    code = ("import sys; from masseg_search.cli import build_parser; parser = build_parser(); "
            "assert 'masseg_search.evaluation' not in sys.modules; "
            "args = parser.parse_args(['evaluate', '--gt', 'g', '--pred', 'p', '--out', 'o', '--protocol', 'mosev2']); "
            "assert args.protocol == 'mosev2' and args.objects == 'official'")
    subprocess.run([sys.executable, "-c", code], check=True)
