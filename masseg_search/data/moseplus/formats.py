"""The source formats MOSE+ reads, and the errors that guess which format a folder really holds."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from masseg_search.data.layout import DAVIS_LEVELS
from masseg_search.errors import MassegError

FORMATS = ("davis", "ytvos", "vis", "ovis", "burst")
FrameMode = Literal["annotated", "all"]


def detect_format(src: Path) -> str | None:
    """A best guess of which source format a folder holds (for error hints), or None."""
    src = Path(src)
    if (src / "meta.json").is_file():
        return "ytvos"
    if any((src / "JPEGImages" / level).is_dir() for level in DAVIS_LEVELS):
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
