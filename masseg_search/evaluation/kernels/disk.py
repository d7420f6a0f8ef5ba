"""The DAVIS disk as the fast kernels take it: a union of centred rectangles (every symmetric disk, so every
integer radius), or None for MOSEv2's off-centre disks of non-integer radius."""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from masseg_search.evaluation.metric import disk_footprint


@dataclass(frozen=True)
class FootprintPlan:
    """A disk footprint with what the two matchers need: its size and, when the disk is a union of centred
    rectangles (every symmetric disk), their half widths and half heights."""

    footprint: np.ndarray
    points: int
    half_widths: np.ndarray | None
    half_heights: np.ndarray | None
    holds_anchor: bool  # OpenCV's anchor (the centre element) is in the footprint: a pixel matches itself


@functools.lru_cache(maxsize=64)
def footprint_plan(radius: float) -> FootprintPlan:
    """The disk of ``radius`` (``metric.disk_footprint``) and, where it is one, its union of centred rectangles."""
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
        return FootprintPlan(footprint, int(mask.sum()), None, None, holds_anchor)
    # rectangle (halves[row] wide, row high) for every row where the run narrows next: their union is the disk
    rows = [row for row in range(centre + 1) if halves[row] >= 0 and (row == centre or halves[row] > halves[row + 1])]
    return FootprintPlan(footprint, int(mask.sum()), np.array([halves[r] for r in rows]), np.array(rows), holds_anchor)


@functools.lru_cache(maxsize=64)
def disk_rectangles(radius: float) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The disk of ``radius`` as the compiled kernel takes it: (half widths, half heights) of its centred
    rectangles, widest first; None when it is no union of centred rectangles."""
    plan = footprint_plan(radius)
    if plan.half_widths is None:
        return None
    return tuple(int(w) for w in plan.half_widths), tuple(int(h) for h in plan.half_heights)
