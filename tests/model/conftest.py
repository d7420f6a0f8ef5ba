"""Hand-made synthetic videos for the engine tests: moving textured shapes, one object that vanishes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masseg_search.data.layout import write_mask


def make_video(root: Path, name: str, frames: int = 8, height: int = 64, width: int = 80, objects: int = 3,
               vanish_after: int | None = 3, seed: int = 0) -> Path:
    """Write ``root/JPEGImages/<name>/%05d.jpg`` and the first frame's ``Annotations`` PNG; return ``root``.

    Object k is a textured ellipse moving on a noisy background; the last object leaves the frame after
    ``vanish_after`` frames (when given).
    """
    rng = np.random.default_rng(seed)
    image_dir, annotation_dir = root / "JPEGImages" / name, root / "Annotations" / name
    image_dir.mkdir(parents=True, exist_ok=True)
    background = rng.integers(0, 90, size=(height, width, 3)).astype(np.float32)
    colors = rng.integers(120, 255, size=(objects, 3))
    starts = rng.uniform([0.25 * width, 0.25 * height], [0.75 * width, 0.75 * height], size=(objects, 2))
    velocity = rng.uniform(-2.5, 2.5, size=(objects, 2))
    radii = rng.uniform(0.08, 0.18, size=(objects, 2)) * np.array([width, height])
    yy, xx = np.mgrid[0:height, 0:width]
    for t in range(frames):
        image = background.copy()
        mask = np.zeros((height, width), np.uint8)
        for k in range(objects):
            cx, cy = starts[k] + velocity[k] * t
            if vanish_after is not None and k == objects - 1 and t > vanish_after:
                cx = -10 * width  # gone
            inside = ((xx - cx) / radii[k][0]) ** 2 + ((yy - cy) / radii[k][1]) ** 2 <= 1
            image[inside] = colors[k] + rng.normal(0, 8, size=(int(inside.sum()), 3))
            mask[inside] = k + 1
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(image_dir / f"{t:05d}.jpg", quality=95)
        if t == 0:
            write_mask(annotation_dir / f"{t:05d}.png", mask)
    return root


@pytest.fixture(scope="session")
def engine_videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small videos (3 and 2 objects, one vanishing) in a MOSE-layout root."""
    root = tmp_path_factory.mktemp("engine_videos")
    make_video(root, "v0", frames=8, objects=3, seed=1)
    make_video(root, "v1", frames=6, height=48, width=64, objects=2, vanish_after=2, seed=2)
    return root


def make_lively_checkpoint(source: Path, out: Path, seed: int = 0) -> Path:
    """A random checkpoint whose outputs are not degenerate, for parity tests.

    A freshly initialised SAM2 scores every tracked object as absent (the object-score head's output is its bias),
    so every mask would be empty and parity trivial. Here every float weight gets seeded noise and the object-score
    head is rescaled so objects come and go and the (scale, bias) configurations give different masks.
    """
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)["model"]
    generator = torch.Generator().manual_seed(seed)
    lively = {}
    for key, value in state.items():
        if value.is_floating_point():
            spread = float(value.float().std()) if value.numel() > 1 else 0.0
            value = value + torch.randn(value.shape, generator=generator) * (spread + 0.05)
        lively[key] = value
    head = "sam_mask_decoder.pred_obj_score_head.layers.2"
    lively[f"{head}.weight"] = lively[f"{head}.weight"] * 10
    lively[f"{head}.bias"] = torch.full_like(lively[f"{head}.bias"], 2.9)
    torch.save({"model": lively}, out)
    return out


@pytest.fixture(scope="session")
def lively_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny64 with non-degenerate random weights (see make_lively_checkpoint)."""
    from masseg_search.model.build import init_checkpoint

    folder = tmp_path_factory.mktemp("lively")
    return make_lively_checkpoint(init_checkpoint("tiny64", folder / "random.pt", seed=0), folder / "lively.pt")


@pytest.fixture(scope="session")
def video_writer():
    """``make_video`` for tests that write their own videos (conftest modules are not importable by name)."""
    return make_video
