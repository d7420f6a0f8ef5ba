"""The ``uint8`` crop path: each object measured on its grown box with OpenCV; F by dilation or an integral image.

It serves MOSEv2's off-centre disks (no union of centred rectangles) and the explicit ``dilate``/``integral``
matchers. The 2x2 morphological gradient with OpenCV's ignore-the-outside border gives exactly ``seg2bmap``'s
edge rules.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from masseg_search.evaluation.kernels.boxes import Workspace, object_boxes
from masseg_search.evaluation.kernels.disk import FootprintPlan, footprint_plan
from masseg_search.evaluation.metric import EMPTY_OBJECT, ObjectFrame, check_prediction_ids, f_measure_from_counts, jaccard_from_counts


_GRADIENT_KERNEL = np.ones((2, 2), dtype=np.uint8)


def boundary_map_fast(mask: np.ndarray) -> np.ndarray:
    """The same boundary map as :func:`seg2bmap` (as ``uint8`` 0/1) from one OpenCV morphological gradient."""
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, _GRADIENT_KERNEL, anchor=(0, 0))


def _matched_by_dilation(source: np.ndarray, query: np.ndarray, plan: FootprintPlan) -> int:
    """How many ``query`` pixels lie within the footprint of a ``source`` pixel: dilate, AND, count."""
    return cv2.countNonZero(cv2.bitwise_and(query, cv2.dilate(source, plan.footprint)))


def _matched_by_integral(source: np.ndarray, query: np.ndarray, plan: FootprintPlan) -> int:
    """The same count from an integral image of ``source``: a query pixel is matched when one of the footprint's
    centred rectangles holds a source pixel. Exact; its cost grows with the crop and the boundary length, not with
    the disk's area, so it beats dilation on all but tiny crops."""
    pad_y, pad_x = int(plan.half_heights.max()), int(plan.half_widths.max())
    padded = cv2.copyMakeBorder(source, pad_y, pad_y, pad_x, pad_x, cv2.BORDER_CONSTANT, value=0)
    flat = cv2.integral(padded).ravel()  # (H + 2 pad_y + 1) x (W + 2 pad_x + 1), int32
    stride = padded.shape[1] + 1
    points = cv2.findNonZero(query).reshape(-1, 2)
    corner = (points[:, 1] + pad_y) * stride + (points[:, 0] + pad_x)  # integral index of the pixel's top-left
    half_w, half_h = plan.half_widths, plan.half_heights
    # rectangle sum = I[bottom, right] + I[top, left] - I[top, right] - I[bottom, left]
    offsets = np.concatenate(
        [(half_h + 1) * stride + (half_w + 1), -half_h * stride - half_w, -half_h * stride + (half_w + 1), (half_h + 1) * stride - half_w]
    )
    corners = flat.take(corner[None, :] + offsets[:, None]).reshape(2, 2, len(half_w), -1)
    sums = corners[0].sum(axis=0) - corners[1].sum(axis=0)
    return int(np.count_nonzero(sums.any(axis=0)))


def _prefer_integral(plan: FootprintPlan, shape: tuple[int, int], query_points: int) -> bool:
    """Whether the integral matcher is the cheaper one for this crop, by a cost model in microseconds (how it was
    fitted: ``benchmarks/README.md``, "Evaluator")."""
    if plan.half_widths is None:
        return False
    rows, cols = shape
    dilation_cost = 12.0 + 5.5e-4 * rows * -(-cols // 32) * plan.points
    integral_cost = 26.0 + 3.7e-4 * rows * cols + 7.8e-3 * query_points * len(plan.half_widths)
    return integral_cost < dilation_cost


def boundary_f(pred_boundary: np.ndarray, gt_boundary: np.ndarray, radius: float, matcher: str = "auto") -> float:
    """F between two ``uint8`` 0/1 boundary maps of the same (crop) shape, dilating by a disk of ``radius``.

    ``matcher``: ``"dilate"``, ``"integral"`` (symmetric disks only) or ``"auto"`` (the cheaper; both exact).
    """
    pred_count = cv2.countNonZero(pred_boundary)
    gt_count = cv2.countNonZero(gt_boundary)
    if pred_count == 0 or gt_count == 0:
        return f_measure_from_counts(pred_count, gt_count, 0, 0)
    plan = footprint_plan(float(radius))
    if matcher == "integral" or (matcher == "auto" and _prefer_integral(plan, pred_boundary.shape, max(pred_count, gt_count))):
        if plan.half_widths is None:
            raise ValueError(f"the disk of radius {radius} is not a union of centred rectangles: use matcher='dilate'")
        match = _matched_by_integral
    else:
        match = _matched_by_dilation
    # Boundary pixels the other boundary shares are matched without dilating (identical boundaries: no dilation),
    # unless the footprint misses its own centre (MOSEv2's tiny off-centre disks can even be empty).
    shared = cv2.countNonZero(cv2.bitwise_and(pred_boundary, gt_boundary)) if plan.holds_anchor else -1
    pred_matched = pred_count if shared == pred_count else match(gt_boundary, pred_boundary, plan)
    gt_matched = gt_count if shared == gt_count else match(pred_boundary, gt_boundary, plan)
    return f_measure_from_counts(pred_count, gt_count, pred_matched, gt_matched)


def object_frames(gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], workspace: Workspace | None = None) -> list[ObjectFrame]:
    """Measure every object of one frame on its grown bounding box (:func:`object_boxes`) as ``uint8`` arrays
    (the fast path's array form, which MOSEv2 and the ``dilate``/``integral`` matchers use)."""
    results = []
    for object_id, box in zip(object_ids, object_boxes(gt, pred, object_ids, workspace)):
        if box is None:
            results.append(EMPTY_OBJECT)
            continue
        top, bottom, left, right = box
        gt_grown, pred_grown = gt[top:bottom, left:right] == object_id, pred[top:bottom, left:right] == object_id
        gt_area, pred_area = np.count_nonzero(gt_grown), np.count_nonzero(pred_grown)
        intersection = np.count_nonzero(gt_grown & pred_grown) if gt_area and pred_area else 0
        results.append(
            ObjectFrame(intersection, gt_area + pred_area - intersection, gt_area, boundary_map_fast(gt_grown), boundary_map_fast(pred_grown))
        )
    return results


def score_frame(
    gt: np.ndarray,
    pred: np.ndarray,
    object_ids: Sequence[int],
    radius: float,
    matcher: str = "auto",
    workspace: Workspace | None = None,
    check_ids: bool = False,
    where: str | Path | None = None,
) -> tuple[list[float], list[float]]:
    """(J per object, F per object) of one frame on ``uint8`` crops (``matcher`` as :func:`boundary_f` takes it)."""
    if check_ids:
        check_prediction_ids(pred, object_ids, where)
    j_values, f_values = [], []
    for measured in object_frames(gt, pred, object_ids, workspace):
        j_values.append(jaccard_from_counts(measured.intersection, measured.union))
        if measured.gt_boundary is None:
            f_values.append(1.0)
        else:
            f_values.append(boundary_f(measured.pred_boundary, measured.gt_boundary, radius, matcher))
    return j_values, f_values
