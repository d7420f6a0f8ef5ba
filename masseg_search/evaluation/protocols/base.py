"""What a scoring protocol is: how it scores frames, and how it turns per-frame scores into tables."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import pandas as pd

from masseg_search.evaluation.scores import VideoScores


class FrameScoring(Protocol):
    """A protocol's frame scorer: built for one frame size and object list, fed frame pairs in order."""

    def add(self, gt: np.ndarray, pred: np.ndarray, check_ids: bool = False, where: str | Path | None = None) -> None:
        """Score one frame; ``check_ids``: first raise (naming ``where``) when ``pred`` holds an id that is no object."""

    def result(self, video: str, frame_names: list[str]) -> VideoScores:
        """The scores so far."""


@dataclass(frozen=True, eq=False)
class ScoringProtocol:
    """One protocol of the registry (:mod:`masseg_search.evaluation.protocols`): everything the evaluator asks of it.

    ``frame_columns`` maps the per-frame table's value columns to :class:`VideoScores` attributes, in column order.
    """

    name: str
    frame_scorer: Callable[[int, int, Sequence[int], str], FrameScoring]  # (height, width, object_ids, method)
    object_rows: Callable[[VideoScores], list[dict]]  # per-object statistics of one video
    global_row: Callable[[pd.DataFrame], dict]  # global means over the rows of a per-object table
    object_jf: Callable[[pd.DataFrame], np.ndarray]  # each row's J&F (J&Ḟ under MOSEv2), as jf_by_object gives it
    object_columns: list[str]  # the statistics per_object.csv holds after "Sequence"
    frame_columns: tuple[tuple[str, str], ...]
    # a video whose prediction folder is missing (allowed): its scores against empty masks -> the protocol's scores
    missing_prediction: Callable[[VideoScores], VideoScores]
