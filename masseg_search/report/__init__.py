"""`masseg-search report RESULTS_DIR`: one static HTML page (offline, no CDN) about everything under RESULTS_DIR.

Sections, each shown when its inputs exist and saying what is missing when they do not:

- **Demo** (``demo_table.csv``, ``demo_gains.csv``, written by `masseg-search demo`; the section is left out for
  other results folders): test J&F per setting with its bootstrap interval, and each stage's paired gain.
- **Sweeps** (``sweeps/<name>/``): the results table (one row a trial), Ray's per-trial ``progress.csv`` (or
  ``result.json``) -> validation J&F per epoch per trial, each searched parameter against the best validation J&F,
  and which trials ASHA stopped early.
- **Mask scaling** (``mss/<study>/``): ``best_configs.yaml`` + the trials table -> the J&F landscape over
  (scale, bias) per scene type with the chosen point and the two fixed baselines (SAM2's 20/-10, MASSeg's
  7.5/-4.0), the per-type table, held-out estimates and the study's other tables and plots.
- **Ensemble** (``plans/``, ``submissions/``, ``ensemble/``): plan YAMLs written by ``ensemble --select-on`` (their
  ``selection`` block: every candidate's and every single configuration's validation J&F) or ``*candidates*.csv``
  tables -> the gain of the chosen fusion over its best member.
- **Evaluations** (any folder holding ``global.csv`` + ``per_object.csv``, as `masseg-search evaluate` writes):
  the global scores side by side and the worst videos with overlays from the viewer (masseg_search.report.overlays).

Plots are PNG files in ``<page stem>_files/`` next to the page, linked relatively. Readers tolerate missing pieces
but not malformed ones: a file that exists and cannot be read is a MassegError naming it.

Modules: ``read`` (the readers), ``plots`` (figures), ``page`` (the HTML), ``overlays`` (`masseg-search view`:
masks over frames, side by side, as strips and GIF/MP4).
"""
from __future__ import annotations

from masseg_search.report.overlays import render_overlays
from masseg_search.report.page import build_report
from masseg_search.report.read import find_evaluations, read_ensembles, read_evaluation, read_mss_study, read_sweep

__all__ = ["build_report", "render_overlays", "find_evaluations", "read_ensembles", "read_evaluation", "read_mss_study", "read_sweep"]
