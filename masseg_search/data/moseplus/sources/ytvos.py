"""YouTube-VOS 2018 / 2019 as MOSE+ clips.

A split folder (``train/``, ``valid/``) holds ``JPEGImages/<video>/*.jpg``, ``Annotations/<video>/*.png`` (palette
PNGs whose values are the object ids of ``meta.json``) and ``meta.json``::

    {"videos": {"<video>": {"objects": {"<id>": {"category": "<name>", "frames": ["00000", "00005", ...]}}}}}

(``category`` is absent from the valid split's meta.json). The split's ``JPEGImages`` holds every 5th frame of the
30 fps video, named by frame number; ``train_all_frames/JPEGImages`` and ``valid_all_frames/JPEGImages`` hold every
frame (pass one as ``images`` with ``frames="all"``; the frames between the annotated ones stay unlabelled).

- train: a PNG for every frame of ``JPEGImages`` (an object's ``frames`` lists where it is visible); every frame
  that meta.json lists must have its PNG. The labelled frames are the PNGs present.
- valid: a PNG only where an object first appears, holding only the objects that start there (``frames`` lists
  every frame from the object's first appearance on). A video whose PNGs are exactly its objects' first frames
  while meta.json lists more gets ``labels="first-appearance"``: the
  converted root holds prompts for inference, not training labels (``data build-moseplus`` refuses it).

``frames="annotated"`` keeps only the labelled frames; ``frames="all"`` keeps every frame of the image folder.
Objects that appear late keep their start frame (the manifest's ``first_frame``).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

from masseg_search.data.layout import IMAGE_EXTENSIONS, VOID_ID, list_files, read_mask
from masseg_search.data.moseplus.formats import explain_not_format
from masseg_search.data.moseplus.sources.vis import load_json, require_keys
from masseg_search.data.moseplus.writer import FIRST_APPEARANCE_LABELS, FULL_LABELS, SourceClip, SourceFrame, safe_video_name
from masseg_search.errors import MassegError


def _listed_frames(meta_path: Path, video: str, entry: dict) -> tuple[set[str], set[str], dict[int, str]]:
    """(every frame meta.json lists, each object's first frame, categories) of one video."""
    require_keys(entry, ["objects"], meta_path, f"videos.{video}")
    listed: set[str] = set()
    firsts: set[str] = set()
    categories: dict[int, str] = {}
    for object_id, obj in entry["objects"].items():
        where = f"videos.{video}.objects.{object_id}"
        require_keys(obj, ["frames"], meta_path, where)
        if not obj["frames"]:
            continue
        frames = [str(frame) for frame in obj["frames"]]
        listed.update(frames)
        firsts.add(min(frames))
        try:
            categories[int(object_id)] = str(obj.get("category", ""))
        except ValueError:
            raise MassegError(f"{where}: object id {object_id!r} is not a number", meta_path,
                              "this is not YouTube-VOS's meta.json: check --format and --src") from None
    return listed, firsts, categories


def ytvos_clips(src: str | Path, frames: Literal["annotated", "all"] = "annotated",
                images: str | Path | None = None) -> list[SourceClip]:
    """Clips of a YouTube-VOS split folder (``train/`` or ``valid/``) read through its ``meta.json``."""
    src = Path(src)
    meta_path = src / "meta.json"
    if not meta_path.is_file() or not (src / "Annotations").is_dir():
        raise explain_not_format(src, "ytvos", "meta.json, JPEGImages/ and Annotations/")
    image_root = Path(images) if images is not None else src / "JPEGImages"
    if not image_root.is_dir():
        raise MassegError("image folder not found", image_root,
                          "pass the split's JPEGImages/ (or train_all_frames/JPEGImages for every frame)")
    meta = load_json(meta_path)
    require_keys(meta, ["videos"], meta_path, "the top level")
    clips = []
    for video, entry in sorted(meta["videos"].items()):
        listed, firsts, categories = _listed_frames(meta_path, video, entry)
        annotation_dir = src / "Annotations" / video
        pngs = {path.stem for path in list_files(annotation_dir, (".png",))}
        without_png = sorted(listed - pngs)
        labels = FULL_LABELS
        if without_png:
            if pngs and pngs == firsts:
                labels = FIRST_APPEARANCE_LABELS  # the valid split: masks only where objects start
            else:
                png = annotation_dir / f"{without_png[0]}.png"
                raise MassegError(f"meta.json lists frame {without_png[0]!r} of video {video!r} but its annotation "
                                  "is missing", png, f"re-extract Annotations/{video}/, or remove the video from {meta_path}")
        image_paths = list_files(image_root / video, IMAGE_EXTENSIONS)
        stems = {path.stem for path in image_paths}
        for frame in sorted(pngs):
            if frame not in stems:
                raise MassegError(f"frame {frame!r} of video {video!r} has an annotation but its image is missing",
                                  image_root / video / f"{frame}.jpg", f"re-extract {image_root}/{video}/")
        if frames == "annotated":
            image_paths = [path for path in image_paths if path.stem in pngs]
        clip_frames = []
        for path in image_paths:
            png = annotation_dir / f"{path.stem}.png"
            loader = partial(read_mask, png) if path.stem in pngs else None
            clip_frames.append(SourceFrame(path, path.stem, loader))
        clips.append(SourceClip("ytvos", video, safe_video_name(video), clip_frames, categories, void_id=VOID_ID,
                                labels=labels))
    return clips
