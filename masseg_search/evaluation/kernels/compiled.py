"""The compiled per-frame J&F kernel: ``_jf_kernel``, built from ``_jf_kernel.c`` when the package is installed.

:data:`kernel` is that extension module when it imports, its ``VERSION`` equals :data:`KERNEL_VERSION` and (where
the C source sits next to it, as in this repository's editable install) it was built from that very source; else
None, and the DAVIS fast path runs the pure-Python packed-bit kernel (:mod:`masseg_search.evaluation.kernels.packed`),
which gives the same counts, slower. A missing build (no C compiler at install time) is logged once at debug
level; a stale one warns once with the fix. ``MASSEG_JF_KERNEL=python`` in the environment selects the Python
kernel (benchmarks, debugging).
"""
from __future__ import annotations

import hashlib
import importlib
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Sequence

import numpy as np

from masseg_search.evaluation.metric import check_prediction_ids, f_measure_from_counts, jaccard_from_counts

# Must equal JF_KERNEL_VERSION in _jf_kernel.c: bump both whenever the call or its results change.
KERNEL_VERSION = 1
ENVIRONMENT_SWITCH = "MASSEG_JF_KERNEL"
EXTENSION = "masseg_search.evaluation.kernels._jf_kernel"
SOURCE = Path(__file__).with_name("_jf_kernel.c")

_log = logging.getLogger(__name__)


def stale_reason(module: ModuleType, source: Path = SOURCE) -> str | None:
    """Why ``module`` must not be used (another version, or built from another source than ``source``), or None."""
    version = getattr(module, "VERSION", None)
    if version != KERNEL_VERSION:
        return f"it is version {version}, this code needs {KERNEL_VERSION}"
    built_from = getattr(module, "SOURCE_SHA256", "")
    if built_from and source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() != built_from:
        return f"it was built from another version of {source.name}"
    return None


def load_kernel() -> ModuleType | None:
    """Import the compiled kernel; None (logged, or warned when stale) where it must not be used."""
    if os.environ.get(ENVIRONMENT_SWITCH, "").lower() == "python":
        _log.debug("%s=python: the J&F evaluator uses its pure-Python packed-bit kernel", ENVIRONMENT_SWITCH)
        return None
    try:
        extension = importlib.import_module(EXTENSION)  # optional: imported here, where its absence is handled
    except ImportError as error:
        _log.debug("compiled J&F kernel not available (%s): using the pure-Python packed-bit kernel (same results, slower)", error)
        return None
    reason = stale_reason(extension)
    if reason:
        warnings.warn(
            f"the compiled J&F kernel {extension.__file__} is stale ({reason}): using the slower pure-Python kernel "
            "instead; rerun `bash scripts/bootstrap` to rebuild it",
            RuntimeWarning,
        )
        return None
    return extension


kernel: ModuleType | None = load_kernel()


def applies(gt: np.ndarray, pred: np.ndarray, object_ids: Sequence[int]) -> bool:
    """Whether the kernel takes these inputs (2-D uint8 id masks, object ids 1..255)."""
    return gt.dtype == np.uint8 and pred.dtype == np.uint8 and gt.ndim == 2 and all(0 < int(i) < 256 for i in object_ids)


def score_frame(
    gt: np.ndarray,
    pred: np.ndarray,
    object_ids: Sequence[int],
    rectangles: tuple[tuple[int, ...], tuple[int, ...]],
    check_ids: bool,
    where: str | Path | None,
) -> tuple[list[float], list[float]]:
    """(J per object, F per object) of one frame in one call of :data:`kernel` (which must be loaded)."""
    counts, unknown = kernel.frame_counts(np.ascontiguousarray(gt), np.ascontiguousarray(pred), object_ids, *rectangles)
    if check_ids and unknown:
        check_prediction_ids(pred, object_ids, where)
        raise RuntimeError("the compiled kernel found a predicted id that is no object, check_prediction_ids did not")
    j_values, f_values = [], []
    for object_counts in counts:
        if object_counts is None:  # in neither mask
            j_values.append(1.0)
            f_values.append(1.0)
        else:
            intersection, union, pred_count, gt_count, pred_matched, gt_matched = object_counts
            j_values.append(jaccard_from_counts(intersection, union))
            f_values.append(f_measure_from_counts(pred_count, gt_count, pred_matched, gt_matched))
    return j_values, f_values
