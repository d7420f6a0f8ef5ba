"""The fine-tuning loss: MASSeg's lambda_ce CE + lambda_dice Dice + lambda_sim Sim + lambda_iou MaskIoU (+ object score).

CE (or focal), Dice, MaskIoU and the object-score term come from sam2's ``MultiStepMultiMasksAndIous`` (its
``loss_mask``, ``loss_dice``, ``loss_iou``, ``loss_class``); plain CE is its focal loss with gamma 0 and no alpha.

Sim, the memory similarity term, is ours. SAM2 tracks an object by attending from the current frame to the memory
of earlier frames, so the memory written for an object should stay recognisable as that object and unlike the
other objects (MOSE's crowds of look-alikes are where tracking swaps identities). For every frame t >= 1 and every
object o present at frame 0 and at frame t:

* memory prototype ``m_o``: the memory-encoder features of o's row at the conditioning frame 0
  (``maskmem_features``, what later frames attend to), averaged inside o's ground-truth mask at frame 0;
* query ``q_o^t``: the memory-encoder features of o's row at frame t, averaged inside o's ground-truth mask at t;
* an InfoNCE over the objects of the batch: ``-log softmax_o'(cos(q_o^t, m_o') / tau)[o]`` with temperature
  ``tau`` (0.1), averaged over (o, t).

Objects absent from a frame (empty ground truth) take no part in that frame; a clip with a single object gives 0
(nothing to contrast against), so the term only acts where identities can be confused. Masks are brought to the
feature map's size by area averaging, so a pixel counts by the fraction of its cell the object covers.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from masseg_search.config import LossWeights

CORE_LOSS_KEY = "core_loss"  # the key sam2's trainer back-propagates
SIM_TEMPERATURE = 0.1


def pooled_object_features(features: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-length mask-averaged features per object, and which objects have any mask.

    ``features`` (O, C, h, w), ``masks`` (O, H, W) bool or {0,1}; returns (O, C) and (O,) bool.
    """
    weights = F.interpolate(masks[:, None].float(), size=features.shape[-2:], mode="area")
    area = weights.sum(dim=(2, 3))
    summed = (features.float() * weights).sum(dim=(2, 3))
    vectors = F.normalize(summed / area.clamp_min(1e-6), dim=1)
    return vectors, area[:, 0] > 0


def memory_similarity_loss(outputs: list[dict[str, Any]], targets: torch.Tensor, temperature: float = SIM_TEMPERATURE) -> torch.Tensor:
    """The Sim term (module docstring) from SAM2Train's per-frame outputs and the (T, O, H, W) target masks."""
    num_frames, num_objects = targets.shape[:2]
    reference = outputs[0]["maskmem_features"]
    zero = reference.new_zeros((), dtype=torch.float32) + reference.float().sum() * 0.0  # keeps the graph (and the device) when there is nothing to contrast
    if num_frames < 2 or num_objects < 2:
        return zero
    memory, in_memory = pooled_object_features(reference, targets[0])
    if int(in_memory.sum()) < 2:
        return zero
    labels = torch.arange(num_objects, device=targets.device)
    frame_losses = []
    for frame in range(1, num_frames):
        query, present = pooled_object_features(outputs[frame]["maskmem_features"], targets[frame])
        logits = (query @ memory.T) / temperature
        logits = logits.masked_fill(~in_memory[None, :], float("-inf"))
        rows = present & in_memory
        if rows.any():
            frame_losses.append(F.cross_entropy(logits[rows], labels[rows], reduction="sum") / rows.sum())
    if not frame_losses:
        return zero
    return torch.stack(frame_losses).mean()


class WeightedVOSLoss(nn.Module):
    """``lambda_ce*CE + lambda_dice*Dice + lambda_sim*Sim + lambda_iou*MaskIoU + lambda_class*ObjScore``.

    ``forward(outputs, targets)`` takes SAM2Train's per-frame outputs and ``batch.masks`` (T, O, H, W) and returns
    every term (summed over frames, as sam2 does) plus ``core_loss``, the weighted sum to back-propagate.
    """

    def __init__(self, weights: LossWeights, pred_obj_scores: bool = True, sim_temperature: float = SIM_TEMPERATURE):
        super().__init__()
        from training.loss_fns import MultiStepMultiMasksAndIous

        focal = weights.ce_kind == "focal"
        self.weights = weights
        self.sim_temperature = sim_temperature
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

    def forward(self, outputs: list[dict[str, Any]], targets: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = dict(self.sam2_terms(outputs, targets))
        terms["loss_sim"] = memory_similarity_loss(outputs, targets, self.sim_temperature)
        core = terms[CORE_LOSS_KEY]
        if not torch.is_tensor(core):  # every sam2 weight is 0: sam2 returns the float 0.0
            core = terms["loss_sim"] * 0.0
        if self.weights.sim:
            core = core + self.weights.sim * terms["loss_sim"]
        terms[CORE_LOSS_KEY] = core
        return {key: value if torch.is_tensor(value) else torch.as_tensor(float(value)) for key, value in terms.items()}
