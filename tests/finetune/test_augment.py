"""Each augmentation keeps frames and masks aligned: geometry moves masks with the frames (the same move on every
frame), colour changes leave masks and geometry alone."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from masseg_search.config import AugmentationProbabilities
from masseg_search.finetune.augment import IMAGENET_MEAN, IMAGENET_STD, build_train_transforms

SIZE = 64
COLOURS = {1: (230, 30, 30), 2: (30, 30, 230)}
GEOMETRIC = ["hflip", "affine", "resize"]
COLOUR_ONLY = ["color_global", "color_per_frame", "grayscale"]


def _clip(frames: int = 3):
    """A clip of identical frames: an L-shaped red object 1 and a blue bar 2 on black (no symmetry to hide a flip)."""
    from training.utils.data_utils import Frame, Object, VideoDatapoint

    ids = np.zeros((SIZE, SIZE), np.uint8)
    ids[10:40, 8:18] = 1
    ids[30:40, 8:34] = 1
    ids[44:54, 36:60] = 2
    image = np.zeros((SIZE, SIZE, 3), np.uint8)
    for object_id, colour in COLOURS.items():
        image[ids == object_id] = colour
    clip = VideoDatapoint(frames=[], video_id=0, size=(SIZE, SIZE))
    for index in range(frames):
        objects = [Object(object_id=i, frame_index=index, segment=torch.from_numpy((ids == i).astype(np.uint8)))
                   for i in COLOURS]
        clip.frames.append(Frame(data=Image.fromarray(image), objects=objects))
    return clip, ids


def _only(name: str) -> AugmentationProbabilities:
    probabilities = {key: 0.0 for key in AugmentationProbabilities.model_fields}
    probabilities[name] = 1.0
    return AugmentationProbabilities(**probabilities)


def _run(name: str, seed: int):
    random.seed(seed)
    torch.manual_seed(seed)
    clip, ids = _clip()
    (chain,) = build_train_transforms(_only(name), SIZE)
    out = chain(clip)
    images = []
    for frame in out.frames:
        assert tuple(frame.data.shape) == (3, SIZE, SIZE)
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        images.append(((frame.data * std + mean) * 255).permute(1, 2, 0).numpy())
    masks = [np.stack([obj.segment.numpy() for obj in frame.objects]) for frame in out.frames]
    return images, masks, ids


def _colour_region(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.linalg.norm(image - np.array(colour, np.float32), axis=-1) < 90


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("name", GEOMETRIC)
@pytest.mark.parametrize("seed", [0, 1])
def test_geometric_augmentation_moves_masks_with_frames(name: str, seed: int) -> None:
    images, masks, ids = _run(name, seed)
    original = np.stack([ids == i for i in COLOURS]).astype(np.uint8)
    assert not np.array_equal(masks[0], original), "the augmentation did nothing"
    for image, frame_masks in zip(images, masks):
        for row, (object_id, colour) in enumerate(COLOURS.items()):
            mask = frame_masks[row].astype(bool)
            assert mask.sum() > 0
            assert _iou(mask, _colour_region(image, colour)) > 0.75, f"object {object_id} left its pixels"
    # frame-consistent: identical input frames stay identical, images and masks
    for image, frame_masks in zip(images[1:], masks[1:]):
        np.testing.assert_allclose(image, images[0], atol=1e-3)
        np.testing.assert_array_equal(frame_masks, masks[0])


@pytest.mark.parametrize("name", COLOUR_ONLY)
@pytest.mark.parametrize("seed", [0, 1])
def test_colour_augmentation_touches_colours_only(name: str, seed: int) -> None:
    images, masks, ids = _run(name, seed)
    original = np.stack([ids == i for i in COLOURS]).astype(np.uint8)
    for image, frame_masks in zip(images, masks):
        np.testing.assert_array_equal(frame_masks, original)  # masks untouched
        for object_id in (0, *COLOURS):  # each input colour region maps to one output colour: no pixel moved
            region = image[ids == object_id]
            assert np.abs(region - region[0]).max() < 1e-3
    if name == "color_global":  # one draw for the whole clip
        assert all(np.allclose(image, images[0], atol=1e-3) for image in images[1:])
        assert not np.allclose(images[0][ids == 1], COLOURS[1], atol=1)
    elif name == "color_per_frame":  # one draw per frame
        assert any(not np.allclose(image, images[0], atol=1e-3) for image in images[1:])
    else:  # grayscale at p=1: every frame grey
        for image in images:
            assert np.abs(image[..., 0] - image[..., 1]).max() < 1e-3 and np.abs(image[..., 1] - image[..., 2]).max() < 1e-3
