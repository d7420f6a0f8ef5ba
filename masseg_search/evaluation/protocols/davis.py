"""The DAVIS semi-supervised protocol: J and F per object and frame by the rules of
:mod:`masseg_search.evaluation.metric`, then Mean, Recall and Decay per object and their means over objects."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from masseg_search.evaluation.kernels import Workspace, score_frame_fast
from masseg_search.evaluation.metric import boundary_radius, check_prediction_ids, davis_statistics, score_frame_plain
from masseg_search.evaluation.protocols.base import ScoringProtocol
from masseg_search.evaluation.scores import VideoScores

GLOBAL_COLUMNS = ["J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]
OBJECT_COLUMNS = ["J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"]


class FrameScorer:
    """Scores frame pairs one at a time for a fixed frame size and object list (fast path or plain)."""

    def __init__(self, height: int, width: int, object_ids: Sequence[int], method: str = "fast"):
        if method not in ("fast", "plain"):
            raise ValueError(f"method must be 'fast' or 'plain', not {method!r}")
        self.height, self.width = height, width
        self.object_ids = list(object_ids)
        self.method = method
        self.radius = boundary_radius(height, width)
        self.workspace = Workspace()
        self.j_rows: list[list[float]] = []
        self.f_rows: list[list[float]] = []

    def add(self, gt: np.ndarray, pred: np.ndarray, check_ids: bool = False, where: str | Path | None = None) -> None:
        """Score one frame (gt: ground-truth ids, void allowed; pred: predicted ids), appending its values.

        ``check_ids``: first raise as :func:`check_prediction_ids` does (naming ``where``) when ``pred`` holds an id
        that is not an object (the fast path finds that while it scores).
        """
        # Void (255) and ids outside the object list need no special case: ``gt == object_id`` never matches them.
        if self.method == "fast":
            j_values, f_values = score_frame_fast(
                gt, pred, self.object_ids, self.radius, workspace=self.workspace, check_ids=check_ids, where=where
            )
        else:
            if check_ids:
                check_prediction_ids(pred, self.object_ids, where)
            j_values, f_values = score_frame_plain(gt, pred, self.object_ids, self.radius)
        self.j_rows.append(j_values)
        self.f_rows.append(f_values)

    def result(self, video: str, frame_names: list[str]) -> VideoScores:
        """The scores so far as a :class:`VideoScores`."""
        shape = (len(self.object_ids), len(self.j_rows))
        j = np.array(self.j_rows, dtype=np.float64).T.reshape(shape)
        f = np.array(self.f_rows, dtype=np.float64).T.reshape(shape)
        return VideoScores(video, self.object_ids, list(frame_names), j, f)


def object_rows(scores: VideoScores) -> list[dict]:
    """Per-object DAVIS statistics (Mean, Recall, Decay of J and F) of one video."""
    rows = []
    for row, object_id in enumerate(scores.object_ids):
        j_mean, j_recall, j_decay = davis_statistics(scores.j[row])
        f_mean, f_recall, f_decay = davis_statistics(scores.f[row])
        rows.append(
            {
                "Sequence": f"{scores.video}_{object_id}",
                "J-Mean": j_mean,
                "J-Recall": j_recall,
                "J-Decay": j_decay,
                "F-Mean": f_mean,
                "F-Recall": f_recall,
                "F-Decay": f_decay,
                "video": scores.video,
                "object_id": object_id,
            }
        )
    return rows


def global_row(per_object: pd.DataFrame) -> dict:
    """Global DAVIS means over objects (in table order, as the official code averages its lists)."""
    means = {column: float(np.mean(per_object[column].to_numpy(dtype=np.float64))) for column in OBJECT_COLUMNS}
    return {"J&F-Mean": (means["J-Mean"] + means["F-Mean"]) / 2, **means}


def object_jf(per_object: pd.DataFrame) -> np.ndarray:
    """Each object's (J-Mean + F-Mean) / 2."""
    return (per_object["J-Mean"].to_numpy(dtype=np.float64) + per_object["F-Mean"].to_numpy(dtype=np.float64)) / 2


def missing_prediction(scores: VideoScores) -> VideoScores:
    """A missing prediction video keeps its scores against empty masks (the official code stops at a missing frame
    instead; ``--allow-missing`` asks for this)."""
    return dataclasses.replace(scores, prediction_missing=True)


DAVIS = ScoringProtocol(
    name="davis",
    frame_scorer=FrameScorer,
    object_rows=object_rows,
    global_row=global_row,
    object_jf=object_jf,
    object_columns=OBJECT_COLUMNS,
    frame_columns=(("J", "j"), ("F", "f")),
    missing_prediction=missing_prediction,
)
