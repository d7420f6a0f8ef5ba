"""Write source clips into the MOSE layout: ids renumbered 1..N, one resolution, five-digit frame names, a manifest.

Every converter (DAVIS, YouTube-VOS, YouTube-VIS/OVIS, BURST) turns its source into :class:`SourceClip` objects;
:func:`convert_clips` writes them. The rules, applied the same way to every source:

- A clip starts at its first labelled frame that shows an object; earlier frames are dropped (MOSE prompts with
  the first frame's mask). Frames without a label stay as unlabelled frames (a JPEG without a PNG).
- Resolution: the shorter side becomes ``shorter_side`` (the longer side keeps the aspect ratio, rounded); frames
  with OpenCV's area filter (down) or bilinear (up), masks with exact nearest neighbour (``INTER_NEAREST_EXACT``,
  pixel-centre aligned, identical to Pillow's NEAREST). ``None`` keeps the source size.
- Ids: after resizing, source object ids are renumbered 1..N in order of first appearance (frame order, then
  ascending source id within a frame). An object that no pixel survives the resize for gets no id.
  A palette source's void label (``SourceClip.void_id``, 255 in DAVIS / YouTube-VOS) stays 255; in JSON sources
  every id is an object. More than 254 objects in one clip is an error.
- Resume: each video is written into hidden temporary folders, renamed into place, then recorded in
  ``.done/<video>.json`` (its manifest rows). A video without that record is rewritten from scratch on rerun, and
  a rerun first removes every temporary file or folder a killed run left behind.

Outputs under ``out``: ``JPEGImages/``, ``Annotations/``, ``videos.txt`` (list file), ``manifest_frames.csv``
(source, source_video, video, frame, source_frame, labelled) and ``manifest_objects.csv`` (source, source_video,
video, object_id, source_object_id, category, first_frame, first_source_frame, frames_present),
``conversion.json`` (the settings, and ``labels``: ``full`` or ``first-appearance`` as the source's clips say; a
rerun with other settings is an error rather than a silent mix).

Labels: a labelled frame of a ``full`` clip holds every visible object (a training label). A ``first-appearance``
clip (YouTube-VOS valid) has masks only where objects start, each holding only those objects: prompts for
inference, never training labels.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from masseg_search.data.layout import (
    ANNOTATION_DIR,
    IMAGE_DIR,
    VOID_ID,
    atomic_write_bytes,
    encode_mask_png,
    image_size,
    write_split_list,
)
from masseg_search.errors import MassegError

MAX_OBJECTS = 254
DONE_DIR = ".done"
FULL_LABELS = "full"
FIRST_APPEARANCE_LABELS = "first-appearance"
FRAME_COLUMNS = ["source", "source_video", "video", "frame", "source_frame", "labelled"]
OBJECT_COLUMNS = [
    "source", "source_video", "video", "object_id", "source_object_id", "category",
    "first_frame", "first_source_frame", "frames_present",
]


@dataclass
class SourceFrame:
    """One frame of a source video: its image, its name in the source, and how to get its id mask (or None)."""

    image_path: Path
    source_frame: str
    load_mask: Callable[[], np.ndarray] | None = None  # (H, W) integer map of SOURCE object ids; None = unlabelled


@dataclass
class SourceClip:
    """One source video, ready to write: frames in order plus the source's object categories."""

    source: str
    source_video: str
    video: str
    frames: list[SourceFrame]
    categories: dict[int, str] = field(default_factory=dict)
    void_id: int | None = None  # the source's "ignore" label (255 in DAVIS / YouTube-VOS PNGs); kept as 255
    labels: str = FULL_LABELS  # or FIRST_APPEARANCE_LABELS: masks only where objects start (not training labels)


@dataclass
class ConversionSummary:
    """What a conversion wrote (or found already written)."""

    out: Path
    videos: list[str]
    skipped: list[str]
    frames: int
    seconds: float
    labels: list[str] = field(default_factory=lambda: [FULL_LABELS])  # the label kinds of the clips

    @property
    def frames_per_second(self) -> float:
        """Frames written per second of wall time (0 when nothing was timed)."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def output_size(height: int, width: int, shorter_side: int | None, upscale: bool = True) -> tuple[int, int]:
    """(height, width) after scaling the shorter side to ``shorter_side`` (None, or a smaller source without upscale: as is)."""
    if shorter_side is None:
        return height, width
    shorter = min(height, width)
    if shorter == shorter_side or (shorter < shorter_side and not upscale):
        return height, width
    factor = shorter_side / shorter
    if height <= width:
        return shorter_side, max(1, int(round(width * factor)))
    return max(1, int(round(height * factor))), shorter_side


def resize_id_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an integer id map to (height, width) with exact nearest neighbour (ids never blend)."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask.astype(np.int32, copy=False), (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _ids_present(mask: np.ndarray) -> list[int]:
    """Sorted ids present in an integer map (bincount when ids are small, unique otherwise)."""
    top = int(mask.max()) if mask.size else 0
    if 0 <= top < 1 << 16 and int(mask.min()) >= 0:
        return np.flatnonzero(np.bincount(mask.ravel(), minlength=1)).tolist()
    return [int(i) for i in np.unique(mask)]


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if not path.is_file():
            raise MassegError("frame image missing on disk", path, "re-extract the source dataset's images")
        raise MassegError("cannot decode frame image", path, "the file is corrupt or truncated: re-extract it")
    return image


def _image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the header only."""
    if not path.is_file():
        raise MassegError("frame image missing on disk", path, "re-extract the source dataset's images")
    return image_size(path)


def _write_frame(source: Path, target: Path, source_size: tuple[int, int], size: tuple[int, int], jpeg_quality: int) -> None:
    """Copy a JPEG as is when no resize is needed; otherwise decode, resize and encode."""
    if source.suffix.lower() in (".jpg", ".jpeg") and source_size == size:
        shutil.copyfile(source, target)
        return
    image = _read_image(source)
    if image.shape[:2] != size:
        shrinking = size[0] < image.shape[0]
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise MassegError("JPEG encoding failed", target, "check free disk space and the image")
    target.write_bytes(encoded.tobytes())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _first_object_frame(clip: SourceClip) -> tuple[int, np.ndarray] | None:
    """Index and mask of the first labelled frame that shows an object (not only background or void)."""
    for index, frame in enumerate(clip.frames):
        if frame.load_mask is None:
            continue
        mask = frame.load_mask()
        objects = mask > 0
        if clip.void_id is not None:
            objects &= mask != clip.void_id
        if objects.any():
            return index, mask
    return None


def write_clip(clip: SourceClip, out: Path, shorter_side: int | None, upscale: bool = True,
               jpeg_quality: int = 95) -> dict | None:
    """Write one clip in the MOSE layout (resumable); returns its manifest record, or None if it shows no object."""
    done_path = out / DONE_DIR / f"{clip.video}.json"
    if done_path.is_file():
        record = json.loads(done_path.read_text())
        return None if record.get("skipped") else record
    image_dir, annotation_dir = out / IMAGE_DIR / clip.video, out / ANNOTATION_DIR / clip.video
    tmp_image_dir, tmp_annotation_dir = out / IMAGE_DIR / f".tmp-{clip.video}", out / ANNOTATION_DIR / f".tmp-{clip.video}"
    for stale in (image_dir, annotation_dir, tmp_image_dir, tmp_annotation_dir):
        _remove(stale)

    start = _first_object_frame(clip)
    if start is None:
        record = {"video": clip.video, "skipped": "no labelled frame shows an object", "frames": [], "objects": []}
        atomic_write_bytes(done_path, json.dumps(record).encode())
        return None
    start_index, first_mask = start
    source_size = _image_shape(clip.frames[start_index].image_path)
    size = output_size(*source_size, shorter_side, upscale)
    tmp_image_dir.mkdir(parents=True)
    tmp_annotation_dir.mkdir(parents=True)

    new_ids: dict[int, int] = {}
    objects: dict[int, dict] = {}
    frame_rows = []
    for new_index, frame in enumerate(clip.frames[start_index:]):
        name = f"{new_index:05d}"
        frame_shape = _image_shape(frame.image_path)
        if frame_shape != source_size:
            raise MassegError(
                f"frame is {frame_shape[1]}x{frame_shape[0]} but the clip's first frame is {source_size[1]}x{source_size[0]}",
                frame.image_path, "every frame of a video must have one size: re-extract this video's frames",
            )
        _write_frame(frame.image_path, tmp_image_dir / f"{name}.jpg", frame_shape, size, jpeg_quality)
        labelled = frame.load_mask is not None
        if labelled:
            source_mask = first_mask if new_index == 0 else frame.load_mask()
            if source_mask.shape[:2] != source_size:
                raise MassegError(
                    f"mask of frame {frame.source_frame!r} is {source_mask.shape[1]}x{source_mask.shape[0]} but the "
                    f"video is {source_size[1]}x{source_size[0]}",
                    frame.image_path, "the annotation does not belong to this video: fix or remove it",
                )
            resized = resize_id_mask(source_mask, size)
            out_mask = np.zeros(size, dtype=np.uint8)
            void = resized == clip.void_id if clip.void_id is not None else None
            present = [i for i in _ids_present(resized) if i > 0 and i != clip.void_id]
            for source_id in present:
                if source_id not in new_ids:
                    if len(new_ids) >= MAX_OBJECTS:
                        raise MassegError(
                            f"video {clip.source_video!r} has more than {MAX_OBJECTS} objects; a palette PNG holds ids 1..254",
                            frame.image_path, "exclude this video from the source list",
                        )
                    new_ids[source_id] = len(new_ids) + 1
                    objects[source_id] = {
                        "source": clip.source, "source_video": clip.source_video, "video": clip.video,
                        "object_id": new_ids[source_id], "source_object_id": source_id,
                        "category": clip.categories.get(source_id, ""), "first_frame": name,
                        "first_source_frame": frame.source_frame, "frames_present": 0,
                    }
                objects[source_id]["frames_present"] += 1
            if present:
                lookup = np.zeros(max(present) + 1, dtype=np.uint8)
                for source_id in present:
                    lookup[source_id] = new_ids[source_id]
                known = resized > 0 if void is None else (resized > 0) & ~void
                out_mask[known] = lookup[resized[known]]
            if void is not None:
                out_mask[void] = VOID_ID
            # the folder is renamed into place when complete, so each file needs no atomic write of its own
            (tmp_annotation_dir / f"{name}.png").write_bytes(encode_mask_png(out_mask))
        frame_rows.append({
            "source": clip.source, "source_video": clip.source_video, "video": clip.video, "frame": name,
            "source_frame": frame.source_frame, "labelled": labelled,
        })

    tmp_image_dir.rename(image_dir)
    tmp_annotation_dir.rename(annotation_dir)
    record = {"video": clip.video, "size": list(size), "frames": frame_rows, "objects": list(objects.values())}
    atomic_write_bytes(done_path, json.dumps(record).encode())
    return record


def remove_leftovers(folder: Path) -> None:
    """Remove what a killed run left in ``folder``: half-written files of ``atomic_write_bytes`` (``.<name>.*.tmp``)
    and half-linked or half-written video folders (``.tmp-<video>``). Not recursive."""
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.name.startswith(".") and (path.name.endswith(".tmp") or path.name.startswith(".tmp-")):
            _remove(path)


def _check_settings(out: Path, settings: dict) -> None:
    path = out / "conversion.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        previous.setdefault("labels", settings.get("labels"))  # folders converted before the label kind was recorded
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise MassegError(
                f"this folder was converted with other settings ({', '.join(changed)} differ)", path,
                "use a new --out folder, or delete this one to convert again",
            )
    else:
        atomic_write_bytes(path, json.dumps(settings, indent=2).encode())


def _write_clip_job(job: tuple) -> dict | None:
    clip, out, shorter_side, upscale, jpeg_quality = job
    return write_clip(clip, out, shorter_side, upscale, jpeg_quality)


def convert_clips(clips: Sequence[SourceClip], out: str | Path, settings: dict, shorter_side: int | None,
                  upscale: bool = True, jpeg_quality: int = 95, progress: bool = True,
                  workers: int = 1) -> ConversionSummary:
    """Write every clip under ``out`` (MOSE layout), then the list file and the manifests. Reruns resume.

    ``workers`` > 1 writes that many videos at once in separate processes (the output is the same).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / DONE_DIR, out / IMAGE_DIR, out / ANNOTATION_DIR):
        remove_leftovers(folder)
    labels = sorted({clip.labels for clip in clips}) or [FULL_LABELS]
    _check_settings(out, {**settings, "shorter_side": shorter_side, "upscale": upscale, "jpeg_quality": jpeg_quality,
                          "labels": labels})
    duplicates = sorted(name for name, count in Counter(clip.video for clip in clips).items() if count > 1)
    if duplicates:
        raise MassegError(f"two source videos map to the same output name(s) {duplicates[:5]}", out,
                          "the source lists a video twice: remove the duplicate from its list or JSON")
    started, frames_written = time.perf_counter(), 0
    already = {clip.video for clip in clips if (out / DONE_DIR / f"{clip.video}.json").is_file()}
    jobs = [(clip, out, shorter_side, upscale, jpeg_quality) for clip in clips]
    bar = tqdm(total=len(jobs), desc=f"convert -> {out.name}", unit="video", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            records = []
            for record in pool.map(_write_clip_job, jobs):
                records.append(record)
                bar.update()
    else:
        records = []
        for job in jobs:
            records.append(_write_clip_job(job))
            bar.update()
    bar.close()
    videos, skipped, frame_rows, object_rows = [], [], [], []
    for clip, record in zip(clips, records):
        if record is None:
            skipped.append(clip.video)
            continue
        if clip.video not in already:
            frames_written += len(record["frames"])
        videos.append(clip.video)
        frame_rows.extend(record["frames"])
        object_rows.extend(record["objects"])
    seconds = time.perf_counter() - started
    write_split_list(out / "videos.txt", videos)
    _write_csv(out / "manifest_frames.csv", pd.DataFrame(frame_rows, columns=FRAME_COLUMNS))
    _write_csv(out / "manifest_objects.csv", pd.DataFrame(object_rows, columns=OBJECT_COLUMNS))
    return ConversionSummary(out, videos, skipped, frames_written, seconds, labels)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    atomic_write_bytes(path, table.to_csv(index=False).encode())


def safe_video_name(name: str) -> str:
    """A folder-safe video name: characters other than letters, digits, ``-``, ``.`` and ``_`` become ``_``."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-._" else "_" for ch in name).strip("._")
    return cleaned or "video"
