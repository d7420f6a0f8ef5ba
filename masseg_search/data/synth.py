"""Synthetic MOSE-like videos: textured moving backgrounds, objects that occlude, vanish and come back.

Every video is drawn from its own random generator (``seed``, video index), so a dataset is the same for a seed
whatever the worker count, and an interrupted run resumes where it stopped. Scene kinds:

- ``regular`` (about half): 1-3 medium, differently coloured objects moving smoothly; learnable in minutes.
- ``small``: 1-3 objects, at least one below 0.5% of the frame.
- ``crowded``: 5-10 objects of a few colours that overlap and occlude each other.
- ``lookalike``: 2-4 objects of the same shape, colour and texture.
- ``occlusion``: a static pillar of scenery (background, id 0) that one object passes fully behind, so it
  disappears and reappears; the others may pass behind it too.

Objects are sprites (an ellipse, rectangle or blob with a colour and a stripe or spot texture) pasted back to
front, so the ground truth id of a pixel is its front-most object. Every object is visible in frame 0 (the
evaluation rule). Per video, ``metadata/<video>.json`` records the kind, background, objects (shape, colour, sizes,
motion), and the events measured on the ground truth (disappear / reappear frames, least visible fraction).
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from masseg_search.config import ProjectConfig
from masseg_search.data.layout import (
    ANNOTATION_DIR,
    IMAGE_DIR,
    atomic_write_bytes,
    encode_mask_png,
    write_split_list,
)
from masseg_search.errors import MassegError

KINDS = ("regular", "small", "crowded", "lookalike", "occlusion")
# Share of the videos per hard kind; ``regular`` takes the rest (about half).
HARD_KIND_SHARES = {"small": 0.15, "crowded": 0.125, "lookalike": 0.125, "occlusion": 0.10}
DEFAULT_SPLITS = {"train": 0.5, "val": 0.25, "test": 0.25}
SMALL_AREA_FRACTION = 0.005
METADATA_DIR = "metadata"
SUMMARY_FILE = "synth.json"
GENERATOR_VERSION = 1
JPEG_QUALITY = 90
_MIN_OBJECT_PIXELS = 9


@dataclass
class _Sprite:
    """One object: its mask and colours at scale 1, and its trajectory (centre and scale per frame)."""

    object_id: int
    shape: str
    color: tuple[int, int, int]
    group: int
    mask: np.ndarray  # (h, w) bool
    rgb: np.ndarray  # (h, w, 3) uint8
    cx: np.ndarray  # (T,) float centre x
    cy: np.ndarray  # (T,) float centre y
    scale: np.ndarray  # (T,) float
    motion: str


# ----------------------------------------------------------------------------------------------------------------
# Background


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int, channels: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid_h = max(2, cells)
    grid_w = max(2, int(round(cells * width / max(height, 1))))
    grid = rng.random((grid_h, grid_w, channels), dtype=np.float32)
    field = cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    if field.ndim == 2:
        field = field[:, :, None]
    return np.clip(field, 0.0, 1.0)


def _hsv_to_rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    """One HSV colour (all in 0..1) as an RGB uint8 triple."""
    pixel = np.array([[[hue * 179.0, saturation * 255.0, value * 255.0]]], dtype=np.float32).astype(np.uint8)
    red, green, blue = cv2.cvtColor(pixel, cv2.COLOR_HSV2RGB)[0, 0]
    return int(red), int(green), int(blue)


def _make_background(rng: np.random.Generator, height: int, width: int, pad: int, textured: bool) -> tuple[np.ndarray, dict]:
    """A muted colour field larger than the frame (for panning), with stripes and static clutter when textured."""
    big_h, big_w = height + 2 * pad, width + 2 * pad
    base = np.array(_hsv_to_rgb(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.7)), dtype=np.float32)
    field = _smooth_noise(rng, big_h, big_w, int(rng.integers(3, 7)), 3) - 0.5
    image = base[None, None, :] + field * rng.uniform(40, 80)
    info: dict[str, Any] = {"textured": bool(textured), "base_color": [int(c) for c in base]}
    if textured:
        period = rng.uniform(0.04, 0.12) * max(height, width)
        angle = rng.uniform(0, math.pi)
        ys, xs = np.mgrid[0:big_h, 0:big_w].astype(np.float32)
        stripes = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * (2 * math.pi / period))
        grain = _smooth_noise(rng, big_h, big_w, max(8, min(big_h, big_w) // 6), 1)[:, :, 0] - 0.5
        image += (stripes * rng.uniform(10, 22) + grain * rng.uniform(20, 45))[:, :, None]
        clutter = int(rng.integers(4, 12))
        for _ in range(clutter):
            center = (int(rng.integers(0, big_w)), int(rng.integers(0, big_h)))
            axes = (int(rng.uniform(0.02, 0.08) * big_w) + 1, int(rng.uniform(0.02, 0.08) * big_h) + 1)
            shade = base + rng.uniform(-45, 45, size=3)
            cv2.ellipse(image, center, axes, float(rng.uniform(0, 180)), 0, 360, shade.tolist(), -1)
        info.update(stripe_period=round(float(period), 2), clutter_blobs=clutter)
    return np.clip(image, 0, 255).astype(np.uint8), info


# ----------------------------------------------------------------------------------------------------------------
# Objects


def _sprite_shape(rng: np.random.Generator, shape: str, box_h: int, box_w: int) -> np.ndarray:
    """A filled shape inside a (box_h, box_w) box, as a bool mask."""
    canvas = np.zeros((box_h, box_w), dtype=np.uint8)
    center = ((box_w - 1) / 2.0, (box_h - 1) / 2.0)
    if shape == "ellipse" or min(box_h, box_w) < 5:
        cv2.ellipse(canvas, (int(round(center[0])), int(round(center[1]))), (max(1, box_w // 2), max(1, box_h // 2)), 0, 0, 360, 1, -1)
    elif shape == "rectangle":
        inset_h, inset_w = max(0, box_h // 10), max(0, box_w // 10)
        canvas[inset_h : box_h - inset_h, inset_w : box_w - inset_w] = 1
    else:  # blob: a star-shaped polygon with smooth random radii
        count = 16
        angles = np.linspace(0, 2 * math.pi, count, endpoint=False)
        radii = 0.75 + 0.25 * np.cos(angles * int(rng.integers(2, 4)) + rng.uniform(0, 2 * math.pi))
        radii = radii / radii.max()
        points = np.stack([center[0] + np.cos(angles) * radii * box_w / 2, center[1] + np.sin(angles) * radii * box_h / 2], 1)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    if not canvas.any():
        canvas[box_h // 2, box_w // 2] = 1
    return canvas.astype(bool)


def _sprite_texture(rng: np.random.Generator, color: tuple[int, int, int], box_h: int, box_w: int, pattern: str, pattern_seed: int) -> np.ndarray:
    """The object's colours: a base colour with stripes or spots of a darker shade (same pattern_seed = same look)."""
    local = np.random.default_rng(pattern_seed)
    base = np.array(color, dtype=np.float32)
    ys, xs = np.mgrid[0:box_h, 0:box_w].astype(np.float32)
    if pattern == "stripes":
        period = max(3.0, local.uniform(0.2, 0.4) * max(box_h, box_w))
        angle = local.uniform(0, math.pi)
        wave = (np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period) > 0).astype(np.float32)
    else:  # spots: thresholded smooth noise
        wave = (_smooth_noise(local, box_h, box_w, 4, 1)[:, :, 0] > 0.6).astype(np.float32)
    shade = 0.55 + 0.45 * (1.0 - wave)
    # A soft vertical light gradient makes it look solid.
    light = 0.85 + 0.3 * (1.0 - ys / max(box_h - 1, 1))
    rgb = base[None, None, :] * (shade * light)[:, :, None]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _reflect(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Fold positions into [low, high] as if bouncing off the walls (a triangle wave, continuous)."""
    if high <= low:
        return np.full_like(values, (low + high) / 2.0)
    span = high - low
    phase = np.mod(values - low, 2 * span)
    return low + np.where(phase > span, 2 * span - phase, phase)


def _trajectory(rng: np.random.Generator, frames: int, height: int, width: int, box_h: int, box_w: int, speed: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth path: drift plus a slow wobble, bounced inside the frame; a gentle scale breathing."""
    t = np.arange(frames, dtype=np.float64)
    low_x, high_x = box_w / 2.0, width - box_w / 2.0
    low_y, high_y = box_h / 2.0, height - box_h / 2.0
    start_x = rng.uniform(low_x, max(low_x, high_x))
    start_y = rng.uniform(low_y, max(low_y, high_y))
    heading = rng.uniform(0, 2 * math.pi)
    step = speed * min(height, width)
    wobble = rng.uniform(0.0, 0.5) * step * 3
    omega, phase = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * math.pi)
    cx = _reflect(start_x + math.cos(heading) * step * t + wobble * np.sin(omega * t + phase), low_x, high_x)
    cy = _reflect(start_y + math.sin(heading) * step * t + wobble * np.cos(omega * t + phase), low_y, high_y)
    scale = 1.0 + rng.uniform(0.0, 0.12) * np.sin(rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * math.pi))
    return cx, cy, scale


def _area_range(kind: str, role: str) -> tuple[float, float]:
    """Object area as a fraction of the frame, by scene kind and the object's role."""
    if role == "small":
        return 0.0012, 0.0045
    return {
        "regular": (0.02, 0.10),
        "small": (0.008, 0.04),
        "crowded": (0.006, 0.025),
        "lookalike": (0.015, 0.05),
        "occlusion": (0.015, 0.05),
    }[kind]


def _object_plan(rng: np.random.Generator, kind: str) -> list[dict[str, Any]]:
    """Roles, colour groups and looks of the objects of one video."""
    if kind == "regular":
        count = int(rng.integers(1, 4))
    elif kind == "small":
        count = int(rng.integers(1, 4))
    elif kind == "crowded":
        count = int(rng.integers(5, 11))
    elif kind == "lookalike":
        count = int(rng.integers(2, 5))
    else:
        count = int(rng.integers(2, 4))
    hue0 = rng.random()
    shapes = ("ellipse", "rectangle", "blob")
    patterns = ("stripes", "spots")
    if kind == "lookalike":
        groups = [0] * count
    elif kind == "crowded":
        group_count = int(rng.integers(2, 4))
        groups = [index % group_count for index in range(count)]
    else:
        groups = list(range(count))
    group_count = max(groups) + 1
    looks = []
    for group in range(group_count):
        hue = (hue0 + group / group_count + rng.uniform(-0.04, 0.04)) % 1.0
        looks.append(
            {
                "color": _hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0)),
                "shape": shapes[int(rng.integers(0, 3))],
                "pattern": patterns[int(rng.integers(0, 2))],
                "pattern_seed": int(rng.integers(0, 2**31)),
                "aspect": rng.uniform(0.6, 1.6),
            }
        )
    small_count = int(rng.integers(1, count + 1)) if kind == "small" else 0
    plan = []
    for index in range(count):
        role = "small" if index < small_count else "normal"
        plan.append({"role": role, "group": groups[index], **looks[groups[index]]})
    return plan


def _build_sprite(rng: np.random.Generator, object_id: int, spec: dict[str, Any], kind: str, frames: int, height: int, width: int, area_fraction: float) -> _Sprite:
    """A sprite of about ``area_fraction`` of the frame, with its texture and a path."""
    area = max(_MIN_OBJECT_PIXELS, area_fraction * height * width)
    aspect = spec["aspect"] * rng.uniform(0.9, 1.1)
    fill = {"ellipse": math.pi / 4, "rectangle": 0.64, "blob": 0.6}[spec["shape"]]
    box_w = max(3, int(round(math.sqrt(area / fill * aspect))))
    box_h = max(3, int(round(math.sqrt(area / fill / aspect))))
    box_w, box_h = min(box_w, width - 2), min(box_h, height - 2)
    mask = _sprite_shape(rng, spec["shape"], box_h, box_w)
    rgb = _sprite_texture(rng, spec["color"], box_h, box_w, spec["pattern"], spec["pattern_seed"])
    speed = rng.uniform(0.01, 0.03) if spec["role"] == "normal" else rng.uniform(0.005, 0.02)
    cx, cy, scale = _trajectory(rng, frames, height, width, box_h, box_w, speed)
    return _Sprite(object_id, spec["shape"], spec["color"], spec["group"], mask, rgb, cx, cy, scale, "drift")


def _paste(image: np.ndarray, ids: np.ndarray, sprite: _Sprite, frame: int) -> None:
    """Draw ``sprite`` at its frame position (clipped to the frame); its pixels take its id."""
    mask, rgb = sprite.mask, sprite.rgb
    scale = float(sprite.scale[frame])
    if abs(scale - 1.0) > 0.02:
        new_w = max(1, int(round(mask.shape[1] * scale)))
        new_h = max(1, int(round(mask.shape[0] * scale)))
        mask = cv2.resize(mask.view(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST).astype(bool)
        rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    box_h, box_w = mask.shape
    top = int(round(sprite.cy[frame] - box_h / 2.0))
    left = int(round(sprite.cx[frame] - box_w / 2.0))
    height, width = ids.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + box_h, height), min(left + box_w, width)
    if y1 <= y0 or x1 <= x0:
        return
    part = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    np.copyto(image[y0:y1, x0:x1], rgb[y0 - top : y1 - top, x0 - left : x1 - left], where=part[:, :, None])
    ids[y0:y1, x0:x1][part] = sprite.object_id


@dataclass
class _Pillar:
    """Static scenery in front of the objects (ground truth 0): objects behind it are hidden."""

    left: int
    right: int
    rgb: np.ndarray  # (H, right-left, 3)


def _make_pillar(rng: np.random.Generator, height: int, left: int, right: int) -> _Pillar:
    shade = np.array(_hsv_to_rgb(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.4), rng.uniform(0.25, 0.45)), np.float32)
    width = right - left
    xs = np.linspace(-1, 1, max(width, 1), dtype=np.float32)
    grain = _smooth_noise(rng, height, max(width, 1), max(4, height // 8), 1)[:, :, 0] - 0.5
    rgb = shade[None, None, :] * (1.0 - 0.35 * xs[None, :, None] ** 2) + grain[:, :, None] * 30
    return _Pillar(left, right, np.clip(rgb, 0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------------------------------
# One video


def _render(background: np.ndarray, pan: tuple[np.ndarray, np.ndarray], sprites: list[_Sprite], pillar: _Pillar | None, frame: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``frame``: the panned background, the sprites back to front, then the pillar."""
    off_y, off_x = int(pan[0][frame]), int(pan[1][frame])
    image = background[off_y : off_y + height, off_x : off_x + width].copy()
    ids = np.zeros((height, width), dtype=np.uint8)
    for sprite in sprites:
        _paste(image, ids, sprite, frame)
    if pillar is not None:
        image[:, pillar.left : pillar.right] = pillar.rgb
        ids[:, pillar.left : pillar.right] = 0
    return image, ids


def _place_occlusion_target(rng: np.random.Generator, sprite: _Sprite, frames: int, height: int, width: int) -> _Pillar:
    """Move ``sprite`` straight across the frame behind a pillar twice its width: hidden mid-video, back by the end."""
    box_h, box_w = sprite.mask.shape
    sprite.scale[:] = 1.0
    pillar_width = 2 * box_w
    margin = max(1, box_w // 4)
    span = 4 * box_w + 2 * margin  # start's left edge to end's right edge
    pillar_left = max(0, (width - span) // 2) + margin + box_w
    pillar_right = pillar_left + pillar_width
    start = pillar_left - margin - box_w / 2.0
    end = pillar_right + margin + box_w / 2.0
    t = np.linspace(0.0, 1.0, frames)
    path = start + (end - start) * t
    if rng.random() < 0.5:
        path = width - path
        pillar_left, pillar_right = width - pillar_right, width - pillar_left
    sprite.cx = path
    sprite.cy = np.full(frames, rng.uniform(box_h / 2.0, height - box_h / 2.0)) + np.sin(t * math.pi) * rng.uniform(-0.05, 0.05) * height
    sprite.cy = np.clip(sprite.cy, box_h / 2.0, height - box_h / 2.0)
    sprite.motion = "crosses behind the pillar"
    return _make_pillar(rng, height, int(pillar_left), int(pillar_right))


def _events(visible: np.ndarray) -> list[dict[str, Any]]:
    """Disappear / reappear frames from per-frame visible pixel counts."""
    events = []
    for frame in range(1, len(visible)):
        if visible[frame - 1] > 0 and visible[frame] == 0:
            events.append({"frame": frame, "event": "disappears"})
        elif visible[frame - 1] == 0 and visible[frame] > 0:
            events.append({"frame": frame, "event": "reappears"})
    return events


@dataclass
class _Scene:
    """Everything needed to render any frame of a video."""

    background: np.ndarray
    pan_y: np.ndarray
    pan_x: np.ndarray
    sprites: list[_Sprite]  # back to front
    pillar: _Pillar | None
    background_info: dict[str, Any]

    def render(self, frame: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        return _render(self.background, (self.pan_y, self.pan_x), self.sprites, self.pillar, frame, height, width)


def _build_scene(rng: np.random.Generator, kind: str, height: int, width: int, frames: int) -> _Scene:
    """Background with its camera pan, the objects with their paths, the pillar of an occlusion video."""
    pad = max(4, int(0.08 * max(height, width)))
    textured = bool(rng.random() < (0.8 if kind in ("crowded", "lookalike", "small") else 0.5))
    background, background_info = _make_background(rng, height, width, pad, textured)
    t = np.arange(frames)
    pan_amplitude = rng.uniform(0.0, pad * 0.9)
    pan_omega, pan_phase = rng.uniform(0.05, 0.25), rng.uniform(0, 2 * math.pi)
    pan_x = np.clip(np.round(pad + pan_amplitude * np.sin(pan_omega * t + pan_phase)), 0, 2 * pad).astype(int)
    pan_y = np.clip(np.round(pad + 0.5 * pan_amplitude * np.cos(pan_omega * t + pan_phase)), 0, 2 * pad).astype(int)
    background_info["pan_amplitude_px"] = round(float(pan_amplitude), 2)

    plan = _object_plan(rng, kind)
    sprites: list[_Sprite] = []
    for object_id, spec in enumerate(plan, start=1):
        low, high = _area_range(kind, spec["role"])
        fraction = math.exp(rng.uniform(math.log(low), math.log(high)))
        if kind == "lookalike" and sprites:
            fraction = sprites[0].mask.sum() / (height * width) * rng.uniform(0.85, 1.15)
        sprites.append(_build_sprite(rng, object_id, spec, kind, frames, height, width, fraction))
    scene = _Scene(background, pan_y, pan_x, sprites, None, background_info)
    target = None
    if kind == "occlusion" and frames >= 4:
        target = sprites[0]
        fraction = target.mask.sum() / (height * width)
        for _ in range(10):  # the pillar (2w) and the crossing (4.5w) must fit in the frame: shrink to fit
            if target.mask.shape[1] * 5 <= width:
                break
            fraction *= 0.7
            target = _build_sprite(rng, 1, plan[0], kind, frames, height, width, fraction)
        scene.pillar = _place_occlusion_target(rng, target, frames, height, width)
        scene.sprites = sprites[1:] + [target]  # drawn last of the objects: nothing covers it but the pillar

    # Every object must be visible in frame 0: move the others until at least 40% of each shows.
    for _ in range(30):
        _, first_ids = scene.render(0, height, width)
        counts = np.bincount(first_ids.ravel(), minlength=len(scene.sprites) + 1)
        hidden = [s for s in scene.sprites if counts[s.object_id] < 0.4 * s.mask.sum() and s is not target]
        if not hidden:
            break
        for sprite in hidden:
            box_h, box_w = sprite.mask.shape
            shift_x = rng.uniform(box_w / 2.0, width - box_w / 2.0) - sprite.cx[0]
            shift_y = rng.uniform(box_h / 2.0, height - box_h / 2.0) - sprite.cy[0]
            sprite.cx = _reflect(sprite.cx + shift_x, box_w / 2.0, width - box_w / 2.0)
            sprite.cy = _reflect(sprite.cy + shift_y, box_h / 2.0, height - box_h / 2.0)
    return scene


def _describe_objects(sprites: list[_Sprite], masks: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per object: look, sizes and the events measured on the ground truth."""
    pixels = float(masks[0].size)
    counts = np.stack([np.bincount(m.ravel(), minlength=256) for m in masks])  # (T, 256)
    objects = []
    for sprite in sorted(sprites, key=lambda s: s.object_id):
        visible = counts[:, sprite.object_id]
        full = float(sprite.mask.sum())
        objects.append(
            {
                "id": sprite.object_id,
                "shape": sprite.shape,
                "color": list(sprite.color),
                "lookalike_group": sprite.group,
                "sprite_pixels": int(full),
                "area_fraction_first_frame": float(visible[0]) / pixels,
                "mean_area_fraction": float(visible.mean()) / pixels,
                "small": bool(visible[0] / pixels < SMALL_AREA_FRACTION),
                "motion": sprite.motion,
                # least visible pixels over the sprite's unscaled pixels: < 1 = occluded or cut by the frame edge
                "min_visible_fraction": round(float(visible.min() / full), 4),
                "visible_frames": int((visible > 0).sum()),
                "events": _events(visible),
            }
        )
    return objects


def generate_video(name: str, kind: str, seed: int, index: int, height: int, width: int, frames: int) -> tuple[list[np.ndarray], list[np.ndarray], dict[str, Any]]:
    """Draw one video in memory: (RGB frames, id masks, metadata). Deterministic for (seed, index)."""
    if kind not in KINDS:
        raise MassegError(f"unknown scene kind {kind!r}", None, f"use one of {', '.join(KINDS)}")
    rng = np.random.default_rng([seed, index, GENERATOR_VERSION])
    scene = _build_scene(rng, kind, height, width, frames)
    images, masks = [], []
    for frame in range(frames):
        image, ids = scene.render(frame, height, width)
        images.append(image)
        masks.append(ids)
    sprites = scene.sprites
    absent = [s.object_id for s in sprites if not (masks[0] == s.object_id).any()]
    if absent:  # the placement loop failed (a frame too small for this many objects): drop them, renumber
        keep = sorted((s for s in sprites if s.object_id not in absent), key=lambda s: s.object_id)
        lookup = np.zeros(256, dtype=np.uint8)
        for new_id, sprite in enumerate(keep, start=1):
            lookup[sprite.object_id] = new_id
            sprite.object_id = new_id
        masks = [lookup[m] for m in masks]
        sprites = keep
    pillar = scene.pillar
    metadata = {
        "video": name,
        "kind": kind,
        "height": height,
        "width": width,
        "frames": frames,
        "seed": seed,
        "index": index,
        "generator_version": GENERATOR_VERSION,
        "background": scene.background_info,
        "occluder": None if pillar is None else {"kind": "pillar", "left": pillar.left, "right": pillar.right},
        "num_objects": len(sprites),
        "objects": _describe_objects(sprites, masks),
    }
    return images, masks, metadata


# ----------------------------------------------------------------------------------------------------------------
# Dataset


def assign_kinds(videos: int, seed: int) -> list[str]:
    """The scene kind of each video: about half regular, each hard kind at least once from 5 videos on."""
    counts = {}
    for kind, share in HARD_KIND_SHARES.items():
        counts[kind] = max(1, int(round(share * videos))) if videos >= 5 else 0
    if videos < 5:  # tiny sets: regular first, then the hard kinds in order
        kinds = (["regular"] + list(HARD_KIND_SHARES))[: videos]
        return kinds
    counts["regular"] = videos - sum(counts.values())
    pool = [kind for kind in KINDS for _ in range(counts[kind])]
    order = np.random.default_rng([seed, 7919]).permutation(len(pool))
    return [pool[i] for i in order]


def assign_splits(kinds: list[str], splits: dict[str, float]) -> list[str]:
    """Split of each video, stratified by kind: each split gets its share of every kind (largest deficit first)."""
    total = sum(splits.values())
    if total <= 0 or any(share < 0 for share in splits.values()):
        raise MassegError(f"split shares must be non-negative and not all zero, got {splits}", None, "e.g. --splits train=0.5,val=0.25,test=0.25")
    shares = {name: share / total for name, share in splits.items()}
    assigned: dict[str, int] = {name: 0 for name in shares}
    result = [""] * len(kinds)
    # Walk the videos kind by kind so each kind is spread across the splits in proportion.
    order = sorted(range(len(kinds)), key=lambda i: (KINDS.index(kinds[i]), i))
    for done, index in enumerate(order, start=1):
        name = max(shares, key=lambda n: (shares[n] * done - assigned[n], shares[n]))
        assigned[name] += 1
        result[index] = name
    return result


def _video_name(index: int) -> str:
    return f"video_{index:04d}"


def _write_video(root: Path, name: str, kind: str, split: str, seed: int, index: int, height: int, width: int, frames: int) -> dict[str, Any]:
    """Render one video into a temporary folder, move it into place, then write its metadata (the done mark)."""
    images, masks, metadata = generate_video(name, kind, seed, index, height, width, frames)
    metadata["split"] = split
    staging = root / ".synth-staging" / name
    if staging.exists():
        shutil.rmtree(staging)
    (staging / IMAGE_DIR).mkdir(parents=True)
    (staging / ANNOTATION_DIR).mkdir(parents=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    for frame, (image, mask) in enumerate(zip(images, masks)):
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
        if not ok:
            raise MassegError("OpenCV could not encode a JPEG frame", staging, "check the OpenCV install")
        (staging / IMAGE_DIR / f"{frame:05d}.jpg").write_bytes(encoded.tobytes())
        (staging / ANNOTATION_DIR / f"{frame:05d}.png").write_bytes(encode_mask_png(mask))
    for sub in (IMAGE_DIR, ANNOTATION_DIR):
        target = root / sub / name
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / sub, target)
    shutil.rmtree(staging)
    atomic_write_bytes(root / METADATA_DIR / f"{name}.json", json.dumps(metadata, indent=1).encode())
    return metadata


def _write_video_job(job: tuple) -> dict[str, Any]:
    return _write_video(*job)


def _is_done(root: Path, name: str, expected: dict[str, Any]) -> bool:
    path = root / METADATA_DIR / f"{name}.json"
    if not path.is_file() or not (root / IMAGE_DIR / name).is_dir() or not (root / ANNOTATION_DIR / name).is_dir():
        return False
    try:
        metadata = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all(metadata.get(key) == value for key, value in expected.items())


def generate_dataset(
    root: str | Path,
    videos: int = 40,
    seed: int = 0,
    height: int = 128,
    width: int = 128,
    frames: int = 12,
    splits: dict[str, float] | None = None,
    workers: int = 1,
    progress: bool = False,
) -> Path:
    """Write a synthetic MOSE-layout dataset to ``root`` and return ``root``.

    Layout: ``JPEGImages/<video>/<frame>.jpg``, ``Annotations/<video>/<frame>.png`` (every frame annotated),
    ``<split>.txt`` list files at the root (default train/val/test = 0.5/0.25/0.25, stratified by scene kind),
    ``metadata/<video>.json`` per video and ``synth.json`` (parameters and a per-video summary). Rerunning with the
    same parameters resumes (finished videos are kept); different parameters on the same root are an error.
    """
    if videos < 1 or frames < 2 or height < 16 or width < 16:
        raise MassegError(
            f"need videos >= 1, frames >= 2 and a frame of at least 16x16 (got videos={videos}, frames={frames}, {height}x{width})",
            root,
            "pass larger --videos/--frames/--height/--width",
        )
    root = Path(root)
    splits = dict(splits or DEFAULT_SPLITS)
    parameters = {"videos": videos, "seed": seed, "height": height, "width": width, "frames": frames, "splits": splits, "generator_version": GENERATOR_VERSION}
    summary_path = root / SUMMARY_FILE
    if summary_path.is_file():
        try:
            previous = json.loads(summary_path.read_text()).get("parameters")
        except json.JSONDecodeError:
            previous = None
        if previous != parameters:
            raise MassegError(
                f"a synthetic dataset with other parameters is already here ({previous})",
                root,
                "use another --out folder, or delete this one to regenerate",
            )
    elif root.is_dir() and any(p for p in root.iterdir() if p.name not in (".synth-staging", IMAGE_DIR, ANNOTATION_DIR, METADATA_DIR)):
        raise MassegError("the output folder exists and is not a synthetic dataset", root, "pass an empty or new --out folder")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(summary_path, json.dumps({"parameters": parameters, "complete": False}, indent=1).encode())

    kinds = assign_kinds(videos, seed)
    split_of = assign_splits(kinds, splits)
    names = [_video_name(index) for index in range(videos)]
    jobs = []
    for index, name in enumerate(names):
        expected = {"kind": kinds[index], "seed": seed, "height": height, "width": width, "frames": frames, "split": split_of[index], "generator_version": GENERATOR_VERSION}
        if not _is_done(root, name, expected):
            jobs.append((root, name, kinds[index], split_of[index], seed, index, height, width, frames))
    if jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="synth videos", unit="video", disable=not progress)
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(_write_video_job, jobs):
                    bar.update()
        else:
            for job in jobs:
                _write_video_job(job)
                bar.update()
        bar.close()
    shutil.rmtree(root / ".synth-staging", ignore_errors=True)
    for split in splits:
        write_split_list(root / f"{split}.txt", [name for name, s in zip(names, split_of) if s == split])
    table = []
    for name in names:
        metadata = json.loads((root / METADATA_DIR / f"{name}.json").read_text())
        table.append(
            {
                "video": name,
                "kind": metadata["kind"],
                "split": metadata["split"],
                "num_objects": metadata["num_objects"],
                "small_objects": sum(o["small"] for o in metadata["objects"]),
                "events": sum(len(o["events"]) for o in metadata["objects"]),
            }
        )
    atomic_write_bytes(summary_path, json.dumps({"parameters": parameters, "complete": True, "videos": table}, indent=1).encode())
    return root


def load_metadata(root: str | Path, video: str) -> dict[str, Any]:
    """The metadata record of one synthetic video."""
    path = Path(root) / METADATA_DIR / f"{video}.json"
    if not path.is_file():
        raise MassegError("no synthetic-video metadata", path, "generate the dataset with `masseg-search data synth`")
    return json.loads(path.read_text())


def ensure_training_data(config: ProjectConfig) -> None:
    """Generate the synthetic dataset at ``data.root`` when it is missing and the config describes one
    (``data.synth``); a missing real dataset is left to the loaders' errors. Generation resumes and is seeded."""
    root = Path(config.data.root)
    synth = config.data.synth
    if synth is None or (root / f"{config.data.train_split}.txt").is_file():
        return
    logging.getLogger(__name__).warning("no dataset at %s: generating the config's synthetic dataset there", root)
    generate_dataset(root, videos=synth.videos, seed=synth.seed, height=synth.height, width=synth.width,
                     frames=synth.frames, splits=synth.splits)
