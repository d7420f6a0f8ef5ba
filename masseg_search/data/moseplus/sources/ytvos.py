"""YouTube-VOS 2019 as MOSE+ clips.

A split folder holds ``JPEGImages/<video>/*.jpg``, ``Annotations/<video>/*.png`` (palette PNGs whose values are
the object ids of ``meta.json``) and ``meta.json``::

    {"videos": {"<video>": {"objects": {"<id>": {"category": "<name>", "frames": ["00000", "00005", ...]}}}}}

Annotations exist every 5th frame. ``frames="annotated"`` keeps only the annotated frames; ``frames="all"`` keeps
every frame of the image folder (``images`` may point at ``train_all_frames/JPEGImages``) and leaves the others
unlabelled. Objects that appear late keep their start frame (the manifest's ``first_frame``).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal

from masseg_search.data.layout import IMAGE_EXTENSIONS, VOID_ID, list_files, read_mask
from masseg_search.data.moseplus.formats import explain_not_format
from masseg_search.data.moseplus.sources.vis import load_json, require_keys
from masseg_search.data.moseplus.writer import SourceClip, SourceFrame, safe_video_name
from masseg_search.errors import MassegError


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
        require_keys(entry, ["objects"], meta_path, f"videos.{video}")
        annotated: set[str] = set()
        categories: dict[int, str] = {}
        for object_id, obj in entry["objects"].items():
            require_keys(obj, ["frames"], meta_path, f"videos.{video}.objects.{object_id}")
            annotated.update(obj["frames"])
            categories[int(object_id)] = str(obj.get("category", ""))
        for frame in sorted(annotated):
            png = src / "Annotations" / video / f"{frame}.png"
            if not png.is_file():
                raise MassegError(f"meta.json lists frame {frame!r} of video {video!r} but its annotation is missing",
                                  png, f"re-extract Annotations/{video}/, or remove the video from {meta_path}")
            if not any((image_root / video / f"{frame}{ext}").is_file() for ext in IMAGE_EXTENSIONS):
                raise MassegError(f"meta.json lists frame {frame!r} of video {video!r} but its image is missing",
                                  image_root / video / f"{frame}.jpg", f"re-extract {image_root}/{video}/")
        image_paths = list_files(image_root / video, IMAGE_EXTENSIONS)
        if frames == "annotated":
            image_paths = [path for path in image_paths if path.stem in annotated]
        clip_frames = []
        for path in image_paths:
            png = src / "Annotations" / video / f"{path.stem}.png"
            loader = partial(read_mask, png) if path.stem in annotated else None
            clip_frames.append(SourceFrame(path, path.stem, loader))
        clips.append(SourceClip("ytvos", video, safe_video_name(video), clip_frames, categories, void_id=VOID_ID))
    return clips
