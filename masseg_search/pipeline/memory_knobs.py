"""The demo's "tuned per type, memory knobs" row: a second tune-mss study that searches one admission threshold
besides scale and bias, and its per-type inference on the test split.

Kept apart from the demo's other stages so it can move as one piece: the study ``val_knobs`` searches
``DEMO_KNOBS`` (ranges from ``mss.space`` where declared, else the built-in defaults, admit_score -2..2) on the
same validation split, checkpoint and scene types as ``val``, without the held-out folds (the demo's table scores
it on the test split, paired with "tuned per type" on the same objects). In `demo` it is the stage
``memory-knobs`` (:data:`MEMORY_KNOBS_STAGE`), after infer-test.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from masseg_search.config import ProjectConfig
from masseg_search.inference.infer import run_inference
from masseg_search.mss.studies import open_storage
from masseg_search.mss.tune import tune_mss
from masseg_search.pipeline.plan import resolve_split_list
from masseg_search.pipeline.stages import Stage, StageContext, StageResult, command, outputs_exist
from masseg_search.store.best_configs import BestConfigs, load_best_configs
from masseg_search.store.mss_results import MssResults
from masseg_search.store.predictions import config_id

DEMO_KNOBS = ["scale", "bias", "admit_score"]
KNOBS_STUDY = "val_knobs"
ROW_NAME = "fine-tuned, tuned per type, memory knobs"
PREDICTIONS_DIR = "test_memory_knobs"  # under the demo's predictions/: its own per_type folder


def tune_memory_knobs(cfg: ProjectConfig, checkpoint: str, progress: bool) -> tuple[Path, BestConfigs]:
    """tune-mss --study val_knobs --knobs scale,bias,admit_score --cv 0 on the demo's validation split."""
    tuned = tune_mss(cfg, study=KNOBS_STUDY, checkpoint=checkpoint, cv=0, progress=progress, knobs=DEMO_KNOBS,
                     policy="none")
    path = MssResults(tuned.out_dir).best_configs
    return path, load_best_configs(path)


def infer_memory_knobs(cfg: ProjectConfig, checkpoint: str, best_configs: Path, data_root: Path, test_list: Path,
                       scene_types_csv: Path, predictions_root: Path, progress: bool) -> Path:
    """Each test object under its scene type's configuration from the knob study (``<root>/per_type``)."""
    out = predictions_root / PREDICTIONS_DIR
    run_inference(cfg.model.config, checkpoint, data_root, out, [], split_list=test_list, per_type=best_configs,
                  scene_types=scene_types_csv, device=cfg.model.device, progress=progress)
    return out


# ------------------------------------------------------------------------------------------------ as a stage of run

STAGE_NAME = "memory-knobs"


def run_memory_knobs(ctx: StageContext) -> StageResult:
    """The knob study on validation with the chosen checkpoint, then its per-type inference on the test split."""
    config = ctx.config
    checkpoint = ctx.choices("train-sweep")["checkpoint"]
    best_configs, best = tune_memory_knobs(config, checkpoint, ctx.progress)
    for scene_type, knobs in sorted(best.types.items()):
        print(f"  {scene_type:<10} {config_id(knobs)}  ({KNOBS_STUDY}: {', '.join(DEMO_KNOBS)})")
    root = Path(config.data.test_data_root)
    test_list = resolve_split_list(root, config.data.test_split)
    scene_types = Path(ctx.choices("infer-test")["scene_types"])
    predictions = infer_memory_knobs(config, checkpoint, best_configs, root, test_list, scene_types,
                                     ctx.paths.predictions("test").parent, ctx.progress)
    return StageResult(
        outputs=[str(best_configs), str(predictions)],
        choices={"best_configs": str(best_configs), "sha256": ctx.record.file_digest(best_configs),
                 "types": {name: config_id(knobs) for name, knobs in sorted(best.types.items())},
                 "predictions": str(predictions)},
        commands=[command("tune-mss", *ctx.config_arguments(**{"model.checkpoint": checkpoint}), "--study",
                          KNOBS_STUDY, "--knobs", ",".join(DEMO_KNOBS), "--cv", 0),
                  command("infer", *ctx.config_arguments(**{"model.checkpoint": checkpoint}), "--data", root,
                          "--split-list" if test_list else None, test_list, "--per-type", best_configs,
                          "--scene-types", scene_types, "--out", predictions)])


def reset_memory_knobs(ctx: StageContext, previous: dict, changed: set[str]) -> None:
    """A knob study of another checkpoint, split or space is deleted (a rerun would resume it), with its test
    predictions."""
    import optuna

    mss = ctx.config.mss
    opened = open_storage(mss.storage, KNOBS_STUDY)
    for name in optuna.study.get_all_study_names(opened.storage):
        if name.startswith(f"{KNOBS_STUDY}/"):
            optuna.delete_study(study_name=name, storage=opened.storage)
    for folder in (Path(mss.results_dir) / KNOBS_STUDY, ctx.paths.predictions("test").parent / PREDICTIONS_DIR):
        if folder.is_dir():
            shutil.rmtree(folder)


def memory_knobs_complete(ctx: StageContext, entry: dict) -> bool:
    """The study's choices still have the recorded digest."""
    choices = entry.get("choices", {})
    return outputs_exist(ctx, entry) and ctx.record.file_digest(choices.get("best_configs")) == choices.get("sha256")


MEMORY_KNOBS_STAGE = Stage(
    STAGE_NAME, f"tune-mss --study {KNOBS_STUDY} (admit_score too) and its test inference (the demo's row)",
    ("model.config", "model.postprocess", "data.root", "data.val_split", "data.test_root", "data.test_split",
     "scene_types", "mss"), run_memory_knobs, reset=reset_memory_knobs, complete=memory_knobs_complete)
