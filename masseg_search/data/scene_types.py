"""Scene typing: each object gets a type from features of the FIRST annotated frame and its masks only.

Features (one row per object):

- ``area_fraction``: object pixels / frame pixels.
- ``num_objects``: objects in the video's first annotated frame.
- ``nearest_distance``: gap to the closest other object, in units of this object's equivalent diameter
  (``inf`` when it is alone; 0 when touching).
- ``neighbors``: other objects closer than one equivalent diameter.
- ``contact``: share of the object's boundary pixels that touch another object (occlusion / overlap).
- ``color_similarity``: ``exp(-dE / 20)`` for the smallest CIE76 distance ``dE`` between this object's mean Lab
  colour and another object's (1 = same colour, 0 when alone).
- ``clutter``: Canny edge density of the background in a ring around the object (ring width half its diameter).
- ``compactness``: ``4 pi area / perimeter^2`` of its outer contours (1 for a disc, near 0 for thin or ragged
  shapes, whose low-resolution mask SAM2's memory keeps worst).
- ``background_similarity``: ``exp(-dE / 20)`` for the CIE76 distance ``dE`` between the object's mean Lab colour
  and that of the background ring of ``clutter`` (1 = camouflaged, 0 without a ring).

Types come from the config's ``scene_types`` section: rules in priority order, the first whose every feature range
holds wins, otherwise the default type. The same masks and frame always give the same table.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np
import pandas as pd

from masseg_search.config import SceneTypesSection
from masseg_search.data.layout import VOID_ID, Dataset, atomic_write_bytes, open_dataset, read_frame
from masseg_search.errors import MassegError

FEATURES = ("area_fraction", "num_objects", "nearest_distance", "neighbors", "contact", "color_similarity", "clutter",
            "compactness", "background_similarity")
KEY_COLUMNS = ("video", "object_id", "scene_type")
COLOR_SCALE = 20.0  # dE at which the similarity falls to 1/e
CANNY_LOW, CANNY_HIGH = 50, 150


def _equivalent_diameter(area: float) -> float:
    return 2.0 * math.sqrt(area / math.pi)


def object_features(image: np.ndarray, mask: np.ndarray) -> dict[int, dict[str, float | int]]:
    """Features of every object of one frame: ``{object_id: {feature: value}}`` (see the module docstring).

    ``image`` is RGB uint8 (H, W, 3); ``mask`` the id mask (H, W) (0 background, 255 void, ignored).
    """
    if image.shape[:2] != mask.shape:
        raise MassegError(f"frame is {image.shape[0]}x{image.shape[1]} but its mask is {mask.shape[0]}x{mask.shape[1]}", None, "resize the mask to the frame size")
    height, width = mask.shape
    counts = np.bincount(mask.ravel(), minlength=256)
    object_ids = [int(i) for i in np.nonzero(counts)[0] if i not in (0, VOID_ID)]
    if not object_ids:
        return {}
    any_object = (mask != 0) & (mask != VOID_ID)
    object_pixels = image[any_object].astype(np.float32)[:, None, :] / 255.0  # only objects need Lab
    lab = cv2.cvtColor(object_pixels, cv2.COLOR_RGB2LAB)[:, 0, :].astype(np.float64)
    owners = mask[any_object]
    mean_lab = np.stack([np.bincount(owners, weights=lab[:, c], minlength=256) for c in range(3)], 1)[object_ids] / counts[object_ids, None]
    edges = cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), CANNY_LOW, CANNY_HIGH) > 0
    near_objects = cv2.dilate(any_object.view(np.uint8), np.ones((5, 5), np.uint8)) > 0
    distance_to = {}  # distance of every pixel to object j (needed only when there are several objects)
    if len(object_ids) > 1:
        distance_to = {j: cv2.distanceTransform((mask != j).astype(np.uint8), cv2.DIST_L2, 5) for j in object_ids}

    features: dict[int, dict[str, float | int]] = {}
    for row, object_id in enumerate(object_ids):
        area = float(counts[object_id])
        diameter = _equivalent_diameter(area)
        own = mask == object_id
        x, y, w, h = cv2.boundingRect(own.view(np.uint8))
        radius = max(2, int(round(diameter / 2.0)))
        y0, y1 = max(0, y - radius), min(height, y + h + radius)
        x0, x1 = max(0, x - radius), min(width, x + w + radius)
        own_crop = own[y0:y1, x0:x1].view(np.uint8)
        # pixels within ``radius`` of the object (a distance transform: cost independent of the radius)
        within = cv2.distanceTransform((own_crop == 0).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) <= radius
        ring = within & ~near_objects[y0:y1, x0:x1]
        clutter = float(edges[y0:y1, x0:x1][ring].mean()) if ring.any() else 0.0
        background_similarity = 0.0
        if ring.any():
            ring_pixels = image[y0:y1, x0:x1][ring].astype(np.float32)[:, None, :] / 255.0
            ring_lab = cv2.cvtColor(ring_pixels, cv2.COLOR_RGB2LAB)[:, 0, :].astype(np.float64).mean(axis=0)
            background_similarity = float(math.exp(-float(np.linalg.norm(ring_lab - mean_lab[row])) / COLOR_SCALE))
        contours, _ = cv2.findContours(np.ascontiguousarray(own_crop), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        perimeter = sum(cv2.arcLength(contour, True) for contour in contours)
        compactness = min(1.0, 4.0 * math.pi * area / perimeter**2) if perimeter > 0 else 1.0

        nearest, neighbors, contact, similarity = math.inf, 0, 0.0, 0.0
        others = [j for j in object_ids if j != object_id]
        if others:
            rows_in, cols_in = np.nonzero(own_crop)
            pixels = (rows_in + y0, cols_in + x0)
            gaps = np.array([float(distance_to[j][pixels].min()) for j in others])
            # distanceTransform counts the step onto the other object: touching pixels are 1 apart, so gap = d - 1.
            gaps = np.maximum(gaps - 1.0, 0.0)
            nearest = float(gaps.min()) / diameter
            neighbors = int((gaps <= diameter).sum())
            boundary = own_crop.astype(bool) & ~(cv2.erode(own_crop, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE) > 0)
            by, bx = np.nonzero(boundary)
            by, bx = by + y0, bx + x0
            to_others = np.min(np.stack([distance_to[j][by, bx] for j in others]), axis=0)
            contact = float((to_others <= 1.5).mean()) if len(by) else 0.0
            delta = np.linalg.norm(mean_lab[[object_ids.index(j) for j in others]] - mean_lab[row], axis=1)
            similarity = float(math.exp(-float(delta.min()) / COLOR_SCALE))
        features[object_id] = {
            "area_fraction": area / float(height * width),
            "num_objects": len(object_ids),
            "nearest_distance": nearest,
            "neighbors": neighbors,
            "contact": contact,
            "color_similarity": similarity,
            "clutter": clutter,
            "compactness": compactness,
            "background_similarity": background_similarity,
        }
    return features


def check_rules(section: SceneTypesSection, source: str | None = None) -> None:
    """Every rule must name known features; an unknown one is an error naming the closest valid feature."""
    import difflib

    for rule in section.types:
        for feature in rule.when:
            if feature not in FEATURES:
                close = difflib.get_close_matches(feature, FEATURES, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"valid features: {', '.join(FEATURES)}"
                raise MassegError(f"scene type {rule.name!r} uses unknown feature {feature!r}", source, hint)


def classify(features: dict[str, float], section: SceneTypesSection) -> str:
    """The first rule whose every range holds (inclusive), else the default type."""
    for rule in section.types:
        matched = True
        for feature, bounds in rule.when.items():
            value = features[feature]
            if (bounds.min is not None and not value >= bounds.min) or (bounds.max is not None and not value <= bounds.max):
                matched = False
                break
        if matched:
            return rule.name
    return section.default


def _video_rows(dataset: Dataset, name: str) -> list[dict[str, Any]]:
    video = dataset.video(name)
    frame_index, mask = video.first_annotation()
    if frame_index >= len(video.frame_paths):
        raise MassegError("no frame for the first annotation", video.image_dir, "add the video's frames")
    image = read_frame(video.frame_paths[frame_index])
    if image.shape[:2] != mask.shape:
        raise MassegError(
            f"frame is {image.shape[0]}x{image.shape[1]} but its first annotation is {mask.shape[0]}x{mask.shape[1]}",
            video.annotation_path(video.frame_names[frame_index]),
            "run `masseg-search data check` and fix the sizes",
        )
    rows = []
    for object_id, values in object_features(image, mask).items():
        rows.append({"video": name, "object_id": object_id, "first_frame": frame_index, **values})
    return rows


def scene_type_table(dataset: Dataset | str | Path, scene_types_section: SceneTypesSection, workers: int = 1, progress: bool = False) -> pd.DataFrame:
    """One row per object (``video, object_id, scene_type``, ``first_frame`` and every feature), sorted by video, id."""
    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset)
    check_rules(scene_types_section)
    from tqdm import tqdm

    names = list(dataset.video_names)
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers) as pool:
            per_video = list(tqdm(pool.map(lambda n: _video_rows(dataset, n), names), total=len(names), desc="scene types", unit="video", disable=not progress))
    else:
        per_video = [_video_rows(dataset, n) for n in tqdm(names, desc="scene types", unit="video", disable=not progress)]
    rows = [row for video_rows in per_video for row in video_rows]
    for row in rows:
        row["scene_type"] = classify(row, scene_types_section)
    columns = [*KEY_COLUMNS, "first_frame", *FEATURES]
    table = pd.DataFrame(rows, columns=columns)
    table["object_id"] = table["object_id"].astype(int)
    for column in ("first_frame", "num_objects", "neighbors"):
        table[column] = table[column].astype(int)
    table["video"] = table["video"].astype(str)
    return table.sort_values(["video", "object_id"], kind="stable").reset_index(drop=True)


def save_scene_types(table: pd.DataFrame, path: str | Path) -> Path:
    """Write the table as CSV (full float precision), atomically."""
    path = Path(path)
    atomic_write_bytes(path, table.to_csv(index=False, float_format="%.17g").encode())
    return path


def load_scene_types(path: str | Path) -> pd.DataFrame:
    """Read a scene-type CSV; it must hold ``video, object_id, scene_type``."""
    path = Path(path)
    if not path.is_file():
        raise MassegError("scene-type table not found", path, "create it with `masseg-search data scene-types ROOT --out FILE.csv`")
    try:
        table = pd.read_csv(path, dtype={"video": str, "scene_type": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MassegError(f"not a readable CSV ({exc})", path, "regenerate it with `masseg-search data scene-types`") from None
    missing = [c for c in KEY_COLUMNS if c not in table.columns]
    if missing:
        raise MassegError(f"scene-type table lacks columns {missing}", path, "regenerate it with `masseg-search data scene-types`")
    table["object_id"] = table["object_id"].astype(int)
    return table


def type_counts(table: pd.DataFrame, order: Iterable[str] | None = None) -> pd.Series:
    """Objects per scene type (in ``order`` when given, types with none included as 0)."""
    counts = table["scene_type"].value_counts()
    if order is not None:
        counts = counts.reindex(list(order), fill_value=0)
    return counts
