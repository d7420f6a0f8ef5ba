"""sam2's ``SAM2Train`` whose per-frame outputs also carry the query-side features the Sim loss needs.

SAM2 tracks a frame by letting its image features attend to the memory bank (``_prepare_memory_conditioned_features``,
memory attention); the mask decoder reads the result. That tensor is computed inside ``_track_step`` and not
returned in the frame's output, so this subclass keeps it: each frame's output gains
``memory_conditioned_features`` (B, C, h, w), the current frame's features after memory attention, or None on a
conditioning frame (which attends to no memory). Nothing else changes: same parameters and state dict, same
outputs otherwise, so checkpoints stay sam2 checkpoints. The training loop builds this class through Hydra
(``model._target_``) instead of ``training.model.sam2.SAM2Train``.
"""
from __future__ import annotations

from typing import Any

from training.model.sam2 import SAM2Train

from masseg_search.finetune.loss import QUERY_FEATURES_KEY


class SAM2TrainWithQueryFeatures(SAM2Train):
    """``SAM2Train`` + ``output[QUERY_FEATURES_KEY]`` on every frame (None on conditioning frames)."""

    _memory_conditioned: Any = None

    def _prepare_memory_conditioned_features(self, frame_idx: int, is_init_cond_frame: bool, *args: Any,
                                             **kwargs: Any) -> Any:
        """sam2's fusion of the frame with its memory, remembered for ``_track_step`` (not on conditioning frames,
        whose features only get the no-memory embedding)."""
        features = super()._prepare_memory_conditioned_features(frame_idx, is_init_cond_frame, *args, **kwargs)
        self._memory_conditioned = None if is_init_cond_frame else features
        return features

    def _track_step(self, *args: Any, **kwargs: Any) -> Any:
        """sam2's step, with the memory-conditioned features of this frame added to its output."""
        self._memory_conditioned = None  # a frame given its mask as output never reaches memory attention
        current_out, sam_outputs, high_res_features, pix_feat = super()._track_step(*args, **kwargs)
        current_out[QUERY_FEATURES_KEY] = self._memory_conditioned
        self._memory_conditioned = None  # no reference kept past the step (the graph belongs to the output)
        return current_out, sam_outputs, high_res_features, pix_feat
