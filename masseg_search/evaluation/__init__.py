"""J&F evaluation: the DAVIS semi-supervised metric (exact and fast), the MOSEv2 protocol, dataset-level tables.

``davis.score_video`` scores one video in memory; ``evaluate.evaluate_predictions`` scores PNG folders and returns
an ``EvaluationResult``; ``evaluate.jf_by_object`` maps (video, object_id) to J&F. No torch in this package.
"""
from masseg_search.evaluation.davis import score_video

__all__ = ["score_video"]
