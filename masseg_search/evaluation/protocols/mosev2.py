"""The MOSEv2 protocol (``--protocol mosev2``), as henghuiding/MOSE-api ``MOSEv2/sam2_rcms/tools`` scores it.

Same frames as DAVIS (first and last dropped); objects below; per frame and object:

- J is smoothed: ``(I + 1) / (U + 1)`` (1 when both masks are empty).
- F (``F``) dilates both boundaries by a disk of radius ``ceil(0.008 * diagonal)`` when the size-adaptive radius
  below is smaller than ``0.008 * diagonal``; otherwise by the *un-rounded* ``0.008 * diagonal`` (the official
  code passes that float to the disk, giving an off-centre kernel; we reproduce it).
- Ḟ (``F_dot``) uses the size-adaptive radius ``min(0.008 * diagonal, ceil(0.1 * sqrt(ground-truth area)))``
  (``ceil(0.1 * diagonal)`` before the ``min`` when the ground truth is empty); when that is not smaller than
  ``0.008 * diagonal``, Ḟ equals F.

Per object: J-Mean, F_dot-Mean, F-Mean; disappearance segments (a run of frames where the ground truth is empty
after it was visible, up to its reappearance) and reappearance segments (from a reappearance to the next
disappearance) give Disappear-J/F_dot and Reappear-J/F_dot as means of segment means. Global: means over objects;
``J&F_dot-Mean = (J-Mean + F_dot-Mean) / 2``, ``J&F-Mean = (J-Mean + F-Mean) / 2``, and the disappearance /
reappearance J&Ḟ over the objects that have such segments. Values are fractions at full precision (the official
script prints percentages rounded to 2 decimals).

Objects: the official scorer takes each video's object list from ``meta.json`` (``evaluate --meta``; without it
the same object sets as DAVIS, see :mod:`masseg_search.evaluation.metric`); a video
without a prediction folder gets J = F = Ḟ = 0 for each of its objects and no disappearance / reappearance values
(``--allow-missing``; without it a missing video is an error).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from masseg_search.evaluation.kernels import Workspace
from masseg_search.evaluation.kernels.crop import boundary_f, object_frames
from masseg_search.evaluation.metric import BOUNDARY_THRESHOLD, boundary_f_plain, check_prediction_ids, object_frames_plain
from masseg_search.evaluation.protocols.base import ScoringProtocol
from masseg_search.evaluation.scores import VideoScores

ADAPTIVE_THRESHOLD = 0.1
OBJECT_COLUMNS = [
    "J&F_dot-Mean",
    "J-Mean",
    "F_dot-Mean",
    "F-Mean",
    "J&F-Mean",
    "Disappear-J",
    "Disappear-F_dot",
    "Reappear-J",
    "Reappear-F_dot",
]
GLOBAL_COLUMNS = ["J&F_dot-Mean", "J-Mean", "F_dot-Mean", "F-Mean", "J&F-Mean", "Disappear-J&F_dot", "Reappear-J&F_dot"]


class MoseV2FrameScorer:
    """Scores frame pairs one at a time under the MOSEv2 rules (fast crops or the plain full-frame path)."""

    def __init__(self, height: int, width: int, object_ids: Sequence[int], method: str = "fast"):
        if method not in ("fast", "plain"):
            raise ValueError(f"method must be 'fast' or 'plain', not {method!r}")
        self.object_ids = list(object_ids)
        self.method = method
        self.diagonal = np.linalg.norm((height, width))
        self.diagonal_radius = BOUNDARY_THRESHOLD * self.diagonal
        self.rows: list[list[tuple[float, float, float, bool]]] = []
        self.workspace = Workspace()

    def adaptive_radius(self, gt_area: int) -> float:
        """The size-adaptive radius before it is compared with ``0.008 * diagonal``."""
        if gt_area > 0:
            radius = np.ceil(ADAPTIVE_THRESHOLD * np.sqrt(float(gt_area)))
        else:
            radius = np.ceil(ADAPTIVE_THRESHOLD * self.diagonal)
        return min(self.diagonal_radius, radius)

    def add(self, gt: np.ndarray, pred: np.ndarray, check_ids: bool = False, where: str | Path | None = None) -> None:
        """Score one frame, appending (J, F_dot, F, gt_empty) per object.

        ``check_ids``: first raise as :func:`check_prediction_ids` does (naming ``where``) when ``pred`` holds an id
        that is not an object (a pass of its own: the crops do not see it).
        """
        if check_ids:
            check_prediction_ids(pred, self.object_ids, where)
        if self.method == "fast":
            measured_objects = object_frames(gt, pred, self.object_ids, self.workspace)
        else:
            measured_objects = object_frames_plain(gt, pred, self.object_ids)
        row = []
        for measured in measured_objects:
            j_value = (measured.intersection + 1) / (measured.union + 1)
            if measured.gt_boundary is None:  # both masks empty
                row.append((j_value, 1.0, 1.0, True))
                continue
            adaptive = self.adaptive_radius(measured.gt_area)
            f_measure = boundary_f if self.method == "fast" else boundary_f_plain
            if adaptive < self.diagonal_radius:
                f_value = f_measure(measured.pred_boundary, measured.gt_boundary, float(np.ceil(self.diagonal_radius)))
                f_dot = f_measure(measured.pred_boundary, measured.gt_boundary, float(adaptive))
            else:
                f_value = f_measure(measured.pred_boundary, measured.gt_boundary, float(self.diagonal_radius))
                f_dot = f_value
            row.append((j_value, f_dot, f_value, measured.gt_area == 0))
        self.rows.append(row)

    def result(self, video: str, frame_names: list[str]) -> VideoScores:
        """The scores so far as a :class:`VideoScores` with ``f_dot`` and ``gt_empty``."""
        shape = (len(self.object_ids), len(self.rows))
        table = np.array(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.object_ids), 4)
        j, f_dot, f, empty = (table[:, :, column].T.reshape(shape) for column in range(4))
        return VideoScores(video, self.object_ids, list(frame_names), j, f, protocol="mosev2", f_dot=f_dot, gt_empty=empty.astype(bool))


def _segment_means(j: np.ndarray, f_dot: np.ndarray, gt_empty: np.ndarray) -> tuple[float, float, float, float]:
    """(Disappear-J, Disappear-F_dot, Reappear-J, Reappear-F_dot) of one object; NaN where it has no segment."""
    disappear = np.flatnonzero(~gt_empty[:-1] & gt_empty[1:]) + 1
    if gt_empty[0]:
        disappear = np.insert(disappear, 0, 0)
    reappear = np.flatnonzero(gt_empty[:-1] & ~gt_empty[1:]) + 1
    total = len(gt_empty)
    disappear_segments = []
    for index, start in enumerate(disappear):
        end = reappear[index] if index < len(reappear) else total
        if start > 0:  # absent from the first scored frame: not a disappearance
            disappear_segments.append((j[start:end].mean(), f_dot[start:end].mean()))
    reappear_segments = []
    for index, start in enumerate(reappear):
        end = disappear[index + 1] if index + 1 < len(disappear) else total
        reappear_segments.append((j[start:end].mean(), f_dot[start:end].mean()))
    nan = float("nan")
    disappear_j = float(np.mean([s[0] for s in disappear_segments])) if disappear_segments else nan
    disappear_f = float(np.mean([s[1] for s in disappear_segments])) if disappear_segments else nan
    reappear_j = float(np.mean([s[0] for s in reappear_segments])) if reappear_segments else nan
    reappear_f = float(np.mean([s[1] for s in reappear_segments])) if reappear_segments else nan
    return disappear_j, disappear_f, reappear_j, reappear_f


def object_rows(scores: VideoScores) -> list[dict]:
    """Per-object MOSEv2 statistics of one video."""
    rows = []
    for row, object_id in enumerate(scores.object_ids):
        j, f_dot, f, empty = scores.j[row], scores.f_dot[row], scores.f[row], scores.gt_empty[row]
        j_mean, f_dot_mean, f_mean = float(j.mean()), float(f_dot.mean()), float(f.mean())
        if scores.prediction_missing:  # the official scorer gives such a video no segment values
            disappear_j = disappear_f = reappear_j = reappear_f = float("nan")
        else:
            disappear_j, disappear_f, reappear_j, reappear_f = _segment_means(j, f_dot, empty)
        rows.append(
            {
                "Sequence": f"{scores.video}_{object_id}",
                "J&F_dot-Mean": (j_mean + f_dot_mean) / 2,
                "J-Mean": j_mean,
                "F_dot-Mean": f_dot_mean,
                "F-Mean": f_mean,
                "J&F-Mean": (j_mean + f_mean) / 2,
                "Disappear-J": disappear_j,
                "Disappear-F_dot": disappear_f,
                "Reappear-J": reappear_j,
                "Reappear-F_dot": reappear_f,
                "video": scores.video,
                "object_id": object_id,
            }
        )
    return rows


def _mean_of_present(values: pd.Series) -> float:
    present = values.dropna().to_numpy(dtype=np.float64)
    return float(np.mean(present)) if len(present) else float("nan")


def global_row(per_object: pd.DataFrame) -> dict:
    """Global MOSEv2 means over the objects of ``per_object``."""
    j = float(np.mean(per_object["J-Mean"].to_numpy(dtype=np.float64)))
    f_dot = float(np.mean(per_object["F_dot-Mean"].to_numpy(dtype=np.float64)))
    f = float(np.mean(per_object["F-Mean"].to_numpy(dtype=np.float64)))
    disappear = (_mean_of_present(per_object["Disappear-J"]) + _mean_of_present(per_object["Disappear-F_dot"])) / 2
    reappear = (_mean_of_present(per_object["Reappear-J"]) + _mean_of_present(per_object["Reappear-F_dot"])) / 2
    return {
        "J&F_dot-Mean": (j + f_dot) / 2,
        "J-Mean": j,
        "F_dot-Mean": f_dot,
        "F-Mean": f,
        "J&F-Mean": (j + f) / 2,
        "Disappear-J&F_dot": disappear,
        "Reappear-J&F_dot": reappear,
    }


def object_jf(per_object: pd.DataFrame) -> np.ndarray:
    """Each object's J&Ḟ."""
    return per_object["J&F_dot-Mean"].to_numpy(dtype=np.float64)


def missing_prediction(scores: VideoScores) -> VideoScores:
    """A missing prediction video scores J = F = Ḟ = 0 on every frame of every object, as the official scorer gives
    it (``gt_empty`` stays the ground truth's)."""
    zeros = np.zeros_like(scores.j)
    return dataclasses.replace(scores, j=zeros, f=zeros.copy(), f_dot=zeros.copy(), prediction_missing=True)


MOSEV2 = ScoringProtocol(
    name="mosev2",
    frame_scorer=MoseV2FrameScorer,
    object_rows=object_rows,
    global_row=global_row,
    object_jf=object_jf,
    object_columns=OBJECT_COLUMNS,
    frame_columns=(("J", "j"), ("F", "f"), ("F_dot", "f_dot"), ("gt_empty", "gt_empty")),
    missing_prediction=missing_prediction,
)
