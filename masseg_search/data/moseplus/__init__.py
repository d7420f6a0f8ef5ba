"""MOSE+ assembly: convert DAVIS, YouTube-VOS, YouTube-VIS, OVIS and BURST clips to the MOSE layout, select the
MOSE-like ones, and merge them with MOSE train (``masseg-search data convert`` / ``data build-moseplus``).

One file per box: ``formats`` (the format names and their errors), ``sources/`` (one reader per source format:
``davis``, ``ytvos``, ``vis``, ``burst``), ``writer`` (the common MOSE-layout clip writer), ``convert`` (one source), ``select`` (per-clip statistics, thresholds, quotas, distributions), ``merge`` (the
whole build). ``fake_sources`` writes small sources in every format for tests.
"""
from masseg_search.data.moseplus.convert import convert_source, source_clips
from masseg_search.data.moseplus.formats import FORMATS, detect_format
from masseg_search.data.moseplus.merge import build_moseplus

__all__ = ["FORMATS", "build_moseplus", "convert_source", "detect_format", "source_clips"]
