"""The demo's second model family and its per-video selection (kept apart from the stage runner: three calls).

A real run imports another family's masks (Cutie, XMem, SAM2Long, ...: ``infer --import-masks``) or runs Cutie
with real weights (``infer --engine cutie``). Cutie with random weights would only add noise, so the demo imports a
*deliberately different* model the same way: the untuned base checkpoint's masks, written as palette PNGs and
brought in through :func:`masseg_search.inference.import_masks.import_masks` as view ``untuned`` (hard masks, no
confidences: family ``imported``). ``--select-on`` then scores the label-free choices between the members
(per-video / per-object consensus and confidence, pixel confidence) with the other candidates, and the demo applies
the best choice rule to the test split to show what choosing per video adds, whatever it is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from masseg_search.data.layout import open_dataset
from masseg_search.ensemble.plan import CHOICE_METHODS, FusionPlan, plan_from_dict
from masseg_search.ensemble.select import BASE_VIEW_LABEL
from masseg_search.inference.import_masks import import_masks, stored_low_res
from masseg_search.inference.infer import run_inference, write_masks
from masseg_search.store.best_configs import SAM2_DEFAULT
from masseg_search.store.predictions import config_id, config_view

BASE_VIEW = "untuned"  # the imported view of the untuned base checkpoint
PER_VIDEO_ROW = "per-video selection"
PER_VIDEO_MEMBER_ROW = "per-video's SAM2 member"  # its first member alone (the fine-tuned best configuration)


def import_base_view(model_config: str, base_checkpoint: str, data_root: Path, out: Path,
                     split_lists: dict[str, Path], configs: list[tuple[float, float]], device: str = "auto",
                     progress: bool = True) -> None:
    """For each split: the base checkpoint's SAM2 20/-10 masks (``predictions/<split>_base``, written as PNGs under
    ``masks/<split>_base``) imported into ``predictions/<split>`` as view ``untuned`` under ``configs``."""
    for split, split_list in split_lists.items():
        predictions = out / "predictions" / f"{split}_base"
        run_inference(model_config, base_checkpoint, data_root, predictions, [SAM2_DEFAULT], split_list=split_list,
                      device=device, progress=progress)
        dataset = open_dataset(data_root, split_list=split_list)
        folder = config_id(*SAM2_DEFAULT)
        masks = write_masks(predictions, folder, out / "masks" / f"{split}_base", dataset) / "Annotations"
        low_res = stored_low_res(predictions, dataset.video_names[0])  # the same model size as the other members
        import_masks(masks, data_root, out / "predictions" / split, BASE_VIEW, split_list=split_list, configs=configs,
                     low_res=low_res[0] if low_res else None, progress=progress)


def best_choice_plan(plan: FusionPlan) -> tuple[dict[str, Any], FusionPlan] | None:
    """The label-free choice candidate (``per-video-*`` / ``per-object-*``) with the best validation J&F in a
    ``--select-on`` record, and its plan; None when none was scored (a single member)."""
    candidates = [c for c in (plan.selection or {}).get("candidates", []) if c["name"] in CHOICE_METHODS]
    if not candidates:
        return None
    best = max(candidates, key=lambda c: c["jf"])  # ties: the first listed (per-video before per-object)
    return best, plan_from_dict(best["rule"], f"--select-on candidate {best['name']}")


def member_view(member: str) -> str:
    """A member named by its view (``base view`` for the fine-tuned model's own configurations), as --select-on
    counts them."""
    return config_view(member) or BASE_VIEW_LABEL
