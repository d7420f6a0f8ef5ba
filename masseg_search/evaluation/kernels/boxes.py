"""Every object's box in one frame without a pass per object, and the scratch buffers the kernels reuse.

The box pass (:func:`object_boxes_and_check`) serves the packed-bit kernel and the ``uint8`` crops; it also tells
whether the prediction holds an id that is no object, so the evaluator's id check costs no pass of its own.
"""
from __future__ import annotations

import re
from typing import Sequence

import cv2
import numpy as np


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


def object_boxes_and_check(
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
    (:func:`object_boxes_and_check`).
    """
    return object_boxes_and_check(gt, pred, object_ids, workspace)[0]


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
