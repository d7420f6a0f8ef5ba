"""`masseg-search data convert`: one source dataset, read by its format's reader, written in the MOSE layout."""
from __future__ import annotations

from pathlib import Path

from masseg_search.data.moseplus.formats import FORMATS, FrameMode
from masseg_search.data.moseplus.sources.burst import burst_clips
from masseg_search.data.moseplus.sources.davis import davis_clips
from masseg_search.data.moseplus.sources.vis import vis_clips
from masseg_search.data.moseplus.sources.ytvos import ytvos_clips
from masseg_search.data.moseplus.writer import ConversionSummary, SourceClip, convert_clips
from masseg_search.errors import MassegError


def source_clips(format_name: str, src: str | Path, ann: str | Path | None = None, frames: FrameMode = "annotated",
                 split: str | None = None, images: str | Path | None = None) -> list[SourceClip]:
    """Read a source in ``format_name`` into :class:`~masseg_search.data.moseplus.writer.SourceClip` objects."""
    src = Path(src)
    if format_name == "davis":
        return davis_clips(src, split=split)
    if format_name == "ytvos":
        return ytvos_clips(src, frames=frames, images=images)
    if format_name in ("vis", "ovis"):
        return vis_clips(src, ann, source=format_name)
    if format_name == "burst":
        if ann is None:
            raise MassegError("BURST keeps its masks in a JSON file", src, "pass it with --ann (e.g. train.json)")
        return burst_clips(src, ann, frames=frames)
    raise MassegError(f"unknown format {format_name!r}", src, f"use one of: {', '.join(FORMATS)}")


def convert_source(format_name: str, src: str | Path, out: str | Path, ann: str | Path | None = None,
                   shorter_side: int | None = 480, upscale: bool = True, frames: FrameMode = "annotated",
                   split: str | None = None, images: str | Path | None = None, max_videos: int | None = None,
                   jpeg_quality: int = 95, progress: bool = True, workers: int = 1) -> ConversionSummary:
    """Convert one source dataset into a MOSE-layout root at ``out`` (resumable); returns a ConversionSummary."""
    if format_name not in FORMATS:
        raise MassegError(f"unknown format {format_name!r}", src, f"use one of: {', '.join(FORMATS)}")
    clips = source_clips(format_name, src, ann=ann, frames=frames, split=split, images=images)
    if max_videos is not None:
        clips = clips[:max_videos]
    settings = {"format": format_name, "src": str(Path(src).resolve()), "ann": str(Path(ann).resolve()) if ann else None,
                "frames": frames, "split": split, "max_videos": max_videos}
    return convert_clips(clips, out, settings, shorter_side, upscale, jpeg_quality, progress, workers)
