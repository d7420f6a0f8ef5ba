"""J&F evaluation: the DAVIS semi-supervised metric (exact and fast), the MOSEv2 protocol, dataset-level tables.

``score_video`` scores one video in memory; ``evaluate_predictions`` scores PNG folders and returns an
``EvaluationResult``; ``jf_by_object`` maps (video, object_id) to J&F; ``FrameScorer`` scores frames one at a time
(views and fusion choice stream them). The objects scored: ``OBJECT_SETS`` (``object_ids_of``), ``"official"``
(ids 1..max of the first frame, as davis2017-evaluation) by default. No torch in this package.
"""
from masseg_search.evaluation.dataset import EvaluationResult, evaluate_predictions, jf_by_object, open_ground_truth
from masseg_search.evaluation.metric import OBJECT_SETS, first_frame_object_ids, object_ids_of
from masseg_search.evaluation.protocols import PROTOCOLS
from masseg_search.evaluation.protocols.davis import FrameScorer
from masseg_search.evaluation.scores import VideoScores
from masseg_search.evaluation.video import score_video

__all__ = [
    "OBJECT_SETS",
    "PROTOCOLS",
    "EvaluationResult",
    "FrameScorer",
    "VideoScores",
    "evaluate_predictions",
    "first_frame_object_ids",
    "jf_by_object",
    "object_ids_of",
    "open_ground_truth",
    "score_video",
]
