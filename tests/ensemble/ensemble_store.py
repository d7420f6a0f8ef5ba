"""Stored predictions made with numpy from the synthetic ground truth, for the ensemble and submission tests."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from masseg_search.data import layout
from masseg_search.store import predictions as store

LOW_RES = 16  # stored logits are LOW_RES x LOW_RES for the 64 x 64 synthetic frames

LogitMaker = Callable[[np.ndarray, int, int], np.ndarray]  # (object GT (T, H, W) bool, object id, video index) -> (T, h, w)


def read_ground_truth(dataset_root: Path, video: str) -> tuple[list[str], np.ndarray]:
    """(frame names, (T, H, W) uint8 ids) of a synthetic video."""
    item = layout.open_dataset(dataset_root).video(video)
    return item.frame_names, np.stack([layout.read_mask(item.annotation_path(name)) for name in item.frame_names])


def clean_logits(gt_object: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """Logits whose upsampling follows the ground truth: area-downsampled coverage mapped to [-gain, gain]."""
    coverage = np.stack([cv2.resize(frame.astype(np.float32), (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA) for frame in gt_object])
    return (coverage * 2.0 - 1.0) * gain


def write_store(predictions_root: Path, dataset_root: Path, videos: list[str], makers: dict[str, LogitMaker]) -> Path:
    """One stored prediction per (config id, video), logits from ``makers[config](gt_object, object_id, video_index)``."""
    for index, video in enumerate(videos):
        names, gt = read_ground_truth(dataset_root, video)
        object_ids = sorted(int(i) for i in np.unique(gt[0]) if i not in (0, 255))
        for config, maker in makers.items():
            logits = {i: maker(gt == i, i, index).astype(np.float16) for i in object_ids}
            prediction = store.VideoPrediction(
                video=video, frame_names=names, height=gt.shape[1], width=gt.shape[2], object_ids=object_ids,
                first_frames={i: 0 for i in object_ids}, logits=logits,
                object_scores={i: np.ones(len(names), np.float32) for i in object_ids},
                scale=store.parse_config_id(config).scale, bias=store.parse_config_id(config).bias,
                view=store.config_view(config))
            store.save_video_prediction(predictions_root / config / video, prediction)
    return predictions_root
