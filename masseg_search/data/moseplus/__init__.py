"""MOSE+ assembly: convert DAVIS, YouTube-VOS, YouTube-VIS, OVIS and BURST clips to the MOSE layout, select the
MOSE-like ones, and merge them with MOSE train (``masseg-search data convert`` / ``data build-moseplus``).

One file per box: ``writer`` (the common MOSE-layout clip writer), ``davis``/``ytvos``/``vis``/``burst`` (one
reader per source format), ``select`` (per-clip statistics, thresholds, quotas, distributions), ``merge`` (the
whole build). ``fake_sources`` writes small sources in every format for tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from masseg_search.errors import MassegError

FORMATS = ("davis", "ytvos", "vis", "ovis", "burst")
FrameMode = Literal["annotated", "all"]


def detect_format(src: Path) -> str | None:
    """A best guess of which source format a folder holds (for error hints), or None."""
    src = Path(src)
    if (src / "meta.json").is_file():
        return "ytvos"
    if (src / "JPEGImages" / "480p").is_dir() or (src / "JPEGImages" / "Full-Resolution").is_dir():
        return "davis"
    if (src / "instances.json").is_file():
        return "vis"
    if (src / "JPEGImages").is_dir() and (src / "Annotations").is_dir():
        return "mose"
    return None


def explain_not_format(src: Path, format_name: str, expected: str) -> MassegError:
    """The error for a source folder that is not the format named, with a guess of what it is."""
    guess = detect_format(src)
    if not Path(src).is_dir():
        return MassegError("source folder not found", src, f"pass the {format_name} folder that holds {expected}")
    hint = f"it looks like {guess}: use --format {guess}" if guess and guess not in (format_name, "mose") else (
        "it looks like a MOSE-layout root already: no conversion needed" if guess == "mose" else
        f"pass the {format_name} folder as the dataset ships it")
    return MassegError(f"not a {format_name} source folder (expected {expected})", src, hint)


def source_clips(format_name: str, src: str | Path, ann: str | Path | None = None, frames: FrameMode = "annotated",
                 split: str | None = None, images: str | Path | None = None) -> list:
    """Read a source in ``format_name`` into :class:`~masseg_search.moseplus.writer.SourceClip` objects."""
    src = Path(src)
    if format_name == "davis":
        from masseg_search.moseplus.davis import davis_clips

        return davis_clips(src, split=split)
    if format_name == "ytvos":
        from masseg_search.moseplus.ytvos import ytvos_clips

        return ytvos_clips(src, frames=frames, images=images)
    if format_name in ("vis", "ovis"):
        from masseg_search.moseplus.vis import vis_clips

        return vis_clips(src, ann, source=format_name)
    if format_name == "burst":
        from masseg_search.moseplus.burst import burst_clips

        if ann is None:
            raise MassegError("BURST keeps its masks in a JSON file", src, "pass it with --ann (e.g. train.json)")
        return burst_clips(src, ann, frames=frames)
    raise MassegError(f"unknown format {format_name!r}", src, f"use one of: {', '.join(FORMATS)}")


def convert_source(format_name: str, src: str | Path, out: str | Path, ann: str | Path | None = None,
                   shorter_side: int | None = 480, upscale: bool = True, frames: FrameMode = "annotated",
                   split: str | None = None, images: str | Path | None = None, max_videos: int | None = None,
                   jpeg_quality: int = 95, progress: bool = True, workers: int = 1):
    """Convert one source dataset into a MOSE-layout root at ``out`` (resumable); returns a ConversionSummary."""
    from masseg_search.moseplus.writer import convert_clips

    if format_name not in FORMATS:
        raise MassegError(f"unknown format {format_name!r}", src, f"use one of: {', '.join(FORMATS)}")
    clips = source_clips(format_name, src, ann=ann, frames=frames, split=split, images=images)
    if max_videos is not None:
        clips = clips[:max_videos]
    settings = {"format": format_name, "src": str(Path(src).resolve()), "ann": str(Path(ann).resolve()) if ann else None,
                "frames": frames, "split": split, "max_videos": max_videos}
    return convert_clips(clips, out, settings, shorter_side, upscale, jpeg_quality, progress, workers)
