"""The pure-Python packed-bit kernel of the DAVIS fast path: J and F counts, object by object, from ints of bits.

The compiled kernel (``_jf_kernel.c``) computes the same six counts for a whole frame in one call and is used
where it is built; this module is the fallback (no C compiler at install time, a stale build, or
``MASSEG_JF_KERNEL=python``), and the tests hold both to the plain definition bit for bit.

A bit image is packed row by row into an int (pixel (y, x) is bit ``y * stride + x``), so a whole image shifts,
ORs and popcounts in one C loop over machine words. The boundary (``seg2bmap``) is a few shifted XORs; a disk
that is a union of centred rectangles (every symmetric disk, so every integer radius) dilates by a short program of
shifted ORs (:class:`BitProgram`). The cost is in those operations, each over the whole crop: the layout keeps
crops small and the operation count low. The ints are ``gmpy2.mpz`` (GMP's shifts and popcounts run over 64-bit
limbs, well ahead of CPython's 30-bit digits), or plain ints where gmpy2 is missing: the counts are the same.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from masseg_search.evaluation.kernels.boxes import Workspace, object_boxes_and_check
from masseg_search.evaluation.kernels.disk import disk_rectangles
from masseg_search.evaluation.metric import check_prediction_ids, f_measure_from_counts, jaccard_from_counts

try:
    from gmpy2 import mpz as _big_int
except ImportError:  # pragma: no cover - gmpy2 is a dependency; plain ints give the same counts, slower
    _big_int = int


@dataclass(frozen=True)
class BitProgram:
    """How to dilate a packed bit image by a symmetric disk (a union of centred rectangles ``(w_i, h_i)``, widths
    falling as heights rise): widen the source row-wise rectangle by rectangle, then join the widened copies from the
    tallest down, each join growing the running union by the height step (Horner's scheme). Every growth is a run
    of ``bits |= bits << s`` (s at most the run length so far), so the result is shifted left by a known offset.
    """

    pad: int  # free columns a row needs on its right: the widest half width (at least 1)
    reach: int  # rows the disk reaches above and below its centre: its tallest half height
    widths: tuple[int, ...]  # half widths, narrowest first
    horizontal: tuple[tuple[int, ...], ...]  # per rectangle, narrowest first: shifts that widen the previous one
    vertical: tuple[tuple[tuple[int, ...], int], ...]  # per join: (shifts in rows, rows added to the centre offset)


def doubling_shifts(start: int, target: int) -> tuple[int, ...]:
    """Shifts that grow a run of ``start`` ones to ``target`` ones by ``run |= run << s`` (few steps, no holes)."""
    shifts, length = [], start
    while length < target:
        shifts.append(min(length, target - length))
        length += shifts[-1]
    return tuple(shifts)


def bit_program(half_widths: Sequence[int], half_heights: Sequence[int]) -> BitProgram:
    """The dilation program of the disk that is the union of the centred rectangles ``(2w+1) x (2h+1)`` given widest
    (shortest) first, as :func:`masseg_search.evaluation.kernels.disk.disk_rectangles` lists them."""
    widths = [int(w) for w in half_widths][::-1]  # narrowest (tallest) first
    heights = [int(h) for h in half_heights][::-1]
    horizontal, run = [], 1
    for half_width in widths:
        horizontal.append(doubling_shifts(run, 2 * half_width + 1))
        run = 2 * half_width + 1
    # joins: between consecutive rectangles, then the last rectangle's own height (0 for a disk's centre row)
    steps = [heights[i - 1] - heights[i] for i in range(1, len(heights))] + [heights[-1]]
    vertical = tuple((doubling_shifts(1, 2 * step + 1), step) for step in steps)
    return BitProgram(max(widths[-1], 1), heights[0], tuple(widths), tuple(horizontal), vertical)


@functools.lru_cache(maxsize=64)
def disk_program(radius: float) -> BitProgram | None:
    """The dilation program for a disk of ``radius``; None when the disk is not a union of centred rectangles
    (MOSEv2's off-centre disks of non-integer radius)."""
    rectangles = disk_rectangles(radius)
    return None if rectangles is None else bit_program(*rectangles)


def dilate_packed(bits: int, stride: int, program: BitProgram) -> int:
    """Dilate a bit image packed row by row into an int (pixel (y, x) is bit ``y * stride + x``) by the program's disk.

    Exact where every run of image columns in a row is followed by at least ``program.pad`` zero columns before
    the next columns that matter (the next row's, or another image's laid beside it): the sideways spill lands only
    there. Spill beyond the last row is kept, spill above row 0 dropped. Works on ints and ``gmpy2.mpz`` alike.
    """
    widened, value = [], bits
    for shifts in program.horizontal:
        for shift in shifts:
            value |= value << shift
        widened.append(value)
    # widened[i] holds rectangle i's rows shifted left by its half width; the union is shifted by ``offset``
    union, offset = widened[0], program.widths[0]
    for index, (shifts, rows) in enumerate(program.vertical, start=1):
        for shift in shifts:
            union |= union << (shift * stride)
        offset += rows * stride
        if index < len(widened):
            union |= widened[index] << (offset - program.widths[index])
    return union >> offset


def _region_mask(rows: int, cols: int, stride: int, gap: int) -> int:
    """Ones on the first ``cols`` columns of ``rows`` rows, then ``gap`` empty rows, then the same ``rows`` rows again
    (the two parts of :func:`object_counts`'s layout)."""
    row = ((1 << cols) - 1).to_bytes(stride >> 3, "little")
    part = row * rows
    return _big_int(int.from_bytes(part + bytes((stride >> 3) * gap) + part, "little"))


def object_counts(
    gt: np.ndarray,
    pred: np.ndarray,
    object_id: int,
    box: tuple[int, int, int, int],
    program: BitProgram,
    zeroed: Callable[[tuple[int, int]], np.ndarray] | None = None,
) -> tuple[int, int, int, int, int, int]:
    """One object's ``(|G & P|, |G | P|, P boundary, G boundary, matched P boundary, matched G boundary)`` pixel
    counts, with the boundaries of ``seg2bmap`` and matching within the program's disk (full-frame definition).

    ``box`` ``(y0, y1, x0, x1)`` must hold every pixel of the object in G and P (a tight box is cheapest). Layout:
    the box grown by one pixel on every side (the neighbours the boundary rule reads, and the pixels above and left
    of the masks that can be boundary pixels), clipped to the image, one row of ``stride`` bits per crop row (the
    crop's columns, then at least ``program.pad`` free ones); G's crop, ``program.reach`` (at least 1) empty rows,
    then P's crop. The empty rows keep each part's dilation off the other part's boundary, so moving P's part onto
    G's is one shift and needs no mask.

    On the image's last column or row the rule only looks inside the image: a replica of that column (row) in the
    grown one makes the missing comparisons equal, which is exactly the rule. Bits that are no pixel of the crop
    are then cleared: the replicas, the pad bit that the wrap from a row's end to the next row's first column sets
    when the crop starts at column 0, and the empty row above P's part when P's crop starts at row 0.
    """
    y0, y1, x0, x1 = box
    height, width = gt.shape
    top, left = max(y0 - 1, 0), max(x0 - 1, 0)
    bottom, right = min(y1 + 1, height), min(x1 + 1, width)  # the crop read from the image
    rows, cols = bottom - top, right - left  # in the image
    at_bottom, at_right = y1 == height, x1 == width  # then one replica row (column) follows
    stride = (cols + at_right + program.pad + 7) & ~7
    gap = max(program.reach, 1)  # one empty row at least: the lower neighbours of G's last row
    offset = rows + at_bottom + gap  # P's first row
    shape = (offset + rows + at_bottom, stride)
    canvas = np.zeros(shape, dtype=np.bool_) if zeroed is None else zeroed(shape)
    np.equal(gt[top:bottom, left:right], object_id, out=canvas[:rows, :cols])
    np.equal(pred[top:bottom, left:right], object_id, out=canvas[offset : offset + rows, :cols])
    if at_right:
        canvas[:, cols] = canvas[:, cols - 1]
    if at_bottom:  # after the column, so the corner copy equals the corner: it is never a boundary pixel
        canvas[rows] = canvas[rows - 1]
        canvas[offset + rows] = canvas[offset + rows - 1]
    packed = _big_int(int.from_bytes(np.packbits(canvas, bitorder="little"), "little"))
    # differs from the right, lower or lower-right neighbour; with h = "differs from the right one", the last test is
    # h of the lower neighbour wherever the first two fail (7 big-int operations instead of 8)
    horizontal = packed ^ (packed >> 1)
    boundary = horizontal | (horizontal >> stride) | (packed ^ (packed >> stride))
    if at_bottom or at_right or left == 0 or top == 0:  # only then can a bit outside the crop be set
        valid = _region_mask(rows, cols, stride, offset - rows)
        boundary &= valid
        if at_bottom or at_right:
            packed &= valid
    shift = offset * stride  # P's part moved onto G's
    intersection = (packed & (packed >> shift)).bit_count()
    union = packed.bit_count() - intersection
    pred_boundary = boundary >> shift
    pred_count = pred_boundary.bit_count()
    gt_count = boundary.bit_count() - pred_count
    if pred_count == 0 or gt_count == 0:
        return intersection, union, pred_count, gt_count, 0, 0
    dilated = dilate_packed(boundary, stride, program)
    # G's part of the dilation covers only G's rows and the gap, P's only the gap and P's rows
    pred_matched = (dilated & pred_boundary).bit_count()
    gt_matched = ((dilated >> shift) & boundary).bit_count()
    return intersection, union, pred_count, gt_count, pred_matched, gt_matched


def score_frame(
    gt: np.ndarray,
    pred: np.ndarray,
    object_ids: Sequence[int],
    program: BitProgram,
    workspace: Workspace,
    check_ids: bool,
    where: str | Path | None,
) -> tuple[list[float], list[float]]:
    """(J per object, F per object) of one frame: one box pass (which also finds unknown predicted ids), then each
    object's counts (:func:`object_counts`)."""
    boxes, unknown = object_boxes_and_check(gt, pred, object_ids, workspace)
    if check_ids and unknown:
        check_prediction_ids(pred, object_ids, where)
        raise RuntimeError("the box pass found a predicted id that is no object, check_prediction_ids did not")
    j_values, f_values = [], []
    for object_id, box in zip(object_ids, boxes):
        if box is None:  # in neither mask
            j_values.append(1.0)
            f_values.append(1.0)
            continue
        intersection, union, pred_count, gt_count, pred_matched, gt_matched = object_counts(
            gt, pred, object_id, box, program, workspace.zeroed
        )
        j_values.append(jaccard_from_counts(intersection, union))
        f_values.append(f_measure_from_counts(pred_count, gt_count, pred_matched, gt_matched))
    return j_values, f_values
