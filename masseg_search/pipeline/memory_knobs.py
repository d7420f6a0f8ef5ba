"""The demo's "tuned per type, memory knobs" row: a second tune-mss study that searches one admission threshold
besides scale and bias, and its per-type inference on the test split.

Kept apart from the demo's other stages so it can move as one piece: the study ``val_knobs`` searches
``DEMO_KNOBS`` (ranges from ``mss.space`` where declared, else the built-in defaults, admit_score -2..2) on the
same validation split, checkpoint and scene types as ``val``, without the held-out folds (the demo's table scores
it on the test split, paired with "tuned per type" on the same objects).
"""
from __future__ import annotations

from pathlib import Path

from masseg_search.config import ProjectConfig
from masseg_search.inference.infer import run_inference
from masseg_search.mss.tune import tune_mss
from masseg_search.store.best_configs import BestConfigs, load_best_configs
from masseg_search.store.mss_results import MssResults

DEMO_KNOBS = ["scale", "bias", "admit_score"]
KNOBS_STUDY = "val_knobs"
ROW_NAME = "fine-tuned, tuned per type, memory knobs"
PREDICTIONS_DIR = "test_memory_knobs"  # under the demo's predictions/: its own per_type folder


def tune_memory_knobs(cfg: ProjectConfig, checkpoint: str, progress: bool) -> tuple[Path, BestConfigs]:
    """tune-mss --study val_knobs --knobs scale,bias,admit_score --cv 0 on the demo's validation split."""
    tuned = tune_mss(cfg, study=KNOBS_STUDY, checkpoint=checkpoint, cv=0, progress=progress, knobs=DEMO_KNOBS)
    path = MssResults(tuned.out_dir).best_configs
    return path, load_best_configs(path)


def infer_memory_knobs(cfg: ProjectConfig, checkpoint: str, best_configs: Path, data_root: Path, test_list: Path,
                       scene_types_csv: Path, predictions_root: Path, progress: bool) -> Path:
    """Each test object under its scene type's configuration from the knob study (``<root>/per_type``)."""
    out = predictions_root / PREDICTIONS_DIR
    run_inference(cfg.model.config, checkpoint, data_root, out, [], split_list=test_list, per_type=best_configs,
                  scene_types=scene_types_csv, device=cfg.model.device, progress=progress)
    return out
