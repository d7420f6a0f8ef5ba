"""The DAVIS semi-supervised J&F metric, exactly as the official davis2017-evaluation computes it, and fast.

Rules (davis2017-evaluation, semi-supervised task):

- Frames: every annotated frame of the ground truth in name order; the first and the last are not scored.
- Objects: the ids present in the ground truth's first frame (void 255 excluded). A ground-truth pixel of 255
  (void) or of an id that is not in the first frame counts as background.
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
- Objects are the ids present in the first frame; the official code scores ``1..max(first frame)``, so for
  non-contiguous ids it also scores phantom objects that are empty in the ground truth.

Speed (bit-identical to the plain full-frame definition, which :func:`score_frame_plain` implements): per object
the work is done on the bounding box of G | P grown by one pixel, which holds every boundary pixel of both masks;
dilation ignores pixels outside the image, so dilating only that crop changes no value that is read. For DAVIS's
integer radii (disks that are unions of centred rectangles) a frame is one call of the compiled kernel
(``_jf_kernel.c``, loaded by :mod:`masseg_search.evaluation.compiled`): one pass over each frame gives every id's
box from its runs of equal bytes, skipping zero words, and tells whether P holds an id that is no object (so the
evaluator needs no separate id check); then per object its grown box becomes ``uint64`` row bitsets, the boundary
is shifts and XORs, the disk a union of centred rectangles dilated by shifted ORs, and the counts are popcounts.
Where that kernel is not built (or stale) the same counts come from Python: the boxes without a pass per object
(:func:`_object_boxes_and_check`: an XY cut of the non-zero pixels of G | P along empty rows and columns,
:func:`_pieces`, gives pieces, and a piece where each mask holds one id is that id's box; the same pass finds
unknown predicted ids), then masks, boundaries and the dilation as Python ints of packed bits
(:mod:`masseg_search.evaluation.packed`), by the same operations. The ``uint8`` crop path (:func:`object_frames`,
:func:`boundary_f`: a 2x2 morphological gradient, which with OpenCV's ignore-the-outside border gives exactly the
``seg2bmap`` edge rules, then a dilation of the crop or an integral image queried at the boundary pixels) serves
MOSEv2's off-centre disks and the explicit ``dilate``/``integral`` matchers. J and F of the fast path equal the
plain path's bit for bit (property-tested) and the official code's (checked on synthetic and random sequences,
37x53 to 1080p, void pixels included).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from masseg_search.errors import MassegError
from masseg_search.evaluation.kernels import compiled, packed

BOUNDARY_THRESHOLD = 0.008
VOID_ID = 255
_GRADIENT_KERNEL = np.ones((2, 2), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- building blocks
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


def boundary_map_fast(mask: np.ndarray) -> np.ndarray:
    """The same boundary map as :func:`seg2bmap` (as ``uint8`` 0/1) from one OpenCV morphological gradient."""
    if mask.dtype == np.bool_:
        mask = mask.view(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, _GRADIENT_KERNEL, anchor=(0, 0))


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


@dataclass(frozen=True)
class _FootprintPlan:
    """A disk footprint with what the two matchers need: its size and, when the disk is a union of centred
    rectangles (every symmetric disk), their half widths and half heights."""

    footprint: np.ndarray
    points: int
    half_widths: np.ndarray | None
    half_heights: np.ndarray | None
    holds_anchor: bool  # OpenCV's anchor (the centre element) is in the footprint: a pixel matches itself


@functools.lru_cache(maxsize=64)
def _footprint_plan(radius: float) -> _FootprintPlan:
    footprint = disk_footprint(radius)
    mask = footprint.astype(bool)
    size = mask.shape[0]
    centre = size // 2
    symmetric = size % 2 == 1 and np.array_equal(mask, mask[::-1]) and np.array_equal(mask, mask[:, ::-1])
    if symmetric:
        offsets = np.abs(np.arange(size) - centre)
        halves = [int(mask[centre + row].sum()) // 2 if mask[centre + row].any() else -1 for row in range(centre + 1)]
        # each row must be one centred run, and the runs must not widen away from the centre row
        runs_ok = all(np.array_equal(mask[centre + row], offsets <= halves[row]) for row in range(centre + 1))
        symmetric = runs_ok and all(halves[row] >= halves[row + 1] for row in range(centre))
    holds_anchor = bool(mask[centre, centre])
    if not symmetric:
        return _FootprintPlan(footprint, int(mask.sum()), None, None, holds_anchor)
    # rectangle (halves[row] wide, row high) for every row where the run narrows next: their union is the disk
    rows = [row for row in range(centre + 1) if halves[row] >= 0 and (row == centre or halves[row] > halves[row + 1])]
    return _FootprintPlan(footprint, int(mask.sum()), np.array([halves[r] for r in rows]), np.array(rows), holds_anchor)


def _matched_by_dilation(source: np.ndarray, query: np.ndarray, plan: _FootprintPlan) -> int:
    """How many ``query`` pixels lie within the footprint of a ``source`` pixel: dilate, AND, count."""
    return cv2.countNonZero(cv2.bitwise_and(query, cv2.dilate(source, plan.footprint)))


def _matched_by_integral(source: np.ndarray, query: np.ndarray, plan: _FootprintPlan) -> int:
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


def _prefer_integral(plan: _FootprintPlan, shape: tuple[int, int], query_points: int) -> bool:
    """Cost model fitted on this CPU (microseconds): OpenCV dilates row by row, 32 pixels a vector op, one op per
    disk point; the integral path grows with the crop and with boundary points x rectangles."""
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
    plan = _footprint_plan(float(radius))
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


# ------------------------------------------------------------------------------------------ packed-bit matching
@functools.lru_cache(maxsize=64)
def _bit_program(radius: float) -> packed.BitProgram | None:
    """The packed-bit dilation program for a disk of ``radius``; None when the disk is not a union of centred
    rectangles (MOSEv2's off-centre disks of non-integer radius)."""
    rectangles = _disk_rectangles(radius)
    return None if rectangles is None else packed.bit_program(*rectangles)


@functools.lru_cache(maxsize=64)
def _disk_rectangles(radius: float) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The disk of ``radius`` as the compiled kernel takes it: (half widths, half heights) of its centred
    rectangles, widest first; None when it is no union of centred rectangles."""
    plan = _footprint_plan(radius)
    if plan.half_widths is None:
        return None
    return tuple(int(w) for w in plan.half_widths), tuple(int(h) for h in plan.half_heights)


def _compiled_applies(gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int]) -> bool:
    """Whether the compiled kernel takes these inputs (2-D uint8 id masks, object ids 1..255)."""
    return gt.dtype == np.uint8 and pred.dtype == np.uint8 and gt.ndim == 2 and all(0 < int(i) < 256 for i in object_ids)


def _scores_from_counts(counts: Sequence[tuple[int, ...] | None]) -> tuple[list[float], list[float]]:
    """(J per object, F per object) from the compiled kernel's counts (None: in neither mask, J = F = 1)."""
    j_values, f_values = [], []
    for object_counts in counts:
        if object_counts is None:
            j_values.append(1.0)
            f_values.append(1.0)
        else:
            intersection, union, pred_count, gt_count, pred_matched, gt_matched = object_counts
            j_values.append(jaccard_from_counts(intersection, union))
            f_values.append(f_measure_from_counts(pred_count, gt_count, pred_matched, gt_matched))
    return j_values, f_values


def _score_object_packed(
    gt: np.ndarray,
    pred: np.ndarray,
    object_id: int,
    box: tuple[int, int, int, int],
    program: packed.BitProgram,
    workspace: Workspace | None = None,
) -> tuple[float, float]:
    """(J, F) of one object from a box holding its G | P, by the packed-bit kernel (:func:`packed.object_counts`)."""
    zeroed = None if workspace is None else workspace.zeroed
    counts = packed.object_counts(gt, pred, object_id, box, program, zeroed)
    intersection, union, pred_count, gt_count, pred_matched, gt_matched = counts
    return jaccard_from_counts(intersection, union), f_measure_from_counts(pred_count, gt_count, pred_matched, gt_matched)


# ---------------------------------------------------------------------------------------------- per-object crops
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


_EMPTY_OBJECT = ObjectFrame(0, 0, 0, None, None)


class Workspace:
    """Scratch buffers reused from frame to frame and object to object (fresh arrays cost allocation, zeroing and
    cache misses every time)."""

    def __init__(self) -> None:
        self.storage = np.empty(0, dtype=np.uint8)
        self.canvas_storage = np.empty(0, dtype=np.bool_)

    def scratch(self, shape: tuple[int, int]) -> np.ndarray:
        """A ``uint8`` array of ``shape`` (contents undefined, valid until the next call)."""
        size = shape[0] * shape[1]
        if self.storage.size < size:
            self.storage = np.empty(size, dtype=np.uint8)
        return self.storage[:size].reshape(shape)

    def zeroed(self, shape: tuple[int, int]) -> np.ndarray:
        """An all-False ``bool`` array of ``shape`` (valid until the next call; separate from :meth:`scratch`)."""
        size = shape[0] * shape[1]
        if self.canvas_storage.size < size:
            self.canvas_storage = np.empty(max(size, 2 * self.canvas_storage.size), dtype=np.bool_)
        canvas = self.canvas_storage[:size]
        canvas.fill(False)
        return canvas.reshape(shape)


_NONZERO_RUN = re.compile(rb"[^\x00]+")


def _runs(projection: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of every maximal run of non-zero entries of a one-byte-per-entry projection (``bool`` or
    ``uint8``), found by the C regex engine: a handful of NumPy calls costs more here."""
    return [match.span() for match in _NONZERO_RUN.finditer(projection.tobytes())]


def _pieces(gt: np.ndarray, pred: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Tight boxes ``(y0, y1, x0, x1)`` of the non-zero pixels of G | P, cut apart along empty rows and columns
    (an XY cut): a piece's projection on either axis is one run, and together the pieces hold every such pixel.

    Each cut projects a piece on one axis (row sums or column ORs of G and of P, combined: no G | P image is
    written) and splits it at its empty lines; a piece cut into several is re-checked on the other axis, one left whole is final once the
    other axis was tight too. The first cut reads both frames once; later ones read only their piece.
    """
    if not gt.size:
        return []
    reduce, bitwise_or = cv2.reduce, np.bitwise_or.reduce
    pieces = []
    todo = [(0, gt.shape[0], 0, gt.shape[1], 1, False)]  # box, axis to project on (1: rows, 0: columns), other axis tight
    while todo:
        y0, y1, x0, x1, axis, other_tight = todo.pop()
        if axis == 1:  # row sums: OpenCV's reduction is the fastest along rows
            projection = reduce(gt[y0:y1, x0:x1], 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
            projection += reduce(pred[y0:y1, x0:x1], 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)
            projection = projection.astype(np.bool_)
        else:  # column ORs: NumPy ORs whole rows into one (OpenCV's column sums cost twice as much here)
            projection = bitwise_or(gt[y0:y1, x0:x1], axis=0) | bitwise_or(pred[y0:y1, x0:x1], axis=0)
        runs = _runs(projection)
        if len(runs) == 1 and other_tight:
            a, b = runs[0]
            pieces.append((y0 + a, y0 + b, x0, x1) if axis == 1 else (y0, y1, x0 + a, x0 + b))
        elif axis == 1:
            todo.extend((y0 + a, y0 + b, x0, x1, 0, True) for a, b in runs)
        else:
            todo.extend((y0, y1, x0 + a, x0 + b, 1, True) for a, b in runs)
    return pieces


def _object_boxes_and_check(
    gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], workspace: Workspace | None = None
) -> tuple[list[tuple[int, int, int, int] | None], bool]:
    """(:func:`object_boxes_tight`'s boxes, whether P holds a non-zero id that is not in ``object_ids``).

    Every non-zero pixel lies in one piece (:func:`_pieces`); each mask's least and greatest non-zero id in a piece
    is read. A piece where G and P hold one and the same id (or one of them nothing) is that id's box. Elsewhere a
    mask holding one id gives it its own bounding rectangle, and where ids mix each candidate id (between the least
    and the greatest) is located by a comparison inside the piece; the predicted pixels those comparisons find
    must be all of P's there, else P holds an id that is no object (counted only when some id in that range is
    no object).
    """
    workspace = workspace or Workspace()
    boxes: dict[int, list[int]] = {}
    wanted = set(int(object_id) for object_id in object_ids)
    unknown = False

    def add(object_id: int, y0: int, y1: int, x0: int, x1: int) -> None:
        box = boxes.setdefault(object_id, [y0, y1, x0, x1])
        box[0], box[1], box[2], box[3] = min(box[0], y0), max(box[1], y1), min(box[2], x0), max(box[3], x1)

    for y0, y1, x0, x1 in _pieces(gt, pred):
        sides = gt[y0:y1, x0:x1], pred[y0:y1, x0:x1]
        extremes = [cv2.minMaxLoc(labels, labels)[:2] for labels in sides]  # over non-zero pixels; (0, 0) if none
        (g_low, g_high), (p_low, p_high) = extremes
        if g_low == g_high and p_low == p_high and (not g_high or not p_high or g_high == p_high):
            object_id = int(g_high or p_high)
            unknown = unknown or (p_high and object_id not in wanted)
            if object_id in wanted:
                add(object_id, y0, y1, x0, x1)
            continue
        for predicted, labels, (lowest, highest) in zip((False, True), sides, extremes):
            if not highest:
                continue
            if lowest == highest:
                unknown = unknown or (predicted and int(highest) not in wanted)
                if int(highest) in wanted:
                    x, y, w, h = cv2.boundingRect(labels)
                    add(int(highest), y0 + y, y0 + y + h, x0 + x, x0 + x + w)
                continue
            candidates = [object_id for object_id in wanted if lowest <= object_id <= highest]
            # predicted pixels must all be objects: certain when every id from the least to the greatest is one
            count_found = predicted and not unknown and len(candidates) <= highest - lowest
            equal = workspace.scratch(labels.shape)
            found = 0
            for object_id in candidates:
                if labels.shape in ((4, 1), (1, 1)):  # OpenCV takes such an array for a Scalar and compares wrongly
                    equal[...] = labels == object_id
                else:
                    cv2.compare(labels, object_id, cv2.CMP_EQ, dst=equal)
                bx, by, bw, bh = cv2.boundingRect(equal)
                if bw:
                    add(object_id, y0 + by, y0 + by + bh, x0 + bx, x0 + bx + bw)
                    found += cv2.countNonZero(equal) if count_found else 0
            unknown = unknown or (count_found and found != cv2.countNonZero(labels))
    return [tuple(boxes[object_id]) if object_id in boxes else None for object_id in (int(i) for i in object_ids)], bool(unknown)


def object_boxes_tight(
    gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], workspace: Workspace | None = None
) -> list[tuple[int, int, int, int] | None]:
    """Per object, the tight bounding box ``(y0, y1, x0, x1)`` of its G | P; None when it is in neither mask.

    Without a pass per object over the frame: the non-zero pixels of G | P are cut into pieces along empty rows
    and columns (:func:`_pieces`), and only pieces where ids mix are compared id by id
    (:func:`_object_boxes_and_check`).
    """
    return _object_boxes_and_check(gt, pred, object_ids, workspace)[0]


def object_boxes(
    gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], workspace: Workspace | None = None
) -> list[tuple[int, int, int, int] | None]:
    """Per object, the bounding box of its G | P grown by one pixel and clipped to the image, as
    ``(top, bottom, left, right)``; None when the object is in neither mask.

    The grown box holds every boundary pixel of both masks (those left of and above the masks included), and its
    last row/column is empty or the image's own last one.
    """
    height, width = gt.shape
    boxes: list[tuple[int, int, int, int] | None] = []
    for box in object_boxes_tight(gt, pred, object_ids, workspace):
        if box is None:
            boxes.append(None)
        else:
            y0, y1, x0, x1 = box
            boxes.append((max(y0 - 1, 0), min(y1 + 1, height), max(x0 - 1, 0), min(x1 + 1, width)))
    return boxes


def object_frames(gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int], workspace: Workspace | None = None) -> list[ObjectFrame]:
    """Measure every object of one frame on its grown bounding box (:func:`object_boxes`) as ``uint8`` arrays
    (the fast path's array form, which MOSEv2 and the ``dilate``/``integral`` matchers use)."""
    results = []
    for object_id, box in zip(object_ids, object_boxes(gt, pred, object_ids, workspace)):
        if box is None:
            results.append(_EMPTY_OBJECT)
            continue
        top, bottom, left, right = box
        gt_grown, pred_grown = gt[top:bottom, left:right] == object_id, pred[top:bottom, left:right] == object_id
        gt_area, pred_area = np.count_nonzero(gt_grown), np.count_nonzero(pred_grown)
        intersection = np.count_nonzero(gt_grown & pred_grown) if gt_area and pred_area else 0
        results.append(
            ObjectFrame(intersection, gt_area + pred_area - intersection, gt_area, boundary_map_fast(gt_grown), boundary_map_fast(pred_grown))
        )
    return results


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


def _score_frame_compiled(
    gt: np.ndarray,
    pred: np.ndarray,
    object_ids: Sequence[int],
    rectangles: tuple[tuple[int, ...], tuple[int, ...]],
    check_ids: bool,
    where: str | Path | None,
) -> tuple[list[float], list[float]]:
    """:func:`score_frame_fast` by the compiled kernel: the whole frame in one call."""
    counts, unknown = compiled.kernel.frame_counts(np.ascontiguousarray(gt), np.ascontiguousarray(pred), object_ids, *rectangles)
    if check_ids and unknown:
        check_prediction_ids(pred, object_ids, where)
        raise RuntimeError("the compiled kernel found a predicted id that is no object, check_prediction_ids did not")
    return _scores_from_counts(counts)


def _score_frame_bits(
    gt: np.ndarray,
    pred: np.ndarray,
    object_ids: Sequence[int],
    program: packed.BitProgram,
    workspace: Workspace,
    check_ids: bool,
    where: str | Path | None,
) -> tuple[list[float], list[float]]:
    """:func:`score_frame_fast` by the pure-Python packed-bit kernel: one box pass, then each object's counts."""
    boxes, unknown = _object_boxes_and_check(gt, pred, object_ids, workspace)
    if check_ids and unknown:
        check_prediction_ids(pred, object_ids, where)
        raise RuntimeError("the box pass found a predicted id that is no object, check_prediction_ids did not")
    j_values, f_values = [], []
    for object_id, box in zip(object_ids, boxes):
        j_value, f_value = (1.0, 1.0) if box is None else _score_object_packed(gt, pred, object_id, box, program, workspace)
        j_values.append(j_value)
        f_values.append(f_value)
    return j_values, f_values


def score_frame_fast(
    gt: np.ndarray,
    pred: np.ndarray,
    object_ids: Sequence[int],
    radius: float,
    matcher: str = "auto",
    workspace: Workspace | None = None,
    check_ids: bool = False,
    where: str | Path | None = None,
) -> tuple[list[float], list[float]]:
    """(J per object, F per object) of one frame, DAVIS rules, on per-object crops (``radius``: boundary_radius).

    ``matcher``: ``"compiled"`` (the C kernel, :mod:`masseg_search.evaluation.compiled`: one call for the whole
    frame), ``"bits"`` (Python ints of packed bits, :mod:`masseg_search.evaluation.packed`), both for symmetric
    disks only (every integer radius), ``"dilate"`` or ``"integral"`` (``uint8`` crops, see :func:`boundary_f`),
    or ``"auto"`` (``compiled`` where it is built and applies, else ``bits`` where it applies, else
    :func:`boundary_f`'s choice). All are exact. ``check_ids``: first raise as :func:`check_prediction_ids` does
    (naming ``where``) when ``pred`` holds an id that is not an object; the ``compiled`` and ``bits`` paths see
    that in their box pass, at no extra pass over the frame.
    """
    if matcher in ("auto", "compiled", "bits"):
        rectangles = _disk_rectangles(float(radius))
        if rectangles is not None:
            if matcher != "bits" and compiled.kernel is not None and _compiled_applies(gt, pred, object_ids):
                return _score_frame_compiled(gt, pred, object_ids, rectangles, check_ids, where)
            if matcher == "compiled":
                raise ValueError(
                    "matcher='compiled' needs the compiled kernel (`bash scripts/bootstrap` builds it) and 2-D uint8 masks with object ids 1..255"
                )
            return _score_frame_bits(gt, pred, object_ids, _bit_program(float(radius)), workspace or Workspace(), check_ids, where)
        if matcher != "auto":
            raise ValueError(f"the disk of radius {radius} is not a union of centred rectangles: use matcher='dilate'")
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


# ----------------------------------------------------------------------------------------------- per video
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
    """The objects of a video: the ids in its first ground-truth frame, without background 0 and void 255."""
    return [i for i in nonzero_ids(first_gt) if i != VOID_ID]


def check_prediction_ids(pred: np.ndarray, object_ids: Sequence[int], where: str | Path | None = None) -> None:
    """A predicted id that is not an object of the ground truth's first frame is an error (naming ``where``)."""
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
            f"predicted object id(s) {unknown} are not in the ground truth's first frame (objects {sorted(known)})",
            where,
            "predict only the objects of the first ground-truth frame (0 = background)",
        )


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
