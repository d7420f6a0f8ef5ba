"""The fine-tuning loss: MASSeg's lambda_ce CE + lambda_dice Dice + lambda_sim Sim + lambda_iou MaskIoU (+ object score).

CE (or focal), Dice, MaskIoU and the object-score term come from sam2's ``MultiStepMultiMasksAndIous`` (its
``loss_mask``, ``loss_dice``, ``loss_iou``, ``loss_class``); plain CE is its focal loss with gamma 0 and no alpha.

Sim is ours: the report's "similarity between memory and query features". SAM2 tracks an object by letting the
current frame's features (the query) attend to the object's memory; Sim asks that, after memory attention, the
features inside the object look like the object's own memory more than like the memory of the other objects of
its clip (MOSE's crowds of look-alikes are where tracking swaps identities). For every frame t >= 1 and every
object o present at t and at the conditioning frame 0:

* memory ``m_o``: the memory encoder's output for o at frame 0 (``maskmem_features``, what later frames attend
  to), averaged inside o's ground-truth mask at frame 0;
* query ``q_o^t``: frame t's features after memory attention (``memory_conditioned_features``, kept by
  :mod:`.query_features`), averaged inside o's ground-truth mask at t;
* both mapped into the space where memory attention compares them, its last layer's cross-attention projections
  (``q_proj`` for the query, ``k_proj`` for the memory: the two have different widths, and this is the model's own
  query-to-memory comparison, without the positional terms), then unit length;
* InfoNCE over the objects of o's clip: ``-log softmax_o'(cos(q_o^t, m_o') / tau)[o]``, tau = 0.1, o' running over
  the objects of the same clip present at frame 0; averaged over the (o, t) anchors of the batch.

Objects of other clips of the batch are never negatives (other videos are easy to tell apart and say nothing about
identity swaps). An object absent from a frame is no anchor there; a clip whose frame 0 shows fewer than two of its
objects has nothing to contrast, so its objects are no anchors at all. A batch with no anchor gives Sim = 0 (still
in the graph: back-propagating it gives zero gradients, not an error), and the number of anchors is returned as ``sim_anchors``
(``train_sim_anchors`` in a run's history.csv: a mean of 0 says Sim never acted).

Masks are brought to a feature map's size by area averaging, so a pixel counts by the fraction of its cell the
object covers; pooling then projecting equals projecting then pooling (the projections are affine, the weights sum
to one).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from masseg_search.config import LossWeights

CORE_LOSS_KEY = "core_loss"  # the key sam2's trainer back-propagates
SIM_KEY = "loss_sim"
SIM_ANCHORS_KEY = "sim_anchors"  # how many (object, frame) anchors Sim averaged over in this batch
QUERY_FEATURES_KEY = "memory_conditioned_features"  # set by finetune.query_features.SAM2TrainWithQueryFeatures
SIM_TEMPERATURE = 0.1


def mask_pooled_features(features: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask-averaged features per object (float32), and which objects have any mask.

    ``features`` (O, C, h, w), ``masks`` (O, H, W) bool or {0,1}; returns (O, C) and (O,) bool.
    """
    weights = F.interpolate(masks[:, None].float(), size=features.shape[-2:], mode="area")
    area = weights.sum(dim=(2, 3))
    summed = (features.float() * weights).sum(dim=(2, 3))
    return summed / area.clamp_min(1e-6), area[:, 0] > 0


def _no_anchor(reference: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sim = 0 that stays in the graph (its gradient is zero, not missing) and on the right device."""
    return reference.new_zeros((), dtype=torch.float32) + reference.float().sum() * 0.0, 0  # + 0: never -0.0


def query_memory_similarity_loss(outputs: list[dict[str, Any]], targets: torch.Tensor, object_clips: torch.Tensor,
                                 cross_attention: nn.Module, temperature: float = SIM_TEMPERATURE,
                                 ) -> tuple[torch.Tensor, int]:
    """Sim as the report describes it (module docstring): (mean InfoNCE over anchors, number of anchors).

    ``outputs``: per-frame outputs of ``SAM2TrainWithQueryFeatures`` (frame 0 the conditioning frame);
    ``targets`` (T, O, H, W); ``object_clips`` (O,) which clip of the batch each object comes from;
    ``cross_attention``: a sam2 ``Attention`` (``q_proj``, ``k_proj``) mapping query and memory to one space.
    """
    num_frames, num_objects = targets.shape[:2]
    memory_maps = outputs[0]["maskmem_features"]
    if num_frames < 2:
        return _no_anchor(memory_maps)
    pooled_memory, in_memory = mask_pooled_features(memory_maps, targets[0])
    candidates = (object_clips[:, None] == object_clips[None, :]) & in_memory[None, :]  # [anchor, negative or itself]
    contrastable = in_memory & (candidates.sum(dim=1) >= 2)
    if not bool(contrastable.any()):
        return _no_anchor(memory_maps)
    keys = F.normalize(cross_attention.k_proj(pooled_memory).float(), dim=1)
    labels = torch.arange(num_objects, device=targets.device)
    anchor_losses = []
    for frame in range(1, num_frames):
        query_maps = outputs[frame].get(QUERY_FEATURES_KEY)
        if query_maps is None:
            raise ValueError(f"frame {frame}'s output has no {QUERY_FEATURES_KEY!r}: Sim needs the "
                             "outputs of finetune.query_features.SAM2TrainWithQueryFeatures, not plain SAM2Train")
        pooled_query, present = mask_pooled_features(query_maps, targets[frame])
        rows = present & contrastable
        if not bool(rows.any()):
            continue
        queries = F.normalize(cross_attention.q_proj(pooled_query[rows]).float(), dim=1)
        logits = (queries @ keys.T / temperature).masked_fill(~candidates[rows], float("-inf"))
        anchor_losses.append(F.cross_entropy(logits, labels[rows], reduction="none"))
    if not anchor_losses:
        return _no_anchor(memory_maps)
    per_anchor = torch.cat(anchor_losses)
    return per_anchor.mean(), int(per_anchor.numel())


def memory_cross_attention(model: nn.Module) -> nn.Module:
    """The cross-attention of a SAM2's last memory-attention layer: the space Sim compares query and memory in."""
    return model.memory_attention.layers[-1].cross_attn_image


class WeightedVOSLoss(nn.Module):
    """``lambda_ce*CE + lambda_dice*Dice + lambda_sim*Sim + lambda_iou*MaskIoU + lambda_class*ObjScore``.

    ``cross_attention``: :func:`memory_cross_attention` of the trained model (shared, not a copy), where Sim compares.
    ``forward(outputs, targets, object_clips)`` takes the per-frame outputs of ``SAM2TrainWithQueryFeatures``,
    ``batch.masks`` (T, O, H, W) and each object's clip in the batch (``batch.obj_to_frame_idx[0, :, 1]``; None = one
    clip) and returns every term (sam2's summed over frames, as sam2 does; Sim even at weight 0, for the history),
    ``sim_anchors``, and ``core_loss``, the weighted sum to back-propagate.
    """

    def __init__(self, weights: LossWeights, cross_attention: nn.Module, pred_obj_scores: bool = True,
                 sim_temperature: float = SIM_TEMPERATURE):
        super().__init__()
        from training.loss_fns import MultiStepMultiMasksAndIous

        focal = weights.ce_kind == "focal"
        self.weights = weights
        self.sim_temperature = sim_temperature
        self.cross_attention = cross_attention
        self.sam2_terms = MultiStepMultiMasksAndIous(
            weight_dict={"loss_mask": weights.ce, "loss_dice": weights.dice, "loss_iou": weights.iou,
                         "loss_class": weights.class_},
            focal_alpha=0.25 if focal else -1.0,
            focal_gamma=2.0 if focal else 0.0,
            supervise_all_iou=True,
            iou_use_l1_loss=True,
            pred_obj_scores=pred_obj_scores,
            focal_gamma_obj_score=0.0,
            focal_alpha_obj_score=-1.0,
        )

    def forward(self, outputs: list[dict[str, Any]], targets: torch.Tensor,
                object_clips: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        terms = dict(self.sam2_terms(outputs, targets))
        if object_clips is None:
            object_clips = torch.zeros(targets.shape[1], dtype=torch.long, device=targets.device)
        terms[SIM_KEY], anchors = query_memory_similarity_loss(
            outputs, targets, object_clips.to(targets.device), self.cross_attention, self.sim_temperature)
        core = terms[CORE_LOSS_KEY]
        if not torch.is_tensor(core):  # every sam2 weight is 0: sam2 returns the float 0.0
            core = terms[SIM_KEY] * 0.0
        if self.weights.sim:
            core = core + self.weights.sim * terms[SIM_KEY]
        terms[CORE_LOSS_KEY] = core
        terms[SIM_ANCHORS_KEY] = torch.tensor(float(anchors))
        return {key: value if torch.is_tensor(value) else torch.as_tensor(float(value)) for key, value in terms.items()}
