"""MOSE+ assembly: convert DAVIS, YouTube-VOS, YouTube-VIS, OVIS and BURST clips to the MOSE layout, select the
MOSE-like ones, and merge them with MOSE train (``masseg-search data convert`` / ``data build-moseplus``).

One file per box: ``formats`` (the format names and their errors), ``sources/`` (one reader per source format:
``davis``: DAVIS 2016 and 2017, ``ytvos``: YouTube-VOS 2018/2019 train and valid, ``vis``: YouTube-VIS 2019/2021
and OVIS, ``burst``), ``writer`` (the common MOSE-layout clip writer), ``convert`` (one source), ``select``
(per-clip statistics, thresholds, quotas, distributions), ``merge`` (the whole build). ``fake_sources`` writes
small sources in every format for tests; tests/data/moseplus/test_published_formats.py writes its own, from each
dataset's published format description.
"""
from masseg_search.data.moseplus.convert import convert_source, source_clips
from masseg_search.data.moseplus.formats import FORMATS, detect_format
from masseg_search.data.moseplus.merge import build_moseplus

__all__ = ["FORMATS", "build_moseplus", "convert_source", "detect_format", "source_clips"]
