"""MOSE / DAVIS submissions: the check the scorer would make, and the zip with video folders at its root.

A valid submission holds ``<video>/<frame>.png`` for every video of the split and every JPEG frame of it (same
names, same count), each an indexed (palette) PNG of the video's size whose values are 0 or an id of the video's
first given mask, and nothing else. In a zip the video folders sit at the root, or inside one wrapper folder.
The first given masks are the split's ``Annotations`` beside its ``JPEGImages`` unless another folder is named;
:func:`check_submission_report` says which PNG of each video bounded its ids. No torch, sam2 or ray here.
"""
from __future__ import annotations

import io
import os
import zipfile
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from masseg_search.data import layout
from masseg_search.errors import MassegError

_MAX_NAMES_IN_MESSAGE = 5


@dataclass(frozen=True)
class SubmissionProblem:
    """One violation: the file (or folder) inside the submission, what is wrong, and how to fix it."""

    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}. Fix: {self.fix}"


class _Source:
    """Uniform read access to a submission folder or zip: relative POSIX paths -> bytes."""

    def __init__(self, zip_or_dir: Path):
        self.location = zip_or_dir
        self.archive: zipfile.ZipFile | None = None
        if zip_or_dir.is_dir():
            self.files = sorted(p.relative_to(zip_or_dir).as_posix() for p in zip_or_dir.rglob("*") if p.is_file())
        elif zip_or_dir.is_file():
            try:
                self.archive = zipfile.ZipFile(zip_or_dir)
            except zipfile.BadZipFile:
                raise MassegError("not a zip file", zip_or_dir, "rezip the submission folder (masseg-search writes <out>.zip)") from None
            self.files = sorted(info.filename for info in self.archive.infolist() if not info.is_dir())
        else:
            raise MassegError("submission not found", zip_or_dir, "pass the submission folder or its .zip")

    def read(self, name: str) -> bytes:
        if self.archive is not None:
            return self.archive.read(name)
        return (self.location / name).read_bytes()


def _first_mask(annotation_dir: Path) -> tuple[str, set[int]] | None:
    """(PNG name, ids) of a video's first given mask (its first annotation PNG), or None if it has none."""
    pngs = layout.list_files(annotation_dir, (".png",))
    if not pngs:
        return None
    values = np.bincount(layout.read_mask(pngs[0]).ravel(), minlength=256)
    return pngs[0].name, {int(v) for v in np.flatnonzero(values) if v not in (0, layout.VOID_ID)}


def annotations_beside(images_root: str | Path) -> Path:
    """Where a split keeps its first-frame masks, given its JPEG folder: ``<split>/JPEGImages[/<level>]`` ->
    ``<split>/Annotations[/<level>]`` (also for the split root itself). The path is returned whether or not it exists."""
    images_root = Path(images_root)
    if (images_root / layout.IMAGE_DIR).is_dir():
        return layout.resolve_roots(images_root)[1]
    if images_root.name == layout.IMAGE_DIR:
        return images_root.with_name(layout.ANNOTATION_DIR)
    if images_root.parent.name == layout.IMAGE_DIR:  # a DAVIS resolution level, e.g. JPEGImages/480p
        return images_root.parent.with_name(layout.ANNOTATION_DIR) / images_root.name
    return images_root.with_name(layout.ANNOTATION_DIR)


@dataclass
class SubmissionReport:
    """What a submission check found and what it checked the ids against."""

    problems: list[SubmissionProblem]
    annotations_root: Path | None  # the first-frame masks (None: ids not checked)
    first_masks: dict[str, str] = field(default_factory=dict)  # video -> the PNG whose ids bounded it
    videos_without_masks: list[str] = field(default_factory=list)  # under annotations_root, no PNG at all

    def masks_summary(self) -> str:
        """One line saying which first-frame masks bounded the ids (for the CLI)."""
        if self.annotations_root is None:
            return "ids not checked (--no-annotations)"
        by_name = Counter(self.first_masks.values())
        parts = [f"{name} for {count} video{'s' if count > 1 else ''}" for name, count in by_name.most_common(3)]
        if len(by_name) > 3:
            parts.append(f"other frames for {sum(c for _, c in by_name.most_common()[3:])}")
        text = f"ids checked against the first-frame masks in {self.annotations_root} ({', '.join(parts) or 'none'})"
        if self.videos_without_masks:
            shown = ", ".join(self.videos_without_masks[:_MAX_NAMES_IN_MESSAGE])
            text += (f"; {len(self.videos_without_masks)} video(s) have no mask there, ids not checked for them: "
                     f"{shown}{', ...' if len(self.videos_without_masks) > _MAX_NAMES_IN_MESSAGE else ''}")
        return text


def _check_png(name: str, data: bytes, size: tuple[int, int], allowed: set[int] | None) -> list[SubmissionProblem]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format, mode, (width, height) = image.format, image.mode, image.size
            pixels = np.asarray(image) if mode == "P" else None
    except (OSError, SyntaxError, ValueError) as exc:
        return [SubmissionProblem(name, f"cannot be decoded as an image ({exc})", "rewrite the mask with masseg_search.data.layout.write_mask")]
    problems = []
    if image_format != "PNG":
        problems.append(SubmissionProblem(name, f"is a {image_format} file with a .png name", "save it as a PNG"))
    if mode != "P":
        problems.append(SubmissionProblem(name, f"is a mode-{mode} image, not an indexed (palette) PNG",
                                "save masks as palette PNGs whose pixel values are object ids (layout.write_mask)"))
    if (height, width) != size:
        problems.append(SubmissionProblem(name, f"is {width}x{height} but the video's frames are {size[1]}x{size[0]}",
                                "upsample the mask to the JPEG size (ensemble does this from the stored logits)"))
    if pixels is not None and allowed is not None and pixels.size and not set(range(1, int(pixels.max()) + 1)) <= allowed:
        present = np.flatnonzero(np.bincount(pixels.ravel(), minlength=256))  # only when some value may be bad
        bad = sorted(int(v) for v in present if v != 0 and v not in allowed)
        if bad:
            problems.append(SubmissionProblem(name, f"has values {bad} that are not ids of the first frame ({sorted(allowed)})",
                                    "write only 0 and the first frame's object ids"))
    return problems


def _video_problems(job: tuple[Path, str, list[str], Path, set[int] | None]) -> list[SubmissionProblem]:
    """Check one video's PNGs (run in a worker for big submissions)."""
    location, prefix, png_names, image_dir, allowed = job
    source = _Source(location)
    frames = layout.list_files(image_dir, layout.IMAGE_EXTENSIONS)
    size = layout.image_size(frames[0])
    problems = []
    for name in png_names:
        problems += _check_png(name, source.read(prefix + name), size, allowed)
    return problems


def _find_prefix(files: list[str], video_names: set[str]) -> tuple[str, list[SubmissionProblem]]:
    """'' when video folders are at the root, '<wrapper>/' when inside one wrapper folder."""
    top = {PurePosixPath(f).parts[0] for f in files if len(PurePosixPath(f).parts) > 1}
    if top & video_names:
        return "", []
    wrappers = {PurePosixPath(f).parts[0] for f in files}
    if len(wrappers) == 1:
        wrapper = next(iter(wrappers))
        inner = {PurePosixPath(f).parts[1] for f in files if len(PurePosixPath(f).parts) > 2}
        if inner & video_names:
            return wrapper + "/", []
    return "", [SubmissionProblem(".", "no video folder at the top of the submission (nor inside one wrapper folder)",
                        "zip the video folders themselves: cd <out> && zip -r ../sub.zip */ (or use masseg-search ensemble)")]


def check_submission(zip_or_dir: str | Path, images_root: str | Path, annotations_root: str | Path | None = None,
                     videos: list[str] | None = None, workers: int = 1,
                     find_annotations: bool = True) -> list[SubmissionProblem]:
    """Every violation of the scorer's rules in a submission folder or zip; an empty list means it is valid.

    See :func:`check_submission_report` (this is its ``problems``).
    """
    return check_submission_report(zip_or_dir, images_root, annotations_root, videos, workers, find_annotations).problems


def _resolve_annotations(images_root: Path, annotations_root: str | Path | None, find: bool) -> Path | None:
    """The first-frame masks folder: the one named, else the split's ``Annotations`` beside ``images_root``."""
    if annotations_root is None:
        if not find:
            return None
        beside = annotations_beside(images_root)
        if not beside.is_dir():
            raise MassegError("no first-frame masks beside the JPEG folder, so the ids cannot be checked", beside,
                              "pass --annotations with the split's given masks, or --no-annotations to skip the id check")
        return beside
    annotations_root = Path(annotations_root)
    if (annotations_root / layout.ANNOTATION_DIR).is_dir():
        annotations_root = layout.resolve_roots(annotations_root)[1]
    if not annotations_root.is_dir():
        raise MassegError("first-frame masks folder not found", annotations_root,
                          "pass the split's Annotations folder (or the dataset root holding it)")
    return annotations_root


def check_submission_report(zip_or_dir: str | Path, images_root: str | Path,
                            annotations_root: str | Path | None = None, videos: list[str] | None = None,
                            workers: int = 1, find_annotations: bool = True) -> SubmissionReport:
    """Check a submission folder or zip against the scorer's rules, and say what the ids were checked against.

    ``images_root``: the split's ``JPEGImages`` (or the dataset root holding it); every video folder there is
    expected unless ``videos`` names them. ``annotations_root``: the given first-frame masks; None = the split's
    ``Annotations`` beside ``images_root`` (an error when there is none), or, with ``find_annotations=False``, no
    id check.
    """
    zip_or_dir, images_root = Path(zip_or_dir), Path(images_root)
    if (images_root / layout.IMAGE_DIR).is_dir():
        images_root = layout.resolve_roots(images_root)[0]
    if not images_root.is_dir():
        raise MassegError("JPEG folder not found", images_root, "pass the split's JPEGImages folder (one sub-folder per video)")
    annotations_root = _resolve_annotations(images_root, annotations_root, find_annotations)
    report = SubmissionReport([], annotations_root)
    if videos is None:
        videos = sorted(p.name for p in images_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    source = _Source(zip_or_dir)
    video_names = set(videos)
    prefix, problems = _find_prefix(source.files, video_names) if source.files else ("", [])
    if problems:
        report.problems = problems
        return report
    by_video: dict[str, list[str]] = {}
    for name in source.files:
        if not name.startswith(prefix):
            problems.append(SubmissionProblem(name, "is outside the wrapper folder", "remove it; only video folders belong in a submission"))
            continue
        parts = PurePosixPath(name[len(prefix):]).parts
        if len(parts) == 2 and parts[0] in video_names and parts[1].endswith(".png") and not parts[1].startswith("."):
            by_video.setdefault(parts[0], []).append(parts[1])
        elif len(parts) >= 1 and parts[0] not in video_names and len(parts) > 1:
            problems.append(SubmissionProblem(name, f"belongs to {parts[0]!r}, which is not a video of the split",
                                    "remove the folder (wrong split?) or pass the right --images"))
        else:
            problems.append(SubmissionProblem(name, "is a stray file (only <video>/<frame>.png belongs here)", "delete it"))
    jobs = []
    for video in videos:
        frame_names = [p.stem for p in layout.list_files(images_root / video, layout.IMAGE_EXTENSIONS)]
        if not frame_names:
            raise MassegError(f"video {video!r} has no JPEG frames", images_root / video, "pass the split's JPEGImages folder")
        pngs = by_video.get(video, [])
        if not pngs:
            problems.append(SubmissionProblem(prefix + video, f"video folder is missing or empty ({len(frame_names)} frames expected)",
                                    "write every video of the split (rerun ensemble; it resumes)"))
            continue
        stems = {p[:-4] for p in pngs}
        missing = [f for f in frame_names if f not in stems]
        extra = sorted(stems - set(frame_names))
        if missing:
            problems.append(SubmissionProblem(prefix + video, f"{len(missing)} of {len(frame_names)} frames missing, e.g. "
                                    f"{', '.join(m + '.png' for m in missing[:_MAX_NAMES_IN_MESSAGE])}",
                                    "write one PNG per JPEG frame, named like the frame"))
        for stem in extra:
            problems.append(SubmissionProblem(f"{prefix}{video}/{stem}.png", "has no JPEG frame of that name", "delete it or rename it to its frame's name"))
        allowed = None
        if annotations_root is not None:
            first = _first_mask(annotations_root / video)
            if first is None:
                report.videos_without_masks.append(video)
            else:
                report.first_masks[video], allowed = first
        jobs.append((zip_or_dir, prefix, [f"{video}/{p}" for p in sorted(pngs) if p[:-4] in set(frame_names)],
                     images_root / video, allowed))
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for found in pool.map(_video_problems, jobs, chunksize=max(1, len(jobs) // (4 * workers))):
                problems += [SubmissionProblem(prefix + p.path, p.message, p.fix) for p in found]
    else:
        for job in jobs:
            problems += [SubmissionProblem(prefix + p.path, p.message, p.fix) for p in _video_problems(job)]
    report.problems = problems
    return report


def write_submission_zip(folder: str | Path, zip_path: str | Path) -> Path:
    """Zip ``folder``'s video folders with the video folders at the zip root (temp file + rename)."""
    folder, zip_path = Path(folder), Path(zip_path)
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = layout.temporary_sibling(zip_path)
    os.close(fd)
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for video_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                for png in sorted(video_dir.glob("*.png")):
                    archive.write(png, f"{video_dir.name}/{png.name}")
        os.replace(temp, zip_path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return zip_path
