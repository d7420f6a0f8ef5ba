"""Training clips from a MOSE-layout split, built on sam2's own dataset classes.

sam2's ``PNGRawDataset`` lists the videos and reads palette PNGs, ``RandomUniformSampler`` picks ``num_frames``
consecutive frames and up to ``max_objects`` objects visible in the first of them, ``VOSDataset`` loads them and
runs the transforms, and ``collate_fn`` makes the ``BatchedVideoDatapoint`` that ``SAM2Train`` eats. What is ours:
checking the split first (videos too short or not fully annotated are named, not silently retried), a sampler
that draws a fixed number of clips per epoch from a seeded generator, and the void label: sam2's palette loader
drops only 0, so the DAVIS / YouTube-VOS void value 255 (kept by the MOSE+ writer for evaluation) would become an
object to sample and supervise. :class:`VoidFreeVideos` drops it before sampling; void pixels then count as
background for every object (sam2's loss has no ignore region).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, RandomSampler

from masseg_search.data.layout import ANNOTATION_DIR, IMAGE_DIR, VOID_ID, Dataset, list_files, open_dataset
from masseg_search.errors import MassegError

log = logging.getLogger(__name__)


@dataclass
class ClipSplit:
    """The videos of a split that can give clips of ``num_frames`` frames, and those that cannot (with why)."""

    dataset: Dataset
    usable: list[str]
    skipped: dict[str, str]


def check_clip_split(data_root: str | Path, split: str, num_frames: int) -> ClipSplit:
    """Open ``split`` under ``data_root`` and keep the videos with >= ``num_frames`` JPEG frames, each annotated.

    sam2's loader reads ``*.jpg`` frames and needs a PNG for every sampled frame; a video that breaks either rule
    is skipped and named. No usable video at all is an error naming the split.
    """
    dataset = open_dataset(data_root, split=split)
    if dataset.image_root.name != IMAGE_DIR or dataset.annotation_root.name != ANNOTATION_DIR:
        raise MassegError(
            "training needs a MOSE layout (JPEGImages/<video>/, Annotations/<video>/), not a DAVIS resolution level",
            data_root,
            "convert the dataset to the MOSE layout (e.g. `masseg-search data`)",
        )
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for name in dataset.video_names:
        frames = [p for p in list_files(dataset.image_root / name, (".jpg",))]
        annotated = {p.stem for p in list_files(dataset.annotation_root / name, (".png",))}
        if len(frames) < num_frames:
            skipped[name] = f"{len(frames)} .jpg frames < num_frames={num_frames}"
        elif any(p.stem not in annotated for p in frames):
            skipped[name] = "not every frame has an annotation PNG"
        else:
            usable.append(name)
    if skipped:
        log.warning("%d of %d %s videos cannot give training clips (first: %s: %s)", len(skipped),
                    len(dataset.video_names), split, *next(iter(skipped.items())))
    if not usable:
        raise MassegError(
            f"no video of split {split!r} has {num_frames} fully annotated .jpg frames",
            data_root,
            "lower train.num_frames or point data.root / data.train_split at a fully annotated training split",
        )
    return ClipSplit(dataset, usable, skipped)


class VoidFreeSegments:
    """A sam2 segment loader whose frames never hold the void label (255) as an object."""

    def __init__(self, segment_loader: Any):
        self.segment_loader = segment_loader

    def load(self, frame_id: int) -> dict:
        """sam2's ``{object id: bool mask}`` of one frame, without the void entry."""
        return {obj: mask for obj, mask in self.segment_loader.load(frame_id).items() if int(obj) != VOID_ID}


class VoidFreeVideos:
    """A sam2 raw video dataset (``get_video``, ``len``) whose segment loaders drop the void label."""

    def __init__(self, raw_dataset: Any):
        self.raw_dataset = raw_dataset

    def get_video(self, index: int) -> tuple[Any, VoidFreeSegments]:
        """sam2's (video, segment loader) with the loader wrapped."""
        video, segment_loader = self.raw_dataset.get_video(index)
        return video, VoidFreeSegments(segment_loader)

    def __len__(self) -> int:
        return len(self.raw_dataset)


def build_clip_dataset(split: ClipSplit, num_frames: int, max_objects: int, transforms: list[Callable]):
    """sam2's ``VOSDataset`` over the usable videos: random consecutive clips, up to ``max_objects`` objects,
    never the void label."""
    from training.dataset.vos_dataset import VOSDataset
    from training.dataset.vos_raw_dataset import PNGRawDataset
    from training.dataset.vos_sampler import RandomUniformSampler

    raw = PNGRawDataset(img_folder=str(split.dataset.image_root), gt_folder=str(split.dataset.annotation_root),
                        file_list_txt=None)
    raw.video_names = list(split.usable)  # the checked subset, in split order
    sampler = RandomUniformSampler(num_frames=num_frames, max_num_objects=max_objects)
    return VOSDataset(transforms=transforms, training=True, video_dataset=VoidFreeVideos(raw), sampler=sampler,
                      multiplier=1)


def _seed_worker(worker_id: int) -> None:
    """sam2's sampler and transforms draw from ``random``: give each loader worker its own seeded stream."""
    random.seed(torch.initial_seed() % 2**32)


def clip_loader(dataset, clips_per_epoch: int, batch_size: int, seed: int, num_workers: int = 0) -> DataLoader:
    """A loader giving ``clips_per_epoch`` clips (drawn with replacement, seeded) as ``BatchedVideoDatapoint`` s."""
    from training.utils.data_utils import collate_fn

    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(dataset, replacement=True, num_samples=clips_per_epoch * batch_size, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=partial(collate_fn, dict_key="all"),
        worker_init_fn=_seed_worker,
        drop_last=True,
    )
