"""Object ids with gaps (first frame 1, 3, 5, ...): the ensemble, `--select-on` and the submission check work on them.

The official DAVIS object set of such a video is 1..max, so the evaluator scores the gaps too; the ensemble fuses
and the submission check accepts only the ids the first frame gives (the objects a method is given).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from ensemble_store import clean_logits, read_ground_truth, write_store

from masseg_search.data import layout
from masseg_search.ensemble import plan_from_dict, run_ensemble
from masseg_search.ensemble.select import select_fusion
from masseg_search.ensemble.submission import check_submission_report
from masseg_search.evaluation import evaluate_predictions, first_frame_object_ids


@pytest.fixture(scope="module")
def gapped(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three synthetic videos of two or more objects, every object id i written as 2i - 1."""
    root = tmp_path_factory.mktemp("gapped") / "data"
    dataset = layout.open_dataset(tiny_dataset)
    several = [name for name in dataset.video_names if len(first_frame_object_ids(read_ground_truth(tiny_dataset, name)[1][0])) > 1]
    for video in [dataset.video(name) for name in several[:3]]:
        shutil.copytree(video.image_dir, root / layout.IMAGE_DIR / video.name)
        for path in video.annotation_paths():
            mask = layout.read_mask(path)
            layout.write_mask(root / layout.ANNOTATION_DIR / video.name / path.name,
                              np.where((mask > 0) & (mask != layout.VOID_ID), 2 * mask.astype(np.int64) - 1, mask).astype(np.uint8))
    return root


def _noisy(gt_object: np.ndarray, object_id: int, video_index: int) -> np.ndarray:
    rng = np.random.default_rng(100 * video_index + object_id)
    return clean_logits(gt_object) + rng.normal(0, 3.0, (gt_object.shape[0], 16, 16))


def test_ensemble_select_and_submission_check_with_gapped_ids(gapped: Path, tmp_path: Path) -> None:
    videos = layout.open_dataset(gapped).video_names
    first_ids = {v: first_frame_object_ids(read_ground_truth(gapped, v)[1][0]) for v in videos}
    assert all(len(ids) > 1 and ids == list(range(1, 2 * len(ids), 2)) for ids in first_ids.values())
    stored = write_store(tmp_path / "pred", gapped, videos, {"s20_b-10": lambda g, i, v: clean_logits(g), "s7.5_b-4": _noisy})

    plan = select_fusion(stored, gapped, tmp_path / "plan.yaml", top_k=2, progress=False)
    assert plan.selection["single_configs"]["s20_b-10"] > plan.selection["single_configs"]["s7.5_b-4"]

    result = run_ensemble(stored, plan_from_dict({"method": "single", "configs": ["s20_b-10"]}), gapped,
                          tmp_path / "sub", progress=False)
    assert result.problems == [] and result.zip_path is not None
    for video in videos:
        names, gt = read_ground_truth(gapped, video)
        written = np.stack([layout.read_mask(tmp_path / "sub" / video / f"{name}.png") for name in names])
        assert np.array_equal(written[0], gt[0])
        assert set(np.unique(written).tolist()) <= {0, *first_ids[video]}
    report = check_submission_report(result.zip_path, gapped / layout.IMAGE_DIR)
    assert report.problems == [] and report.annotations_root == gapped / layout.ANNOTATION_DIR

    # evaluated, the gaps are official objects that never appear: J = F = 1 each; present keeps the given ones
    official = evaluate_predictions(gapped, tmp_path / "sub", progress=False, objects="official")
    present = evaluate_predictions(gapped, tmp_path / "sub", progress=False, objects="present")
    assert len(official.per_object) == sum(2 * len(ids) - 1 for ids in first_ids.values())
    gaps = official.per_object[~official.per_object["in_first_frame"]]
    assert len(gaps) == sum(len(ids) - 1 for ids in first_ids.values()) and (gaps[["J-Mean", "F-Mean"]] == 1).all().all()
    assert len(present.per_object) == sum(len(ids) for ids in first_ids.values())
    shared = official.per_object[official.per_object["in_first_frame"]].reset_index(drop=True)
    assert shared[["J-Mean", "F-Mean"]].equals(present.per_object[["J-Mean", "F-Mean"]])

    # a gap id in a submission is not an id of the first frame: the check names it
    png = sorted((tmp_path / "sub" / videos[0]).glob("*.png"))[3]
    mask = layout.read_mask(png)
    mask[:2, :2] = 2
    layout.write_mask(png, mask)
    problems = check_submission_report(tmp_path / "sub", gapped / layout.IMAGE_DIR).problems
    assert [(p.path, "[2]" in p.message) for p in problems] == [(f"{videos[0]}/{png.name}", True)]
