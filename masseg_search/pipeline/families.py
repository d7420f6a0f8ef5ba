"""The demo's second model family and its per-video selection: two stages of `run`, kept apart from the others.

A real run imports another family's masks (Cutie, XMem, SAM2Long, ...: ``infer --import-masks``) or runs Cutie
with real weights (``infer --engine cutie``). Cutie with random weights would only add noise, so the demo imports a
*deliberately different* model the same way: the untuned base checkpoint's masks, written as palette PNGs and
brought in through :func:`masseg_search.inference.import_masks.import_masks` as view ``untuned`` (hard masks, no
confidences: family ``imported``).

- ``import-untuned`` (:data:`IMPORT_UNTUNED_STAGE`, after ``infer-val``): the view on validation, under the
  configurations the other views hold there, so ``select`` scores it with the rest: the label-free choices between
  the members (per-video / per-object consensus and confidence) and pixel confidence among them.
- ``per-video`` (:data:`PER_VIDEO_STAGE`, after ``ensemble``): the best choice rule of ``select``'s record applied
  to test (the view imported there, the SAM2 members inferred there), and its first member alone, for the demo's
  rows "per-video selection" and "per-video's SAM2 member": what choosing per video adds, whatever it is.

Both run only with ``ensemble.import_base`` and a base checkpoint (``model.checkpoint``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from masseg_search.data.layout import open_dataset
from masseg_search.ensemble import FusionPlan, RuleSpec, run_ensemble
from masseg_search.ensemble.agreement import count_choices, format_choice_counts
from masseg_search.ensemble.plan import CHOICE_METHODS, load_plan, plan_from_dict
from masseg_search.ensemble.select import BASE_VIEW_LABEL
from masseg_search.inference.import_masks import import_masks, stored_low_res
from masseg_search.inference.infer import run_inference, write_masks
from masseg_search.pipeline.plan import resolve_split_list, view_configs
from masseg_search.pipeline.stages import Stage, StageContext, StageResult, check_test_submission, outputs_exist
from masseg_search.store.best_configs import SAM2_DEFAULT, load_best_configs
from masseg_search.store.predictions import config_id, config_view, parse_config_id

BASE_VIEW = "untuned"  # the imported view of the untuned base checkpoint
PER_VIDEO_ROW = "per-video selection"
PER_VIDEO_MEMBER_ROW = "per-video's SAM2 member"  # its first member alone (the fine-tuned best configuration)


def import_base_view(model_config: str, base_checkpoint: str, data_root: Path, out: Path,
                     split_lists: dict[str, Path | None], configs: list[Any], device: str = "auto",
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


def enabled(ctx: StageContext) -> bool:
    """The demo imports the untuned base only with ``ensemble.import_base`` and a base checkpoint."""
    return bool(ctx.config.ensemble.import_base and ctx.config.model.checkpoint)


# ------------------------------------------------------------------------------------------------ the stages


def _splits(ctx: StageContext) -> dict[str, tuple[Path, Path | None]]:
    data = ctx.config.data
    return {"val": (Path(data.root), resolve_split_list(data.root, data.val_split)),
            "test": (Path(data.test_data_root), resolve_split_list(data.test_data_root, data.test_split))}


def run_import_untuned(ctx: StageContext) -> StageResult:
    """The untuned base checkpoint's masks imported as view ``untuned`` of the validation predictions."""
    if not enabled(ctx):
        return StageResult(choices={"imported": False})
    config = ctx.config
    root, val_list = _splits(ctx)["val"]
    tuned = ctx.choices("tune-mss")
    configs = view_configs(load_best_configs(tuned["best_configs"]), {parse_config_id(c) for c in tuned["heldout_configs"]})
    import_base_view(config.model.config, config.model.checkpoint, root, ctx.paths.out, {"val": val_list}, configs,
                     device=config.model.device, progress=ctx.progress)
    folders = [config_id(knobs, view=BASE_VIEW) for knobs in configs]
    predictions = ctx.paths.predictions("val")
    return StageResult(outputs=[str(predictions / folder) for folder in folders],
                       choices={"imported": True, "view": BASE_VIEW, "configs": folders})


def run_per_video(ctx: StageContext) -> StageResult:
    """The best label-free choice rule of ``select``'s record applied to test, and its first member alone."""
    if not enabled(ctx):
        return StageResult(choices={"applied": False})
    config = ctx.config
    choice = best_choice_plan(load_plan(ctx.choices("select")["plan"]))
    if choice is None:
        return StageResult(choices={"applied": False})
    record, plan = choice
    print(f"{record['name']} on val (J&F {record['jf']:.4f}) chose {format_choice_counts(record['member_choices'])}")
    root, test_list = _splits(ctx)["test"]
    predictions = ctx.paths.predictions("test")
    members = list(plan.default.configs)
    imported = sorted((parse_config_id(c) for c in members if config_view(c) == BASE_VIEW), key=config_id)
    if imported:
        import_base_view(config.model.config, config.model.checkpoint, root, ctx.paths.out, {"test": test_list},
                         imported, device=config.model.device, progress=ctx.progress)
    for view in ctx.choices("infer-val")["views"]:  # the SAM2 members on test (infer-test ran the chosen plan's)
        pairs = sorted((parse_config_id(c) for c in members if config_view(c) == view["view"]), key=config_id)
        if pairs:
            run_inference(config.model.config, view["checkpoint"], root, predictions, pairs, split_list=test_list,
                          device=config.model.device, progress=ctx.progress, view=view["view"], flip=view["flip"])
    applied = run_ensemble(predictions, plan, root, ctx.paths.submission("per_video"), split_list=test_list,
                           workers=config.ensemble.workers, progress=ctx.progress)
    check_test_submission(applied, root, test_list)
    member = run_ensemble(predictions, FusionPlan(RuleSpec("single", tuple(members[:1]))), root,
                          ctx.paths.submission("per_video_member"), split_list=test_list,
                          workers=config.ensemble.workers, write_zip=False, progress=ctx.progress)
    counts = count_choices(applied.choices, member_view)
    print(f"{record['name']} on test chose {format_choice_counts(counts)}")
    return StageResult(outputs=[str(applied.out_dir), str(applied.zip_path), str(member.out_dir)],
                       choices={"applied": True, "rule": record["name"], "members": members,
                                "submission": str(applied.out_dir), "member_submission": str(member.out_dir),
                                "choices_csv": str(applied.choices_path), "counts": counts})


def reset_per_video(ctx: StageContext, previous: dict, changed: set[str]) -> None:
    """Submissions written from another plan or other predictions are removed (run_ensemble refuses to mix)."""
    import shutil

    for name in ("per_video", "per_video_member"):
        out = ctx.paths.submission(name)
        if out.is_dir():
            shutil.rmtree(out)
        for suffix in (".zip", ".plan.yaml", ".choices.csv"):
            out.with_name(out.name + suffix).unlink(missing_ok=True)


_KEYS = ("model.config", "model.checkpoint", "model.postprocess", "ensemble.import_base")
IMPORT_UNTUNED_STAGE = Stage("import-untuned", "import the untuned base's masks as another model (view 'untuned')",
                             (*_KEYS, "data.root", "data.val_split"), run_import_untuned, complete=outputs_exist)
PER_VIDEO_STAGE = Stage("per-video", "apply the best per-video choice rule to test (the demo's rows)",
                        (*_KEYS, "data.root", "data.test_root", "data.test_split", "ensemble.workers"),
                        run_per_video, reset=reset_per_video, complete=outputs_exist)
