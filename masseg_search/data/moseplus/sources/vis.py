"""YouTube-VIS 2019/2021 and OVIS as MOSE+ clips, plus the COCO-RLE and JSON helpers BURST shares.

One JSON describes every video (the YouTube-VIS ``ytvos.py`` API's format)::

    videos:      [{id, width, height, file_names: ["<video>/<frame>.jpg", ...]}, ...]
    annotations: [{id, video_id, category_id, segmentations: [<per frame: RLE, polygon list or null>]}, ...]
    categories:  [{id, name}, ...]

A segmentation is a COCO RLE (``{"size": [h, w], "counts": str | list}``, compressed or not) or a polygon list;
pycocotools decodes them. ``file_names`` are relative to ``JPEGImages/`` (YouTube-VIS) or to the split folder
itself (OVIS). Instances are painted in ascending annotation id, so where two overlap the higher id wins.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pycocotools.mask as mask_utils

from masseg_search.data.moseplus.formats import detect_format, explain_not_format
from masseg_search.data.moseplus.writer import SourceClip, SourceFrame, safe_video_name
from masseg_search.errors import MassegError


def load_json(path: Path) -> Any:
    """Parse a JSON file; errors name the file."""
    if not path.is_file():
        raise MassegError("annotation JSON not found", path, "pass the dataset's JSON file with --ann")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MassegError(f"not valid JSON ({exc})", path, "re-download the annotation file") from None


def require_keys(entry: Any, keys: Iterable[str], path: Path, where: str) -> None:
    """Raise a MassegError naming ``path`` and ``where`` if ``entry`` is not a mapping with every key."""
    if not isinstance(entry, dict):
        raise MassegError(f"{where} is a {type(entry).__name__}, expected an object", path,
                          "this is not the format named: check --format and --ann")
    missing = [key for key in keys if key not in entry]
    if missing:
        raise MassegError(f"{where} lacks required key(s) {missing}", path,
                          "this is not the format named, or the file is damaged: check --format and --ann")


def rle_counts(counts: str | bytes | list[int]) -> list[int]:
    """Run lengths of a COCO RLE: a list as is, or decoded from COCO's compressed string form.

    The string stores each count in 5-bit groups (+48, bit 0x20 = more groups follow, sign from bit 0x10 of the
    last group); from the fourth count on, the value is stored as a difference to the count two places back.
    """
    if isinstance(counts, list):
        return [int(value) for value in counts]
    text = counts.decode() if isinstance(counts, bytes) else counts
    values: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise ValueError("compressed RLE string ends inside a count")
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
    return values


def decode_rle(rle: dict) -> np.ndarray:
    """Decode a pycocotools RLE (compressed counts) into a bool mask."""
    with warnings.catch_warnings():  # pycocotools' Cython array conversion warns under numpy 2; harmless
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def decode_segmentation(segmentation: Any, height: int, width: int, path: Path, where: str) -> np.ndarray:
    """A bool (H, W) mask from a COCO RLE or polygon list; a size that disagrees with the video is an error."""
    fix = "the annotation does not match the video's height/width: fix the JSON or the video entry"
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=bool)
        try:
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        except (TypeError, ValueError, IndexError) as exc:
            raise MassegError(f"{where}: bad polygon ({exc})", path, "polygons are lists of x, y coordinates") from None
        return decode_rle(rle)
    if not isinstance(segmentation, dict) or "counts" not in segmentation:
        raise MassegError(f"{where}: segmentation is neither an RLE nor a polygon list", path,
                          "segmentations must be COCO RLE {size, counts}, polygons, or null")
    size = segmentation.get("size", [height, width])
    if list(size) != [height, width]:
        raise MassegError(f"{where}: RLE size {list(size)} disagrees with the video's [{height}, {width}]", path, fix)
    try:
        counts = rle_counts(segmentation["counts"])
    except (ValueError, TypeError) as exc:
        raise MassegError(f"{where}: unreadable RLE counts ({exc})", path, "re-download the annotation file") from None
    if sum(counts) != height * width or any(value < 0 for value in counts):
        raise MassegError(f"{where}: RLE covers {sum(counts)} pixels but the video has {height}x{width} = "
                          f"{height * width}", path, fix)
    if isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    else:
        text = segmentation["counts"]
        rle = {"size": [height, width], "counts": text.encode() if isinstance(text, str) else text}
    return decode_rle(rle)


class _InstanceFrameMask:
    """Loads one frame's id map by decoding every instance's segmentation there (source ids = annotation ids)."""

    def __init__(self, parts: list[tuple[int, Any]], height: int, width: int, path: Path, where: str):
        self.parts, self.height, self.width, self.path, self.where = parts, height, width, path, where

    def __call__(self) -> np.ndarray:
        id_map = np.zeros((self.height, self.width), dtype=np.int32)
        for source_id, segmentation in self.parts:
            mask = decode_segmentation(segmentation, self.height, self.width, self.path,
                                       f"{self.where}, instance {source_id}")
            id_map[mask] = source_id
        return id_map


def _image_root(src: Path) -> Path:
    return src / "JPEGImages" if (src / "JPEGImages").is_dir() else src


def vis_clips(src: str | Path, ann: str | Path | None = None, source: str = "vis") -> list[SourceClip]:
    """Clips of a YouTube-VIS / OVIS split: images under ``src`` and the instances JSON ``ann``.

    ``ann`` defaults to ``src/instances.json`` (YouTube-VIS 2021 ships it beside ``JPEGImages/``).
    """
    src = Path(src)
    ann_path = Path(ann) if ann is not None else src / "instances.json"
    if not src.is_dir():
        raise MassegError("source folder not found", src, "pass the split folder that holds the video frames")
    if ann is None and not ann_path.is_file():
        if detect_format(src) in (None, "mose"):  # frames without their JSON: YouTube-VIS 2019 / OVIS keep it apart
            raise MassegError(f"no instances.json in the {source} source folder", ann_path,
                              "YouTube-VIS 2019 and OVIS keep the JSON beside the split folder: pass it with --ann "
                              "(e.g. train.json, annotations_train.json)")
        raise explain_not_format(src, source, "instances.json beside JPEGImages/ (or pass --ann FILE)")
    data = load_json(ann_path)
    require_keys(data, ["videos", "annotations"], ann_path, "the top level")
    categories = {c.get("id"): str(c.get("name", "")) for c in data.get("categories", []) if isinstance(c, dict)}
    instances: dict[Any, list[dict]] = {}
    for index, annotation in enumerate(data["annotations"]):
        require_keys(annotation, ["id", "video_id", "segmentations"], ann_path, f"annotations[{index}]")
        instances.setdefault(annotation["video_id"], []).append(annotation)
    image_root = _image_root(src)
    clips = []
    for index, video in enumerate(data["videos"]):
        require_keys(video, ["id", "file_names", "height", "width"], ann_path, f"videos[{index}]")
        file_names, height, width = video["file_names"], int(video["height"]), int(video["width"])
        name = Path(file_names[0]).parent.as_posix() if file_names else str(video["id"])
        video_instances = sorted(instances.get(video["id"], []), key=lambda a: a["id"])
        for annotation in video_instances:
            if len(annotation["segmentations"]) != len(file_names):
                raise MassegError(
                    f"annotation {annotation['id']} has {len(annotation['segmentations'])} segmentations but video "
                    f"{name!r} has {len(file_names)} frames", ann_path, "the JSON is damaged: re-download it")
        frames = []
        for frame_index, file_name in enumerate(file_names):
            image_path = image_root / file_name
            if not image_path.is_file():
                raise MassegError(f"{ann_path.name} lists frame {file_name!r} but it is missing on disk", image_path,
                                  f"re-extract the frames under {image_root}, or pass the matching --src")
            parts = [(int(a["id"]), a["segmentations"][frame_index]) for a in video_instances
                     if a["segmentations"][frame_index] is not None]
            where = f"video {name!r} frame {frame_index}"
            frames.append(SourceFrame(image_path, Path(file_name).stem,
                                      _InstanceFrameMask(parts, height, width, ann_path, where)))
        object_categories = {int(a["id"]): categories.get(a.get("category_id"), "") for a in video_instances}
        clips.append(SourceClip(source, name, safe_video_name(name), frames, object_categories))
    return clips
