"""Validate a MOSE / DAVIS dataset and report every problem, each with its file and the fix.

Frames are checked from their headers plus the end-of-image marker (a truncated JPEG or PNG lacks it), so a check
of a large set stays fast; ``decode_images=True`` decodes every frame too. Annotations are decoded once each: the
ids they hold are needed for the first-frame rule.
"""
from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from PIL import Image

from masseg_search.data.layout import (
    BINARY_OBJECT_VALUE,
    VOID_ID,
    Dataset,
    is_grayscale_mode,
    open_dataset,
    read_split_list,
    resolve_roots,
)
from masseg_search.errors import MassegError

ERROR = "error"
WARNING = "warning"
_INTEGER_NAME = re.compile(r"^\d+$")
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"
_NAMES_SHOWN = 5


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset: where, what, how to fix it, how bad (``error`` or ``warning``), its kind."""

    path: Path
    message: str
    fix: str
    severity: str = ERROR
    kind: str = "other"

    def __str__(self) -> str:
        return f"{self.severity.upper()} {self.path}: {self.message} (fix: {self.fix})"


@dataclass
class CheckSummary:
    """What was checked, besides the problems."""

    videos: int = 0
    frames: int = 0
    annotations: int = 0


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_NAMES_SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _NAMES_SHOWN else "")


def _file_ends_with(path: Path, marker: bytes) -> bool:
    """Whether the file ends with ``marker``, allowing trailing padding bytes some encoders add."""
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        tail_size = min(size, 1024)
        handle.seek(size - tail_size)
        tail = handle.read().rstrip(b"\x00\r\n ")
    return tail.endswith(marker)


def _check_frame(path: Path, decode: bool) -> tuple[tuple[int, int] | None, str | None]:
    """(height, width) of a frame and a problem message if it is unreadable or truncated."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            image_format = image.format
            if decode:
                image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return None, f"cannot read image ({exc})"
    marker = _JPEG_END if image_format == "JPEG" else _PNG_END if image_format == "PNG" else None
    if marker is not None and not _file_ends_with(path, marker):
        return (height, width), f"truncated {image_format} (no end-of-image marker)"
    return (height, width), None


def _check_frame_names(video_dir: Path, frame_paths: list[Path]) -> list[Problem]:
    """Non-integer frame names, and holes in the frame numbering (a regular stride such as 5 is fine)."""
    problems = []
    bad = [p.name for p in frame_paths if not _INTEGER_NAME.match(p.stem)]
    if bad:
        problems.append(
            Problem(video_dir, f"frame names that are not integers: {_names(bad)}", "name frames by their number with zero padding, e.g. 00000.jpg", ERROR, "frame-names")
        )
    numbers = sorted(int(p.stem) for p in frame_paths if _INTEGER_NAME.match(p.stem))
    widths = Counter(len(p.stem) for p in frame_paths if _INTEGER_NAME.match(p.stem))
    if len(widths) > 1:
        problems.append(
            Problem(video_dir, f"frame names of different lengths {sorted(widths)}: sorted by name they are out of order", "zero-pad every frame name to the same width", ERROR, "frame-names")
        )
    if len(numbers) >= 2:
        steps = np.diff(numbers)
        stride = 0
        for step in steps:
            stride = gcd(stride, int(step))
        if stride == 0:
            problems.append(Problem(video_dir, "duplicate frame numbers", "give each frame a unique number", ERROR, "frame-names"))
        else:
            holes = [(numbers[i] + stride, numbers[i + 1] - stride) for i in np.nonzero(steps > stride)[0]]
            if holes:
                text = [f"{a}" if a == b else f"{a}-{b}" for a, b in holes]
                problems.append(
                    Problem(video_dir, f"missing frames (gaps in the numbering, stride {stride}): {_names(text)}", "re-extract the video so no frame is missing", ERROR, "missing-frames")
                )
    return problems


def _check_annotation(path: Path, root: Path) -> tuple[np.ndarray | None, Problem | None]:
    """Decode one annotation: its id mask, or the problem that prevents using it (``root``: the dataset, for fixes)."""
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode != "P":
                if is_grayscale_mode(mode):
                    values = set(np.unique(np.asarray(image)).astype(np.int64).tolist())
                    if mode == "1" or values <= {0, BINARY_OBJECT_VALUE}:
                        return None, Problem(
                            path,
                            f"annotation PNG is grayscale with values {sorted(values)} (mode {mode!r}): "
                            "a DAVIS 2016 mask (0 = background, 255 = the one object), not an indexed PNG of ids",
                            f"convert the dataset: masseg-search data convert --format davis --src {root} --out "
                            "<new folder> (it reads 0/255 masks as object 1 and writes palette PNGs)",
                            ERROR,
                            "davis2016-grayscale",
                        )
                kind = "RGB" if mode in ("RGB", "RGBA") else "grayscale" if is_grayscale_mode(mode) or mode == "LA" else mode
                return None, Problem(
                    path,
                    f"annotation PNG is {kind} (mode {mode!r}), not indexed",
                    "save it as a palette PNG whose pixel values are object ids (masseg_search.data.layout.write_mask)",
                    ERROR,
                    "not-indexed",
                )
            mask = np.asarray(image, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as exc:
        return None, Problem(path, f"corrupt or truncated PNG ({exc})", "re-export this annotation", ERROR, "corrupt-file")
    return mask, None


def _video_problems(dataset: Dataset, name: str, allow_late_objects: bool, decode_images: bool) -> tuple[list[Problem], int, int]:
    """Every problem of one video, with the number of frames and annotations seen."""
    video = dataset.video(name)
    problems: list[Problem] = []
    annotation_paths = video.annotation_paths()
    if not video.image_dir.is_dir():
        if annotation_paths:
            problems.append(Problem(video.annotation_dir, "annotations without images: the video has no frame folder", f"add the frames under {video.image_dir} or remove the annotations", ERROR, "annotations-without-images"))
        else:
            problems.append(Problem(video.image_dir, "video folder not found", "remove the video from the split list or add its frames", ERROR, "missing-video"))
        return problems, 0, len(annotation_paths)
    frame_paths = video.frame_paths
    if not frame_paths:
        problems.append(Problem(video.image_dir, "empty video folder (no frames)", "add the frames or remove the video", ERROR, "empty-video"))
        if annotation_paths:
            problems.append(Problem(video.annotation_dir, "annotations without images: the video has no frames", "add the frames or remove the annotations", ERROR, "annotations-without-images"))
        return problems, 0, len(annotation_paths)
    problems += _check_frame_names(video.image_dir, frame_paths)

    frame_sizes: dict[str, tuple[int, int]] = {}
    for path in frame_paths:
        size, message = _check_frame(path, decode_images)
        if message:
            problems.append(Problem(path, message, "re-extract this frame", ERROR, "corrupt-file"))
        if size is not None:
            frame_sizes[path.stem] = size
    sizes = Counter(frame_sizes.values())
    if len(sizes) > 1:
        common = sizes.most_common(1)[0][0]
        odd = [stem for stem, size in frame_sizes.items() if size != common]
        problems.append(Problem(video.image_dir, f"frames of different sizes (most are {common[0]}x{common[1]}; not: {_names(odd)})", "resize every frame of a video to one size", ERROR, "size-mismatch"))

    if not video.annotation_dir.is_dir() or not annotation_paths:
        problems.append(Problem(video.annotation_dir, "no annotation for this video (the first frame's mask is needed)", "add <first frame>.png with the objects to track", ERROR, "missing-annotation"))
        return problems, len(frame_paths), 0
    frame_index = {stem: index for index, stem in enumerate(video.frame_names)}
    orphans = [p.name for p in annotation_paths if p.stem not in frame_index]
    if orphans:
        problems.append(Problem(video.annotation_dir, f"annotations without images: {_names(orphans)}", "remove them or add the matching frames (same name, .jpg)", ERROR, "annotations-without-images"))
    matched = sorted((p for p in annotation_paths if p.stem in frame_index), key=lambda p: frame_index[p.stem])
    first_ids: set[int] | None = None
    late: dict[int, list[str]] = {}
    for path in matched:
        mask, problem = _check_annotation(path, dataset.root)
        if problem:
            problems.append(problem)
            if first_ids is None:
                first_ids = set()  # the first mask is unusable: do not judge later ids against the next one
            continue
        expected = frame_sizes.get(path.stem)
        if expected is not None and mask.shape != expected:
            problems.append(
                Problem(path, f"annotation is {mask.shape[0]}x{mask.shape[1]} but its frame is {expected[0]}x{expected[1]}", "resize the mask with nearest-neighbour to the frame size, or re-export it", ERROR, "size-mismatch")
            )
        ids = set(np.unique(mask).tolist()) - {0, VOID_ID}
        if first_ids is None:
            first_ids = ids
            if frame_index[path.stem] != 0:
                problems.append(Problem(path, f"the first annotated frame is frame {frame_index[path.stem]}, not the first frame", "annotate the first frame, or drop the frames before it", WARNING, "first-frame"))
            if not ids:
                problems.append(Problem(path, "empty first-frame mask (no object ids)", "draw the objects to track in the first frame, or drop the video", ERROR, "empty-first-mask"))
            continue
        if first_ids and not allow_late_objects:
            for object_id in sorted(ids - first_ids):
                late.setdefault(object_id, []).append(path.stem)
    for object_id, stems in late.items():
        problems.append(
            Problem(
                video.annotation_dir,
                f"object id {object_id} appears in later frames ({_names(stems)}) but not in the first annotated frame",
                "evaluation tracks only first-frame objects: remove the id, add it to the first frame, or pass --allow-late-objects for training clips",
                ERROR,
                "late-object",
            )
        )
    return problems, len(frame_paths), len(annotation_paths)


def check_dataset_with_summary(
    root: str | Path,
    split_list: str | Path | None = None,
    allow_late_objects: bool = False,
    decode_images: bool = False,
    workers: int = 1,
) -> tuple[list[Problem], CheckSummary]:
    """Check a dataset: (every problem found, what was checked). See ``check_dataset``."""
    root = Path(root)
    problems: list[Problem] = []
    summary = CheckSummary()
    try:
        dataset = open_dataset(root, split_list=split_list)
    except MassegError as exc:
        return [Problem(exc.path or root, str(exc), exc.fix or "point at a dataset root", ERROR, "layout")], summary
    names = list(dataset.video_names)
    if split_list is not None:
        listed = read_split_list(split_list)
        duplicates = sorted(name for name, count in Counter(listed).items() if count > 1)
        if duplicates:
            problems.append(Problem(Path(split_list), f"videos listed twice: {_names(duplicates)}", "list each video once", ERROR, "split-list"))
        names = list(dict.fromkeys(names))
    else:
        image_root, annotation_root = resolve_roots(root)
        if image_root.is_dir() and annotation_root.is_dir():
            image_videos = set(names)
            extra = sorted(p.name for p in annotation_root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in image_videos)
            names += extra  # their check reports "annotations without images"
    if not names:
        problems.append(Problem(dataset.image_root, "no videos found", "put one folder of frames per video here, or fix the split list", ERROR, "empty-dataset"))
    summary.videos = len(names)

    def run(name: str) -> tuple[list[Problem], int, int]:
        return _video_problems(dataset, name, allow_late_objects, decode_images)

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(run, names))
    else:
        results = [run(name) for name in names]
    for video_problems, frames, annotations in results:
        problems += video_problems
        summary.frames += frames
        summary.annotations += annotations
    return problems, summary


def check_dataset(root: str | Path, split_list: str | Path | None = None, allow_late_objects: bool = False, decode_images: bool = False, workers: int = 1) -> list[Problem]:
    """Validate a MOSE or DAVIS dataset and return every problem (an empty list when it is clean).

    Checks: missing frames, gaps and non-integer frame names; frame / annotation size mismatch; annotation PNGs that
    are RGB or grayscale instead of indexed (a grayscale 0/255 mask is named as DAVIS 2016's, with the converter
    that reads it); ids in later frames that are not in the first annotated frame (unless
    ``allow_late_objects``); an empty first-frame mask; corrupt or truncated JPEG/PNG files (``decode_images``
    decodes every frame, not just its header and end marker); empty video folders; annotations without images.
    """
    return check_dataset_with_summary(root, split_list, allow_late_objects, decode_images, workers)[0]


def summary_table(problems: list[Problem]) -> list[tuple[str, int, int]]:
    """(kind, errors, warnings) per problem kind, most frequent first."""
    counts: dict[str, list[int]] = {}
    for problem in problems:
        row = counts.setdefault(problem.kind, [0, 0])
        row[0 if problem.severity == ERROR else 1] += 1
    return sorted(((kind, e, w) for kind, (e, w) in counts.items()), key=lambda row: (-(row[1] + row[2]), row[0]))

