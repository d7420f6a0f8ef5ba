"""Void pixels (255, kept by the MOSE+ writer from DAVIS / YouTube-VOS) are never a training object."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masseg_search.data.layout import VOID_ID, write_mask, write_split_list
from masseg_search.finetune.clips import VoidFreeVideos, build_clip_dataset, check_clip_split

FRAMES, HEIGHT, WIDTH = 6, 32, 40


def _void_root(root: Path) -> Path:
    """Two videos with a void band in every frame; in ``late`` the only object appears at frame 3, so clips that
    start earlier show nothing but void in their first frame."""
    rng = np.random.default_rng(0)
    for name, first_object_frame in (("early", 0), ("late", 3)):
        for t in range(FRAMES):
            image = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
            (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "JPEGImages" / name / f"{t:05d}.jpg")
            mask = np.zeros((HEIGHT, WIDTH), np.uint8)
            mask[:, :6] = VOID_ID  # a void band (DAVIS's "don't care" border)
            if t >= first_object_frame:
                mask[10:20, 12 + t:24 + t] = 1
                mask[22:28, 30:36] = 2
            write_mask(root / "Annotations" / name / f"{t:05d}.png", mask)
    write_split_list(root / "train.txt", ["early", "late"])
    return root


@pytest.fixture()
def void_root(tmp_path: Path) -> Path:
    return _void_root(tmp_path / "root")


def test_sam2s_own_loader_would_sample_the_void_label(void_root: Path) -> None:
    """The fixture exercises the bug: sam2's palette loader keeps 255 as an object."""
    from training.dataset.vos_raw_dataset import PNGRawDataset
    from training.dataset.vos_sampler import RandomUniformSampler

    raw = PNGRawDataset(img_folder=str(void_root / "JPEGImages"), gt_folder=str(void_root / "Annotations"))
    raw.video_names = ["late"]
    sampler = RandomUniformSampler(num_frames=3, max_num_objects=3)
    random.seed(0)
    picked = {int(i) for _ in range(20) for i in sampler.sample(*raw.get_video(0)).object_ids}
    assert VOID_ID in picked


def test_void_is_never_sampled_nor_supervised(void_root: Path) -> None:
    split = check_clip_split(void_root, "train", 3)
    assert split.usable == ["early", "late"]
    dataset = build_clip_dataset(split, num_frames=3, max_objects=3, transforms=[])
    assert isinstance(dataset.video_dataset, VoidFreeVideos)
    random.seed(0)
    seen: set[int] = set()
    for index in [0, 1] * 15:
        datapoint = dataset[index]
        for frame in datapoint.frames:
            for obj in frame.objects:
                seen.add(int(obj.object_id))
                segment = obj.segment.numpy().astype(bool)
                assert not segment[:, :6].any(), "a void pixel was supervised as an object"
    assert seen == {1, 2}


def test_void_free_loader_keeps_every_object(void_root: Path) -> None:
    from training.dataset.vos_raw_dataset import PNGRawDataset

    raw = PNGRawDataset(img_folder=str(void_root / "JPEGImages"), gt_folder=str(void_root / "Annotations"))
    raw.video_names = ["early"]
    plain = raw.get_video(0)[1].load(2)
    cleaned = VoidFreeVideos(raw).get_video(0)[1].load(2)
    assert sorted(int(k) for k in plain) == [1, 2, VOID_ID]
    assert sorted(int(k) for k in cleaned) == [1, 2]
    for key, mask in cleaned.items():
        assert np.array_equal(mask.numpy(), plain[key].numpy())
