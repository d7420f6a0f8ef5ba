"""What scoring one video gives: per-object, per-frame J and F (and MOSEv2's extra rows), under any protocol."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VideoScores:
    """Per-object, per-frame scores of one video (rows follow ``object_ids``, columns ``frame_names``).

    ``j``/``f`` are the DAVIS values, except under ``protocol="mosev2"`` where ``j`` is the smoothed
    ``(I+1)/(U+1)`` and ``f`` the boundary F at the image-diagonal radius; MOSEv2 adds ``f_dot`` (size-adaptive
    radius) and ``gt_empty``. ``first_frame_ids``: the ids present in the ground truth's first frame (the scored
    objects may hold more, see ``metric.object_ids_of``), None when unknown. ``prediction_missing``: the prediction
    folder was absent and the protocol's rule for that gave the scores (``--allow-missing``).
    """

    video: str
    object_ids: list[int]
    frame_names: list[str]
    j: np.ndarray
    f: np.ndarray
    protocol: str = "davis"
    f_dot: np.ndarray | None = None
    gt_empty: np.ndarray | None = None
    first_frame_ids: list[int] | None = None
    prediction_missing: bool = False

    def object_j_and_f_means(self) -> dict[int, float]:
        """object id -> (J-Mean + F-Mean) / 2 over the scored frames, with Ḟ for F where the protocol measures it
        (J&Ḟ under MOSEv2), as ``jf_by_object``."""
        boundary = self.f if self.f_dot is None else self.f_dot
        return {oid: (float(np.nanmean(self.j[row])) + float(np.nanmean(boundary[row]))) / 2 for row, oid in enumerate(self.object_ids)}
