"""The MOSEv2 protocol: smoothed J, the size-adaptive boundary radius, disappearance and reappearance segments."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings

from masseg_search.evaluation import score_video
from masseg_search.evaluation.protocols.mosev2 import MoseV2FrameScorer, _segment_means, global_row, object_rows

from tests.evaluation.test_davis_metric import frame_pairs


def one_frame(gt: np.ndarray, pred: np.ndarray, object_ids: list[int], method: str = "fast") -> list[tuple]:
    scorer = MoseV2FrameScorer(*gt.shape, object_ids, method)
    scorer.add(gt, pred)
    return scorer.rows[0]


def test_smoothed_jaccard_and_empty_objects() -> None:
    gt = np.zeros((480, 854), np.uint8)
    gt[100:102, 100:105] = 1  # 10 pixels
    pred = np.zeros_like(gt)
    pred[100:101, 100:105] = 1  # 5 of them
    (j_value, _, _, empty), (j_empty, f_dot_empty, f_empty, empty_empty) = one_frame(gt, pred, [1, 2])
    assert j_value == 6 / 11
    assert not empty
    assert (j_empty, f_dot_empty, f_empty, empty_empty) == (1.0, 1.0, 1.0, True)


def test_adaptive_radius_for_small_objects() -> None:
    gt = np.zeros((480, 854), np.uint8)
    gt[200:210, 300:310] = 1  # area 100: adaptive radius ceil(0.1 * 10) = 1 < 0.008 * diagonal (7.84)
    pred = np.zeros_like(gt)
    pred[198:212, 298:312] = 1  # boundary 2 px outside the ground truth's everywhere
    scorer = MoseV2FrameScorer(480, 854, [1])
    assert scorer.adaptive_radius(100) == 1.0
    ((_, f_dot, f_value, _),) = one_frame(gt, pred, [1])
    assert f_dot == 0.0  # nothing within 1 px
    assert f_value == 1.0  # everything within ceil(7.84) = 8 px


def test_large_objects_use_the_unrounded_diagonal_radius_for_both() -> None:
    scorer = MoseV2FrameScorer(480, 854, [1])
    assert scorer.adaptive_radius(10_000) == pytest.approx(0.008 * math.hypot(480, 854))
    assert scorer.adaptive_radius(0) == scorer.diagonal_radius  # empty ground truth: ceil(0.1 * diag), then min
    gt = np.zeros((480, 854), np.uint8)
    gt[100:200, 100:200] = 1
    pred = np.zeros_like(gt)
    pred[103:203, 104:204] = 1
    ((_, f_dot, f_value, _),) = one_frame(gt, pred, [1])
    assert f_dot == f_value


def test_disappearance_and_reappearance_segments() -> None:
    j = np.array([0.9, 0.2, 0.4, 0.6, 0.8, 0.1])
    f_dot = j / 2
    gt_empty = np.array([False, True, True, False, False, True])
    disappear_j, disappear_f, reappear_j, reappear_f = _segment_means(j, f_dot, gt_empty)
    assert disappear_j == np.mean([np.mean([0.2, 0.4]), 0.1])  # segments [1, 3) and [5, 6)
    assert reappear_j == np.mean([0.6, 0.8])  # segment [3, 5)
    assert disappear_f == np.mean([np.mean([0.1, 0.2]), 0.05])
    assert reappear_f == np.mean([0.3, 0.4])
    # absent from the first scored frame: no disappearance, one reappearance to the end
    absent_first = _segment_means(j[:4], f_dot[:4], np.array([True, True, False, False]))
    assert math.isnan(absent_first[0]) and math.isnan(absent_first[1])
    assert absent_first[2] == np.mean([0.4, 0.6])


def test_video_tables() -> None:
    masks = np.zeros((6, 40, 60), np.uint8)
    masks[:, 5:25, 5:30] = 1
    masks[2:4, 5:25, 5:30] = 0  # object 1 vanishes in frames 2-3 and comes back
    masks[:, 28:38, 35:55] = 2
    pred = masks.copy()
    pred[:, 36:38, 35:55] = 0  # 8 of its 10 rows kept
    scores = score_video(masks, pred, protocol="mosev2")
    assert scores.gt_empty[0].tolist() == [False, True, True, False]
    rows = object_rows(scores)
    assert [row["Sequence"] for row in rows] == ["video_1", "video_2"]
    assert rows[0]["J-Mean"] == 1.0 and rows[0]["Disappear-J"] == 1.0 and rows[0]["Reappear-J"] == 1.0
    assert rows[1]["J-Mean"] == (20 * 8 + 1) / (20 * 10 + 1)
    assert math.isnan(rows[1]["Disappear-J"])
    import pandas as pd

    table = global_row(pd.DataFrame(rows))
    assert table["J-Mean"] == np.mean([rows[0]["J-Mean"], rows[1]["J-Mean"]])
    assert table["Disappear-J&F_dot"] == (1.0 + rows[0]["Disappear-F_dot"]) / 2


def test_tiny_frames_reproduce_the_official_empty_disk() -> None:
    # 30x40: 0.008 * diagonal = 0.4, and the official code dilates by disk(0.4), an all-zero 2x2 footprint that
    # OpenCV applies as a one-pixel shift: even a perfect prediction gets F < 1. Reproduced, not "fixed".
    gt = np.zeros((30, 40), np.uint8)
    gt[5:15, 5:20] = 1
    fast = one_frame(gt, gt.copy(), [1])
    assert fast == one_frame(gt, gt.copy(), [1], "plain")
    (j_value, f_dot, f_value, _), = fast
    assert j_value == 1.0 and f_value == f_dot < 1.0


@settings(max_examples=150, deadline=None)
@given(frame_pairs())
def test_mosev2_fast_path_equals_plain(case: tuple) -> None:
    gt, pred, _ = case
    assert one_frame(gt, pred, [1, 2, 3, 4], "fast") == one_frame(gt, pred, [1, 2, 3, 4], "plain")
