"""The fast J&F path: the plain full-frame definition's values (``metric.score_frame_plain``), bit for bit, from
per-object crops.

Per object the work is done on the bounding box of G | P grown by one pixel, which holds every boundary pixel of
both masks; dilation ignores pixels outside the image, so dilating only that crop changes no value that is read.
Three kernels compute the counts: ``compiled`` (C, a whole frame per call), ``packed`` (Python ints of packed
bits, where the C kernel is not built) and ``crop`` (``uint8`` crops: MOSEv2's off-centre disks). How they work
and what they cost: ``benchmarks/README.md``, section "Evaluator".
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from masseg_search.evaluation.kernels import compiled, crop, packed
from masseg_search.evaluation.kernels.boxes import Workspace
from masseg_search.evaluation.kernels.disk import disk_rectangles

__all__ = ["Workspace", "score_frame_fast"]


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

    ``matcher``: ``"compiled"`` (the C kernel: one call for the whole frame), ``"bits"`` (the packed-bit kernel),
    both for symmetric disks only (every integer radius), ``"dilate"`` or ``"integral"`` (``uint8`` crops, see
    ``crop.boundary_f``), or ``"auto"`` (``compiled`` where it is built and applies, else ``bits`` where it
    applies, else the crops' choice). All are exact. ``check_ids``: first raise as ``metric.check_prediction_ids``
    does (naming ``where``) when ``pred`` holds an id that is not an object; the ``compiled`` and ``bits`` kernels
    see that in their box pass, at no extra pass over the frame.
    """
    if matcher in ("auto", "compiled", "bits"):
        rectangles = disk_rectangles(float(radius))
        if rectangles is not None:
            if matcher != "bits" and compiled.kernel is not None and compiled.applies(gt, pred, object_ids):
                return compiled.score_frame(gt, pred, object_ids, rectangles, check_ids, where)
            if matcher == "compiled":
                raise ValueError(
                    "matcher='compiled' needs the compiled kernel (`bash scripts/bootstrap` builds it) and 2-D uint8 masks with object ids 1..255"
                )
            return packed.score_frame(gt, pred, object_ids, packed.disk_program(float(radius)), workspace or Workspace(), check_ids, where)
        if matcher != "auto":
            raise ValueError(f"the disk of radius {radius} is not a union of centred rectangles: use matcher='dilate'")
    return crop.score_frame(gt, pred, object_ids, radius, matcher, workspace, check_ids, where)
