"""Clip augmentation: sam2's video transforms, each switched on with its own probability (MASSeg section 2.3).

Frame-consistent geometry (one draw for the whole clip, masks moved with the frames): horizontal flip, affine
rotation + shear, multi-scale resize (zoom in = resize up and crop, zoom out = resize down and pad). Colour only
(masks untouched): global colour jitter (one draw per clip), frame-inconsistent colour jitter (one draw per frame),
per-frame grayscale. Then the square resize to the model's input size, to-tensor and ImageNet normalisation.
sam2's transform classes do the work; what is ours is the probability wrapper and the zoom (sam2 has resize and
pad but no crop).
"""
from __future__ import annotations

import random
from typing import Any, Callable

import torchvision.transforms.functional as TF

from masseg_search.config import AugmentationProbabilities

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AFFINE_DEGREES = 25  # sam2.1 MOSE fine-tune yaml
AFFINE_SHEAR = 20
ZOOM_FACTORS = (0.75, 0.875, 1.125, 1.25)
GLOBAL_JITTER = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": None}
PER_FRAME_JITTER = {"brightness": 0.1, "contrast": 0.05, "saturation": 0.05, "hue": None}  # the yaml's values


class WithProbability:
    """Apply ``transform`` to the whole clip with probability ``p`` (sam2 transforms without their own ``p``)."""

    def __init__(self, transform: Callable, p: float):
        self.transform = transform
        self.p = p

    def __call__(self, datapoint: Any, **kwargs: Any) -> Any:
        if self.p > 0 and random.random() < self.p:
            return self.transform(datapoint, **kwargs)
        return datapoint

    def __repr__(self) -> str:
        return f"WithProbability(p={self.p}, {self.transform!r})"


class RandomZoom:
    """Multi-scale resize, the same for every frame: resize the (square) frame by a factor, then crop or pad back.

    Zooming in crops a random window (one window for the clip); zooming out pads right and bottom with black.
    Masks follow through sam2's ``resize`` / ``pad`` and the same crop window.
    """

    def __init__(self, image_size: int, factors: tuple[float, ...] = ZOOM_FACTORS):
        self.image_size = image_size
        self.factors = factors

    def __call__(self, datapoint: Any, **kwargs: Any) -> Any:
        from training.dataset.transforms import pad, resize

        size = self.image_size
        scaled = max(8, int(round(size * random.choice(self.factors))))
        offset = (random.randint(0, scaled - size), random.randint(0, scaled - size)) if scaled > size else (0, 0)
        for index, frame in enumerate(datapoint.frames):
            resize(datapoint, index, scaled, square=True)
            if scaled > size:
                top, left = offset
                frame.data = TF.crop(frame.data, top, left, size, size)
                for obj in frame.objects:
                    obj.segment = TF.crop(obj.segment, top, left, size, size)
                frame.size = (size, size)
            elif scaled < size:
                pad(datapoint, index, (0, 0, size - scaled, size - scaled))
        return datapoint


def build_train_transforms(probabilities: AugmentationProbabilities, image_size: int) -> list[Callable]:
    """The training transform chain (one sam2 ``ComposeAPI``), given each augmentation's probability."""
    from training.dataset import transforms as sam2_transforms

    steps: list[Callable] = [
        sam2_transforms.RandomHorizontalFlip(consistent_transform=True, p=probabilities.hflip),
        WithProbability(
            sam2_transforms.RandomAffine(degrees=AFFINE_DEGREES, shear=AFFINE_SHEAR, consistent_transform=True,
                                         image_interpolation="bilinear", num_tentatives=2, log_warning=False),
            probabilities.affine,
        ),
        sam2_transforms.RandomResizeAPI(sizes=image_size, square=True, consistent_transform=True),
        WithProbability(RandomZoom(image_size), probabilities.resize),
        WithProbability(sam2_transforms.ColorJitter(consistent_transform=True, **GLOBAL_JITTER),
                        probabilities.color_global),
        sam2_transforms.RandomGrayscale(consistent_transform=False, p=probabilities.grayscale),
        WithProbability(sam2_transforms.ColorJitter(consistent_transform=False, **PER_FRAME_JITTER),
                        probabilities.color_per_frame),
        sam2_transforms.ToTensorAPI(),
        sam2_transforms.NormalizeAPI(mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD)),
    ]
    return [sam2_transforms.ComposeAPI(steps)]
