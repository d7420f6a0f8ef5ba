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
import logging
import os
import warnings
from pathlib import Path
from types import ModuleType

# Must equal JF_KERNEL_VERSION in _jf_kernel.c: bump both whenever the call or its results change.
KERNEL_VERSION = 1
ENVIRONMENT_SWITCH = "MASSEG_JF_KERNEL"
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
        from masseg_search.evaluation.kernels import _jf_kernel
    except ImportError as error:
        _log.debug("compiled J&F kernel not available (%s): using the pure-Python packed-bit kernel (same results, slower)", error)
        return None
    reason = stale_reason(_jf_kernel)
    if reason:
        warnings.warn(
            f"the compiled J&F kernel {_jf_kernel.__file__} is stale ({reason}): using the slower pure-Python kernel "
            "instead; rerun `bash scripts/bootstrap` to rebuild it",
            RuntimeWarning,
        )
        return None
    return _jf_kernel


kernel: ModuleType | None = load_kernel()
