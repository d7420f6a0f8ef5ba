"""A tiny `run` config for the end-to-end tests: the tiny64 model, two one-epoch sweep trials, three MSS trials per
scene type, both views (imported by the test modules of this folder)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from masseg_search.data.layout import open_dataset


def tiny_values(data_root: Path | None, checkpoint: Path, **sections: Any) -> dict[str, Any]:
    """The tiny config as a dict; ``data_root`` None = a synthetic dataset made by the data stage under --out."""
    values: dict[str, Any] = {
        "model": {"config": "tiny64", "checkpoint": str(checkpoint), "device": "cpu"},
        "data": {"root": str(data_root), "synth": None} if data_root is not None else
        {"synth": {"videos": 8, "seed": 0, "height": 64, "width": 64, "frames": 8}},
        "scene_types": {"default": "regular", "types": [{"name": "crowded", "when": {"num_objects": {"min": 4}}}]},
        "train": {"lr": 3.0e-4, "vision_lr": None, "epochs": 1, "iterations_per_epoch": 2, "num_frames": 3,
                  "max_objects": 2, "val_videos": 2, "amp": False, "warmup_iterations": 0},
        "train_sweep": {"name": "tiny", "samples": 2, "space": {"lr": {"low": 1.0e-4, "high": 3.0e-4, "log": True}},
                        "cpus_per_trial": 1},
        "mss": {"trials": 3, "batch": 3, "cv_folds": 2, "bootstrap": 50, "feature_cache_mb": 64},
        "ensemble": {"flip": True, "trials": 2, "workers": 1},
        "pipeline": {"submission": "tiny", "report_overlays": False},
    }
    for section, entries in sections.items():
        values[section] = {**values.get(section, {}), **entries}
    return values


def write_config(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def first_frame_only_copy(dataset_root: Path, split: str, out: Path) -> Path:
    """The split's videos with the first frame's mask only (what MOSE valid gives): a root with no list file."""
    dataset = open_dataset(dataset_root, split=split)
    for name in dataset.video_names:
        video = dataset.video(name)
        shutil.copytree(video.image_dir, out / "JPEGImages" / name)
        first = video.annotation_paths()[0]
        (out / "Annotations" / name).mkdir(parents=True)
        shutil.copy2(first, out / "Annotations" / name / first.name)
    return out
