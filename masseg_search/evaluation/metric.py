"""The DAVIS semi-supervised J&F metric as the official davis2017-evaluation computes it: rules and plain reference.

Rules (davis2017-evaluation, semi-supervised task):

- Frames: every annotated frame of the ground truth in name order; the first and the last are not scored.
- Objects (the official set): ids ``1..max(first frame)``, void 255 excluded, so also an id in that range that is
  absent from the first frame. Such an object either appears later (it is scored: a semi-supervised method was not
  given it, so it usually gets J = 0 where it is visible) or never (an empty-GT object: J = F = 1 on every frame
  where the prediction is empty too). :data:`OBJECT_SETS` also offers ``"present"``: the first frame's ids only.
  A ground-truth pixel of 255 (void) or of an id that is not an object counts as background.
- J (region): ``|G & P| / |G | P|``; 1 when both are empty.
- F (boundary): the boundary maps of G and P (``seg2bmap``: a pixel is a boundary pixel when it differs from its
  right, lower or lower-right neighbour; on the last row only the right neighbour counts, on the last column only
  the lower one, never the bottom-right corner pixel), each dilated by a disk of radius
  ``ceil(0.008 * image diagonal)``; precision = matched P boundary / P boundary, recall likewise for G;
  ``F = 2PR / (P + R)``. Both boundaries empty: F = 1; only one empty: F = 0 (precision or recall is 0).
  A full-frame mask has an empty boundary.
- Per object: Mean, Recall (fraction of frames > 0.5) and Decay (mean of the first quarter minus mean of the
  last quarter of the scored frames, four overlapping bins with edges ``round(linspace(1, N, 5)) - 1``).

Where this differs from the official code, on purpose:

- Decay for objects with 256 or more scored frames: the official code casts the bin edges to ``uint8``, so with
  NumPy 2 the last edge + 1 wraps to 0 at 256 frames (an empty last bin: Decay NaN) and larger edges wrap beyond
  that; we use 64-bit edges, which give the official value for every shorter sequence (checked bit for bit) and
  the intended first-quarter-minus-last-quarter value for long ones.

The plain full-frame reference (:func:`score_frame_plain`) is what the fast kernels
(:mod:`masseg_search.evaluation.kernels`) are tested against, bit for bit.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from masseg_search.data.layout import VOID_ID
from masseg_search.errors import MassegError

BOUNDARY_THRESHOLD = 0.008


def boundary_radius(height: int, width: int, threshold: float = BOUNDARY_THRESHOLD) -> float:
    """The dilation radius for F: ``ceil(threshold * image diagonal)`` (8 px at 480p, 18 px at 1080p)."""
    return float(np.ceil(threshold * np.linalg.norm((height, width))))


@functools.lru_cache(maxsize=64)
def disk_footprint(radius: float) -> np.ndarray:
    """A disk structuring element: offsets ``arange(-radius, radius + 1)`` on both axes, kept where ``x²+y² <= r²``.

    Equal to ``skimage.morphology.disk(radius)`` (also for the non-integer radii MOSEv2 uses), without importing
    scikit-image at start-up. Read-only: it is cached.
    """
    offsets = np.arange(-radius, radius + 1)
    cols, rows = np.meshgrid(offsets, offsets)
    footprint = (cols**2 + rows**2 <= radius**2).astype(np.uint8)
    footprint.setflags(write=False)
    return footprint


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """Boundary map (bool) of a binary mask by the plain definition: differs from its right, lower or lower-right
    neighbour; last row: right neighbour only; last column: lower neighbour only; bottom-right pixel never."""
    mask = np.asarray(mask).astype(bool)
    boundary = np.zeros_like(mask)
    boundary[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    boundary[:-1, :] |= mask[:-1, :] != mask[1:, :]
    boundary[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return boundary


def f_measure_from_counts(pred_boundary: int, gt_boundary: int, pred_matched: int, gt_matched: int) -> float:
    """F from boundary pixel counts, with the official empty-boundary rules and operation order."""
    if pred_boundary == 0 and gt_boundary > 0:
        precision, recall = 1, 0
    elif pred_boundary > 0 and gt_boundary == 0:
        precision, recall = 0, 1
    elif pred_boundary == 0 and gt_boundary == 0:
        precision, recall = 1, 1
    else:
        precision = pred_matched / float(pred_boundary)
        recall = gt_matched / float(gt_boundary)
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def jaccard_from_counts(intersection: int, union: int) -> float:
    """J from pixel counts; 1 when the union is empty."""
    return 1.0 if union == 0 else intersection / union


@dataclass
class ObjectFrame:
    """What the metrics need from one object in one frame, measured on its crop.

    ``gt_boundary``/``pred_boundary`` are ``uint8`` 0/1 boundary maps of the crop (None when both masks are
    empty, which scores J = F = 1 under both protocols).
    """

    intersection: int
    union: int
    gt_area: int
    gt_boundary: np.ndarray | None
    pred_boundary: np.ndarray | None


EMPTY_OBJECT = ObjectFrame(0, 0, 0, None, None)


def object_frames_plain(gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int]) -> list[ObjectFrame]:
    """The same measurements as :func:`object_frames` on full frames (the reference path)."""
    results = []
    for object_id in object_ids:
        gt_mask, pred_mask = gt == object_id, pred == object_id
        results.append(
            ObjectFrame(
                int(np.sum(gt_mask & pred_mask)),
                int(np.sum(gt_mask | pred_mask)),
                int(np.sum(gt_mask)),
                seg2bmap(gt_mask).astype(np.uint8),
                seg2bmap(pred_mask).astype(np.uint8),
            )
        )
    return results


def boundary_f_plain(pred_boundary: np.ndarray, gt_boundary: np.ndarray, radius: float) -> float:
    """F by the plain definition: dilate both full boundary maps by the disk, AND with the other map, count."""
    footprint = disk_footprint(radius)
    pred_boundary, gt_boundary = pred_boundary.astype(bool), gt_boundary.astype(bool)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), footprint).astype(bool)
    pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), footprint).astype(bool)
    return f_measure_from_counts(
        int(np.sum(pred_boundary)),
        int(np.sum(gt_boundary)),
        int(np.sum(pred_boundary & gt_dilated)),
        int(np.sum(gt_boundary & pred_dilated)),
    )


def score_frame_plain(gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], radius: float | None = None) -> tuple[list[float], list[float]]:
    """(J per object, F per object) of one frame by the plain full-frame definition (the reference, and slow)."""
    gt = np.where(gt == VOID_ID, 0, gt)
    radius = boundary_radius(*gt.shape) if radius is None else radius
    j_values, f_values = [], []
    for object_id in object_ids:
        gt_mask, pred_mask = gt == object_id, pred == object_id
        j_values.append(jaccard_from_counts(int(np.sum(gt_mask & pred_mask)), int(np.sum(gt_mask | pred_mask))))
        f_values.append(boundary_f_plain(seg2bmap(pred_mask), seg2bmap(gt_mask), radius))
    return j_values, f_values


def nonzero_ids(labels: np.ndarray, peel_limit: int = 16) -> list[int]:
    """The distinct non-zero values of a ``uint8`` image, ascending.

    Peels them off from the greatest down (the maximum, then everything below it: two fast passes a value), since
    a frame holds a few ids; past ``peel_limit`` values one 256-bin histogram of the rest finishes the list.
    """
    if not labels.size:
        return []
    x, y, w, h = cv2.boundingRect(labels)
    rest = labels[y : y + h, x : x + w]
    found: list[int] = []
    while w:
        highest = int(cv2.minMaxLoc(rest)[1])
        if highest == 0:
            break
        if len(found) >= peel_limit:
            histogram = cv2.calcHist([rest], [0], None, [256], [0, 256]).ravel()
            found.extend(int(i) for i in np.flatnonzero(histogram[1:]) + 1)
            break
        found.append(highest)
        # keep the values below highest (a copy the first time, then in place)
        rest = cv2.threshold(rest, highest - 1, 0, cv2.THRESH_TOZERO_INV, dst=None if len(found) == 1 else rest)[1]
    return sorted(found)


def first_frame_object_ids(first_gt: np.ndarray) -> list[int]:
    """The ids present in a video's first ground-truth frame, without background 0 and void 255 (the objects a
    semi-supervised method is given, and the ``"present"`` object set)."""
    return [i for i in nonzero_ids(first_gt) if i != VOID_ID]


OBJECT_SETS = ("official", "present")


def object_ids_of(first_gt: np.ndarray, objects: str = "official") -> list[int]:
    """The objects scored for a video, from its first ground-truth frame.

    ``"official"``: ``1..max(first frame)`` (void excluded), as davis2017-evaluation builds its object list, so an
    id missing from the first frame is scored too. ``"present"``: the ids in the first frame. They are equal when
    the first frame's ids are contiguous from 1.
    """
    present = first_frame_object_ids(first_gt)
    if objects == "present":
        return present
    if objects == "official":
        return list(range(1, present[-1] + 1)) if present else []
    raise MassegError(f"unknown object set {objects!r}", fix="use " + " or ".join(repr(name) for name in OBJECT_SETS))


def check_prediction_ids(pred: np.ndarray, object_ids: Sequence[int], where: str | Path | None = None) -> None:
    """A predicted id that is not one of ``object_ids`` (the video's scored objects) is an error naming ``where``."""
    if not pred.size:
        return
    highest = int(cv2.minMaxLoc(pred)[1])
    known = set(int(i) for i in object_ids)
    if highest == 0 or (highest <= max(known, default=0) and len(known) == max(known) and highest in known):
        return  # ids 1..N are all objects: nothing above N means nothing unknown (one fast pass)
    present = np.flatnonzero(np.bincount(pred.ravel(), minlength=256))
    unknown = sorted(set(int(i) for i in present) - {0} - known)
    if unknown:
        raise MassegError(
            f"predicted object id(s) {unknown} are not in the ground truth's objects {_id_list(sorted(known))}",
            where,
            "write only 0 and the video's objects (from its first ground-truth frame, or the ones --meta lists)",
        )


def _id_list(ids: list[int]) -> str:
    """Ids as text, a contiguous run from 1 written ``1..N``."""
    if len(ids) > 3 and ids == list(range(1, len(ids) + 1)):
        return f"1..{len(ids)}"
    return str(ids)


def davis_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of one object's per-frame J or F values, as the official ``db_statistics``.

    Decay uses 64-bit bin edges: identical to the official value below 256 scored frames; the official ``uint8``
    edges wrap around from there on (NaN or a wrong bin), so there we give the correct value instead.
    """
    values = np.asarray(values, dtype=np.float64)
    mean = float(np.nanmean(values))
    recall = float(np.nanmean(values > 0.5))
    edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
    first_bin = values[edges[0] : edges[1] + 1]
    last_bin = values[edges[3] : edges[4] + 1]
    decay = float(np.nanmean(first_bin) - np.nanmean(last_bin))
    return mean, recall, decay
