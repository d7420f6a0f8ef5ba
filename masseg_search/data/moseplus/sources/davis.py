"""DAVIS 2016 and DAVIS 2017 as MOSE+ clips: ``JPEGImages/<level>/<video>/*.jpg`` and ``Annotations/<level>/<video>``.

What each release ships (Perazzi et al., CVPR 2016; Pont-Tuset et al., arXiv:1704.00675; davischallenge.org):

- ``level``: ``480p`` in both; ``1080p`` in DAVIS 2016, ``Full-Resolution`` in DAVIS 2017.
- Masks: DAVIS 2017 palette PNGs whose values are object ids (255 = void); DAVIS 2016 8-bit grayscale PNGs, 0 =
  background and 255 = the one object (read as object 1, :func:`~masseg_search.data.layout.read_binary_mask`).
  The kind is read from each video's first PNG; a video mixing both is an error.
- Split lists (optional: without ``split`` every video folder is converted): DAVIS 2017's ``ImageSets/2017/<split>
  .txt`` and the 2017 release's ``ImageSets/2016/<split>.txt`` name one sequence a line; DAVIS 2016's
  ``ImageSets/<level>/<split>.txt`` name frame pairs (``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/
  00000.png``), and then exactly the listed frames are converted. ``split="2016/val"`` picks ``ImageSets/2016/``.

A frame without a PNG (test-dev) is unlabelled.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from masseg_search.data.layout import (
    DAVIS_LEVELS,
    IMAGE_EXTENSIONS,
    VOID_ID,
    is_grayscale_mode,
    list_files,
    parse_split_line,
    read_binary_mask,
    read_mask,
    split_list_candidates,
)
from masseg_search.data.moseplus.formats import explain_not_format
from masseg_search.data.moseplus.writer import SourceClip, SourceFrame, safe_video_name
from masseg_search.errors import MassegError


def read_davis_list(path: Path) -> dict[str, list[str] | None]:
    """Sequences of a DAVIS list file, in order: sequence -> listed frame stems (2016 frame pairs) or None (a name)."""
    listed: dict[str, list[str] | None] = {}
    for line in path.read_text().splitlines():
        parsed = parse_split_line(line)
        if parsed is None:
            continue
        name, frame = parsed
        if frame is None:
            listed.setdefault(name, None)
        else:
            frames = listed.setdefault(name, [])
            if frames is None:
                raise MassegError(f"sequence {name!r} is listed both by name and by frames", path,
                                  "use the list file as DAVIS ships it")
            if frame not in frames:
                frames.append(frame)
    return listed


def _mask_kind(png: Path) -> str:
    """``binary`` (DAVIS 2016 grayscale 0/255) or ``ids`` (palette), from the PNG header."""
    try:
        with Image.open(png) as image:
            return "binary" if is_grayscale_mode(image.mode) else "ids"
    except (OSError, SyntaxError, ValueError) as exc:
        raise MassegError(f"cannot decode PNG ({exc})", png, "the file is corrupt or truncated: re-export it") from None


def _read_davis_mask(png: Path, kind: str, video: str) -> np.ndarray:
    if _mask_kind(png) != kind:
        raise MassegError(f"video {video!r} mixes grayscale (DAVIS 2016) and palette (DAVIS 2017) masks", png,
                          "re-extract the video's Annotations from one DAVIS release")
    return read_binary_mask(png) if kind == "binary" else read_mask(png)


def _split_file(src: Path, split: str, level: str) -> Path:
    candidates = [src / "ImageSets" / "2017" / f"{split}.txt", src / "ImageSets" / level / f"{split}.txt",
                  *(c for c in split_list_candidates(src, split) if "ImageSets" in c.parts)]
    found = next((path for path in dict.fromkeys(candidates) if path.is_file()), None)
    if found is None:
        raise MassegError(f"no list file for DAVIS split {split!r}", candidates[0],
                          f"pass a split that ImageSets/2017/ or ImageSets/{level}/ holds (train, val), "
                          "or none for every video")
    return found


def davis_clips(src: str | Path, split: str | None = None, level: str | None = None) -> list[SourceClip]:
    """Clips of a DAVIS 2016 or 2017 root; ``split`` (e.g. ``train``, ``2016/val``) reads its list, None = every
    video; ``level`` picks the resolution (default: the first of 480p, 1080p, Full-Resolution present)."""
    src = Path(src)
    levels = [level] if level else list(DAVIS_LEVELS)
    found = [name for name in levels if (src / "JPEGImages" / name).is_dir() and (src / "Annotations" / name).is_dir()]
    if not found:
        raise explain_not_format(src, "davis", f"JPEGImages/{levels[0]}/ and Annotations/{levels[0]}/")
    level = found[0]
    image_root, annotation_root = src / "JPEGImages" / level, src / "Annotations" / level
    if split is not None:
        list_file = _split_file(src, split, level)
        listed = read_davis_list(list_file)
    else:
        list_file = None
        listed = {p.name: None for p in sorted(image_root.iterdir()) if p.is_dir() and not p.name.startswith(".")}
    clips = []
    for name, listed_frames in listed.items():
        images = list_files(image_root / name, IMAGE_EXTENSIONS)
        if not images:
            raise MassegError(f"video {name!r} is listed but has no frames", image_root / name,
                              "re-extract DAVIS, or remove the video from the split list")
        if listed_frames is not None:
            by_stem = {image.stem: image for image in images}
            absent = [frame for frame in listed_frames if frame not in by_stem]
            if absent:
                raise MassegError(f"{list_file.name} lists frame {absent[0]!r} of {name!r} but it is missing on disk",
                                  image_root / name / f"{absent[0]}.jpg", f"re-extract DAVIS's JPEGImages/{level}/")
            images = [by_stem[frame] for frame in listed_frames]
        pngs = [annotation_root / name / f"{image.stem}.png" for image in images]
        first_png = next((png for png in pngs if png.is_file()), None)
        kind = _mask_kind(first_png) if first_png is not None else "ids"
        frames = [SourceFrame(image, image.stem, partial(_read_davis_mask, png, kind, name) if png.is_file() else None)
                  for image, png in zip(images, pngs)]
        clips.append(SourceClip("davis", name, safe_video_name(name), frames, void_id=VOID_ID))
    return clips
