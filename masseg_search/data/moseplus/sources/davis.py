"""DAVIS 2017 as MOSE+ clips: ``JPEGImages/<level>/<video>/*.jpg`` and palette PNGs ``Annotations/<level>/<video>``.

``level`` is ``480p`` or ``Full-Resolution``; split lists live in ``ImageSets/2017/<split>.txt``. DAVIS's palette
PNGs already hold object ids (255 = void); a frame without a PNG (test-dev) is unlabelled.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from masseg_search.data.layout import DAVIS_LEVELS, IMAGE_EXTENSIONS, VOID_ID, list_files, read_mask, read_split_list
from masseg_search.data.moseplus.formats import explain_not_format
from masseg_search.data.moseplus.writer import SourceClip, SourceFrame, safe_video_name
from masseg_search.errors import MassegError


def davis_clips(src: str | Path, split: str | None = None, level: str | None = None) -> list[SourceClip]:
    """Clips of a DAVIS root; ``split`` (e.g. ``train``) reads ``ImageSets/2017/<split>.txt``, None = every video."""
    src = Path(src)
    levels = [level] if level else list(DAVIS_LEVELS)
    found = [name for name in levels if (src / "JPEGImages" / name).is_dir() and (src / "Annotations" / name).is_dir()]
    if not found:
        raise explain_not_format(src, "davis", f"JPEGImages/{levels[0]}/ and Annotations/{levels[0]}/")
    image_root, annotation_root = src / "JPEGImages" / found[0], src / "Annotations" / found[0]
    if split is not None:
        candidates = [src / "ImageSets" / "2017" / f"{split}.txt", src / "ImageSets" / f"{split}.txt"]
        list_file = next((path for path in candidates if path.is_file()), None)
        if list_file is None:
            raise MassegError(f"no list file for DAVIS split {split!r}", candidates[0],
                              "pass a split that ImageSets/2017/ holds (train, val), or none for every video")
        names = read_split_list(list_file)
    else:
        names = sorted(p.name for p in image_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    clips = []
    for name in names:
        images = list_files(image_root / name, IMAGE_EXTENSIONS)
        if not images:
            raise MassegError(f"video {name!r} is listed but has no frames", image_root / name,
                              "re-extract DAVIS, or remove the video from the split list")
        frames = []
        for image in images:
            png = annotation_root / name / f"{image.stem}.png"
            frames.append(SourceFrame(image, image.stem, partial(read_mask, png) if png.is_file() else None))
        clips.append(SourceClip("davis", name, safe_video_name(name), frames, void_id=VOID_ID))
    return clips
