"""Fusion of stored per-configuration logits into final id masks, written as an ``Annotations``-style tree.

Per object, a *rule* fuses that object's low-res logits over one or more stored configurations (config ids, with
``@<view>`` for the same configuration under another checkpoint or the mirrored video: ``s20_b-10@flip``) into one score
map (positive = foreground) at low resolution. Then, per frame, the objects are merged with SAM2's non-overlap rule
(highest score wins where it is above 0) after ONE bilinear upsampling to the video size (half-pixel centres, as
``torch`` ``align_corners=False``); frames where an object is given (``first_frames`` in the store) take the given
mask from the dataset's annotation. Methods:

- ``single``: one configuration's logits, unchanged.
- ``select``: ``single`` with the configuration of the object's scene type in ``best_configs.yaml``, read from
  that configuration's folder or, failing that, from ``per_type/`` (``infer --per-type``) when it holds the object
  under that configuration.
- ``mean``: weighted mean of the probabilities ``sigmoid(logit)``; score = ``logit(mean)`` (p clipped to
  [1e-6, 1 - 1e-6]; computed as ``2 artanh(mean(tanh(logit / 2)))``), so ``mean`` over one configuration is that
  configuration.
- ``logit-mean``: weighted mean of the logits.
- ``vote``: weighted share of the configurations whose logit is > 0, minus 0.5: foreground on a strict
  (weighted) majority; between objects the larger share wins.

Plan file (YAML; ``masseg-search ensemble --plan``; ``--select-on val`` writes one)::

    method: mean                 # select | single | mean | logit-mean | vote (objects without a narrower rule)
    configs: [s20_b-10, s7.5_b-4, s10_b-5]   # config ids (s20_b-10@flip: a view); empty or absent = every config in the store
    weights: [0.5, 0.3, 0.2]     # optional, one per config (mean, logit-mean, vote)
    best_configs: results/mss/val/best_configs.yaml   # needed by select (relative paths: from the working dir)
    scene_types: null            # CSV video,object_id,scene_type; better passed per split on the command line
    per_type:                    # optional: a rule per scene type (--select-on writes select over views this way)
      small: {method: vote, configs: [s20_b-10, s7.5_b-4, s10_b-5]}
      crowded: {method: mean, configs: [s38.1_b-9.85, s38.1_b-9.85@flip, s38.1_b-9.85@trial2]}
    per_object:                  # optional: a rule per object, keyed "<video>/<object id>" (wins over per_type)
      "0a1b2c3d/2": {method: single, configs: [s7.5_b-4]}
    selection: {...}             # written by --select-on: every candidate's J&F and the choice (informational)

Outputs: ``<out>/<video>/<frame>.png`` (each video written to a hidden temp folder and renamed when complete, so a
rerun resumes at the first unfinished video), ``<out>.plan.yaml`` (the plan and inputs applied; a rerun with a
different plan is refused), and ``<out>.zip`` once the submission check passes. No torch here.

One module per step: ``plan`` (plan files, rules per object), ``fuse`` (low-res fusion), ``render`` (upsampling
and merge), ``write`` (the PNG tree, check and zip), ``select`` (``--select-on``: score the fusion candidates on
validation and keep the best plan), ``submission`` (the MOSE scorer's rules on a zip, and the zip itself).
"""
from __future__ import annotations

from masseg_search.ensemble.fuse import PROBABILITY_EPS, FusedVideo, fuse_logits, fuse_video
from masseg_search.ensemble.plan import (
    METHODS,
    PER_TYPE_FOLDER,
    FusionPlan,
    FusionRule,
    RuleResolver,
    RuleSpec,
    load_plan,
    load_scene_type_lookup,
    per_type_views,
    plan_from_dict,
    save_plan,
)
from masseg_search.ensemble.render import FrameRenderer, video_masks
from masseg_search.ensemble.select import select_fusion
from masseg_search.ensemble.submission import (
    SubmissionReport,
    check_submission,
    check_submission_report,
    write_submission_zip,
)
from masseg_search.ensemble.write import PARTIAL_PREFIX, EnsembleResult, run_ensemble

__all__ = [
    "METHODS", "PARTIAL_PREFIX", "PER_TYPE_FOLDER", "PROBABILITY_EPS", "EnsembleResult", "FrameRenderer", "FusedVideo",
    "FusionPlan", "FusionRule", "RuleResolver", "RuleSpec", "fuse_logits", "fuse_video", "load_plan",
    "load_scene_type_lookup", "per_type_views", "plan_from_dict", "run_ensemble", "save_plan", "select_fusion",
    "SubmissionReport", "check_submission", "check_submission_report", "video_masks", "write_submission_zip",
]
