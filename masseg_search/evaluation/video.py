"""Score one video held in memory (training's validation, tune-mss, fusion choice and the tests use it)."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from masseg_search.errors import MassegError
from masseg_search.evaluation.metric import first_frame_object_ids, object_ids_of
from masseg_search.evaluation.protocols import get_protocol
from masseg_search.evaluation.scores import VideoScores


@contextlib.contextmanager
def single_threaded_opencv() -> Iterator[None]:
    """Run OpenCV single-threaded inside the block: its threads only add overhead on per-object crops, and
    parallelism comes from the process pool over videos."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def _as_frames(masks: np.ndarray | Iterable[np.ndarray], name: str) -> list[np.ndarray]:
    frames = [np.asarray(m) for m in masks]
    for frame in frames:
        if frame.ndim != 2 or frame.dtype != np.uint8:
            raise MassegError(f"{name} must be (T, H, W) uint8 id masks, got a frame {frame.shape} {frame.dtype}")
    return frames


def score_video(
    gt_masks: np.ndarray | Sequence[np.ndarray],
    pred_masks: np.ndarray | Sequence[np.ndarray],
    object_ids: Sequence[int] | None = None,
    frame_names: Sequence[str] | None = None,
    video: str = "video",
    method: str = "fast",
    protocol: str = "davis",
    objects: str = "official",
) -> VideoScores:
    """Score one video in memory under the DAVIS rules (or ``protocol="mosev2"``).

    ``gt_masks`` and ``pred_masks`` hold every frame of the video, first and last included ((T, H, W) uint8 id
    masks, or lists of (H, W) ones); frames 1..T-2 are scored. ``object_ids`` defaults to the ``objects`` set of
    the first ground-truth frame (``"official"``: ids 1..max, as the evaluator; ``"present"``: the ids it holds);
    callers that track objects pass theirs. A predicted id outside them is an error. ``method="plain"`` uses the
    full-frame reference.
    """
    gt_frames, pred_frames = _as_frames(gt_masks, "gt_masks"), _as_frames(pred_masks, "pred_masks")
    if len(gt_frames) != len(pred_frames):
        raise MassegError(f"{len(gt_frames)} ground-truth frames but {len(pred_frames)} predicted frames for {video!r}")
    if len(gt_frames) < 3:
        raise MassegError(f"video {video!r} has {len(gt_frames)} frames: the first and last are not scored, so nothing is left")
    object_ids = object_ids_of(gt_frames[0], objects) if object_ids is None else [int(i) for i in object_ids]
    names = [f"{index:05d}" for index in range(len(gt_frames))] if frame_names is None else list(frame_names)
    height, width = gt_frames[0].shape
    scorer = get_protocol(protocol).frame_scorer(height, width, object_ids, method)
    with single_threaded_opencv():
        for index in range(1, len(gt_frames) - 1):
            gt, pred = gt_frames[index], pred_frames[index]
            if gt.shape != (height, width) or pred.shape != (height, width):
                raise MassegError(f"frame {names[index]} of {video!r}: ground truth {gt.shape}, prediction {pred.shape}, first frame {(height, width)}")
            scorer.add(gt, pred, check_ids=True, where=f"{video}/{names[index]}")
    scores = scorer.result(video, names[1:-1])
    scores.first_frame_ids = first_frame_object_ids(gt_frames[0])
    return scores
