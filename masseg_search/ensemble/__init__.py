"""Fusion of stored per-configuration logits into final id masks, written as an ``Annotations``-style tree.

Per object, a *rule* fuses that object's low-res logits over one or more stored configurations (config ids, with
``@<view>`` for the same configuration under another checkpoint or the mirrored video: ``s20_b-10@flip``) into one score
map (positive = foreground) at low resolution. Then, per frame, the objects are merged with SAM2's non-overlap rule
(highest score wins where it is above 0) after ONE bilinear upsampling to the video size (half-pixel centres, as
``torch`` ``align_corners=False``); frames where an object is given (``first_frames`` in the store) take the given
mask from the dataset's annotation. Methods:

- ``single``: one configuration's logits, unchanged.
- ``select``: ``single`` with the configuration of the object's scene type in ``best_configs.yaml`` (or, given a
  learned ``policy.yaml`` in its place, of the leaf its first-frame features in the scene-type CSV lead to), read
  from that configuration's folder or, failing that, from ``per_type/`` or ``policy/`` (``infer --per-type`` /
  ``--policy``) when it holds the object under that configuration.
- ``mean``: weighted mean of the probabilities ``sigmoid(logit)``; score = ``logit(mean)`` (p clipped to
  [1e-6, 1 - 1e-6]; computed as ``2 artanh(mean(tanh(logit / 2)))``), so ``mean`` over one configuration is that
  configuration.
- ``logit-mean``: weighted mean of the logits.
- ``vote``: weighted share of the configurations whose logit is > 0, minus 0.5: foreground on a strict
  (weighted) majority; between objects the larger share wins.
- ``confidence``: per pixel the logit of the surest configuration (largest ``|logit|``, i.e. ``|p - 0.5|``): where
  members disagree the most confident decides (CGFSeg-style confidence-guided fusion).
- ``per-video-consensus`` / ``per-video-confidence`` / ``per-object-consensus`` / ``per-object-confidence``: each
  video (or object) takes ONE of the listed configurations unchanged, chosen without labels when the split is
  fused: the member agreeing most with the others, or the one most confident in itself (SAM2's stored object
  scores and predicted IoUs); see :mod:`masseg_search.ensemble.agreement`. The choices are written to
  ``<out>.choices.csv`` and counted.

Members may be other model families stored as views: ``infer --import-masks DIR --view cutie`` (any tool's
``Annotations`` PNGs or probability maps, as pseudo-logits) or ``infer --engine cutie``.

Plan file (YAML; ``masseg-search ensemble --plan``; ``--select-on val`` writes one)::

    method: mean                 # select | single | mean | logit-mean | vote | confidence | per-video-consensus |
                                 # per-video-confidence | per-object-consensus | per-object-confidence
                                 # (objects without a narrower rule)
    configs: [s20_b-10, s7.5_b-4, s10_b-5]   # config ids (s20_b-10@flip: a view); empty or absent = every config in the store
    weights: [0.5, 0.3, 0.2]     # optional, one per config (mean, logit-mean, vote)
    best_configs: results/mss/val/best_configs.yaml   # needed by select (or a policy.yaml; relative paths: from the working dir)
    scene_types: null            # CSV video,object_id,scene_type; better passed per split on the command line
    per_type:                    # optional: a rule per scene type (a policy's leaf when best_configs is a policy;
                                 # --select-on writes select over views this way)
      small: {method: vote, configs: [s20_b-10, s7.5_b-4, s10_b-5]}
      crowded: {method: mean, configs: [s38.1_b-9.85, s38.1_b-9.85@flip, s38.1_b-9.85@trial2]}
    per_object:                  # optional: a rule per object, keyed "<video>/<object id>" (wins over the others)
      "0a1b2c3d/2": {method: single, configs: [s7.5_b-4]}
    per_video:                   # optional: a rule per video (wins over per_type and the default)
      "0a1b2c3d": {method: single, configs: [s20_b-10@cutie]}
    # a plan that chooses per video without labels (what --select-on writes when such a candidate wins):
    # method: per-video-consensus
    # configs: [s20_b-10, s20_b-10@flip, s20_b-10@cutie]
    selection: {...}             # written by --select-on: every candidate's J&F and the choice (informational)

Outputs: ``<out>/<video>/<frame>.png`` (each video written to a hidden temp folder and renamed when complete, so a
rerun resumes at the first unfinished video), ``<out>.plan.yaml`` (the plan and inputs applied; a rerun with a
different plan is refused), and ``<out>.zip`` once the submission check passes. No torch here.

One module per step: ``plan`` (plan files, rules per object), ``fuse`` (low-res fusion), ``agreement`` (label-free
choice of a member per video or object), ``render`` (upsampling and merge), ``write`` (the PNG tree, check and
zip), ``select`` (``--select-on``: score the fusion candidates on validation and keep the best plan),
``submission`` (the MOSE scorer's rules on a zip, and the zip itself).
"""
from __future__ import annotations

from masseg_search.ensemble.agreement import count_choices, resolve_choices
from masseg_search.ensemble.fuse import PROBABILITY_EPS, FusedVideo, fuse_logits, fuse_video
from masseg_search.ensemble.plan import (
    CHOICE_METHODS,
    METHODS,
    PER_OBJECT_FOLDERS,
    PER_TYPE_FOLDER,
    POLICY_FOLDER,
    FusionPlan,
    FusionRule,
    RuleResolver,
    RuleSpec,
    load_plan,
    load_scene_type_lookup,
    per_object_folders,
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
    "CHOICE_METHODS", "METHODS", "PARTIAL_PREFIX", "PER_OBJECT_FOLDERS", "PER_TYPE_FOLDER", "POLICY_FOLDER",
    "PROBABILITY_EPS", "EnsembleResult", "FrameRenderer", "FusedVideo", "FusionPlan", "FusionRule", "RuleResolver",
    "RuleSpec", "count_choices", "fuse_logits", "fuse_video", "load_plan", "load_scene_type_lookup",
    "per_object_folders", "per_type_views", "plan_from_dict", "resolve_choices", "run_ensemble", "save_plan",
    "select_fusion", "SubmissionReport", "check_submission", "check_submission_report", "video_masks",
    "write_submission_zip",
]
