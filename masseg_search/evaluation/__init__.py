"""J&F evaluation: the DAVIS semi-supervised metric (exact and fast), the MOSEv2 protocol, dataset-level tables.

``score_video`` scores one video in memory; ``evaluate_predictions`` scores PNG folders and returns an
``EvaluationResult`` (``tables_from_scores`` builds one from per-video scores computed elsewhere, e.g. on Ray);
``jf_by_object`` maps (video, object_id) to J&F; ``FrameScorer`` scores frames one at a time
(views and fusion choice stream them). No torch in this package.
"""
from masseg_search.evaluation.davis import FrameScorer, VideoScores, first_frame_object_ids, score_video
from masseg_search.evaluation.evaluate import (
    PROTOCOLS,
    EvaluationResult,
    evaluate_predictions,
    jf_by_object,
    open_ground_truth,
    tables_from_scores,
)

__all__ = [
    "PROTOCOLS",
    "EvaluationResult",
    "FrameScorer",
    "VideoScores",
    "evaluate_predictions",
    "first_frame_object_ids",
    "jf_by_object",
    "open_ground_truth",
    "score_video",
    "tables_from_scores",
]
