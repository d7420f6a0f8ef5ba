"""BURST as MOSE+ clips (format of Ali2500/BURST-benchmark's ANNOTATION_FORMAT.md).

The JSON (``train.json`` ...) holds ``split`` and ``sequences``; each sequence has ``id, width, height, dataset,
seq_name, all_image_paths, annotated_image_paths, track_category_ids`` (older files: ``categories``) and
``segmentations``: one dict per annotated frame, ``{"<track id>": {"rle": "<compressed COCO counts>", ...}}``.
Images live at ``<frames root>/<split>/<dataset>/<seq_name>/<image path>``; ``--src`` is that frames root (or its
``<split>/`` folder). ``frames="annotated"`` keeps the annotated frames; ``"all"`` keeps every listed frame and
leaves the others unlabelled. Tracks are painted in ascending track id (the higher id wins an overlap).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from masseg_search.data.moseplus.formats import explain_not_format
from masseg_search.data.moseplus.sources.vis import decode_segmentation, load_json, require_keys
from masseg_search.data.moseplus.writer import SourceClip, SourceFrame, safe_video_name
from masseg_search.errors import MassegError

SEQUENCE_KEYS = ["id", "width", "height", "dataset", "seq_name", "annotated_image_paths", "segmentations"]


class _TrackFrameMask:
    """Decodes one annotated frame's track RLEs into an id map (source ids = track ids)."""

    def __init__(self, tracks: dict[str, Any], height: int, width: int, path: Path, where: str):
        self.tracks, self.height, self.width, self.path, self.where = tracks, height, width, path, where

    def __call__(self) -> np.ndarray:
        id_map = np.zeros((self.height, self.width), dtype=np.int32)
        for track_id in sorted(self.tracks, key=int):
            entry = self.tracks[track_id]
            where = f"{self.where}, track {track_id}"
            require_keys(entry, ["rle"], self.path, where)
            mask = decode_segmentation({"counts": entry["rle"]}, self.height, self.width, self.path, where)
            id_map[mask] = int(track_id)
        return id_map


def _sequence_dir(src: Path, split: str, sequence: dict) -> Path | None:
    for candidate in (src / split / sequence["dataset"] / sequence["seq_name"], src / sequence["dataset"] / sequence["seq_name"]):
        if candidate.is_dir():
            return candidate
    return None


def burst_clips(src: str | Path, ann: str | Path, frames: Literal["annotated", "all"] = "annotated") -> list[SourceClip]:
    """Clips of a BURST split: ``src`` is the frames root, ``ann`` the split's JSON."""
    src, ann_path = Path(src), Path(ann)
    if not src.is_dir():
        raise MassegError("source folder not found", src, "pass BURST's frames root (it holds <split>/<dataset>/<seq>/)")
    data = load_json(ann_path)
    require_keys(data, ["sequences"], ann_path, "the top level")
    split = str(data.get("split", "train"))
    categories = {c.get("id"): str(c.get("name", "")) for c in data.get("categories", []) if isinstance(c, dict)}
    clips = []
    for index, sequence in enumerate(data["sequences"]):
        require_keys(sequence, SEQUENCE_KEYS, ann_path, f"sequences[{index}]")
        name = f"{sequence['dataset']}_{sequence['seq_name']}"
        where = f"sequence {name!r}"
        folder = _sequence_dir(src, split, sequence)
        if folder is None:
            if index == 0:
                raise explain_not_format(src, "burst", f"{split}/{sequence['dataset']}/{sequence['seq_name']}/")
            raise MassegError(f"{ann_path.name} lists {where} but its frame folder is missing",
                              src / split / sequence["dataset"] / sequence["seq_name"], "re-extract BURST's frames")
        annotated, segmentations = sequence["annotated_image_paths"], sequence["segmentations"]
        if len(annotated) != len(segmentations):
            raise MassegError(f"{where} has {len(annotated)} annotated_image_paths but {len(segmentations)} "
                              "segmentations", ann_path, "the JSON is damaged: re-download it")
        height, width = int(sequence["height"]), int(sequence["width"])
        masks = {path: _TrackFrameMask(tracks, height, width, ann_path, f"{where} frame {path!r}")
                 for path, tracks in zip(annotated, segmentations)}
        if frames == "all":
            require_keys(sequence, ["all_image_paths"], ann_path, f"sequences[{index}]")
            image_names = list(sequence["all_image_paths"])
        else:
            image_names = list(annotated)
        clip_frames = []
        for image_name in image_names:
            image_path = folder / image_name
            if not image_path.is_file():
                raise MassegError(f"{ann_path.name} lists frame {image_name!r} of {where} but it is missing on disk",
                                  image_path, "re-extract BURST's frames, or pass the matching --src")
            clip_frames.append(SourceFrame(image_path, Path(image_name).stem, masks.get(image_name)))
        track_categories = sequence.get("track_category_ids", sequence.get("categories", {}))
        object_categories = {int(t): categories.get(c, str(c)) for t, c in dict(track_categories).items()}
        clips.append(SourceClip("burst", name, safe_video_name(name), clip_frames, object_categories))
    return clips
