"""MOSE / DAVIS dataset layout and palette-PNG I/O.

MOSE: ``ROOT/JPEGImages/<video>/<frame>.jpg`` and ``ROOT/Annotations/<video>/<frame>.png`` (indexed PNG, DAVIS
palette, 0 = background, ids 1..N). DAVIS adds a resolution level under both folders (``480p/``; DAVIS 2016 also
``1080p/``, DAVIS 2017 ``Full-Resolution/``) and keeps split lists in ``ImageSets/``: DAVIS 2017's
``ImageSets/2017/<split>.txt`` (and ``ImageSets/2016/<split>.txt`` in the 2017 release) name one sequence a line;
DAVIS 2016's ``ImageSets/<level>/<split>.txt`` name frame pairs, ``/JPEGImages/480p/bear/00000.jpg
/Annotations/480p/bear/00000.png``. A split list file of either kind selects videos in either layout. DAVIS 2016
masks are 8-bit grayscale PNGs, 0 = background and 255 = the one object (:func:`read_binary_mask`); everything
else here reads palette PNGs.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterator

import numpy as np
from PIL import Image

from masseg_search.errors import MassegError

IMAGE_DIR = "JPEGImages"
ANNOTATION_DIR = "Annotations"
DAVIS_LEVELS = ("480p", "1080p", "Full-Resolution")
BINARY_OBJECT_VALUE = 255  # the object in a DAVIS 2016 grayscale mask
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
VOID_ID = 255


def _davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC palette: bits of the index spread over the high bits of R, G and B."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        code, red, green, blue = index, 0, 0, 0
        for bit in range(8):
            red |= ((code >> 0) & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette[index] = (red, green, blue)
    return palette


DAVIS_PALETTE = _davis_palette()
_PALETTE_BYTES = DAVIS_PALETTE.tobytes()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import; os.umask can only be read by setting it


def temporary_sibling(path: Path) -> tuple[int, str]:
    """An open temporary file beside ``path`` with the mode a plain ``open`` would give (mkstemp's is 0600, which
    would make shared reports and submissions unreadable to the rest of a team)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_UMASK)
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temporary_sibling(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_mask(path: str | Path) -> np.ndarray:
    """Read an indexed (palette) PNG as a ``uint8`` array of object ids; RGB or grayscale is an error."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if mode != "P":
                raise MassegError(
                    f"annotation PNG is mode {mode!r}, not an indexed (palette) PNG",
                    path,
                    "save masks as palette PNGs whose pixel values are object ids (0 = background), "
                    "e.g. with masseg_search.data.layout.write_mask",
                )
            return np.asarray(image, dtype=np.uint8).copy()
    except MassegError:
        raise
    except FileNotFoundError:
        raise MassegError("annotation PNG not found", path, "check the video and frame name") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MassegError(f"cannot decode PNG ({exc})", path, "the file is corrupt or truncated: re-export it") from None


def is_grayscale_mode(mode: str) -> bool:
    """Whether a PIL image mode is a single-channel grayscale or bilevel one (not a palette)."""
    return mode in ("L", "1", "I", "I;16", "I;16B", "I;16L")


def read_binary_mask(path: str | Path) -> np.ndarray:
    """Read a DAVIS 2016 mask (8-bit grayscale, 0 = background, 255 = the one object) as 0/1 ``uint8`` ids.

    DAVIS 2016's own reader (davis-matlab ``db_read_annot.m``) asserts one channel and values in {0, 255}, then
    takes ``> 0``; any other value here is an error naming the file rather than a silent threshold.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            if not is_grayscale_mode(image.mode):
                raise MassegError(f"annotation PNG is mode {image.mode!r}, not a grayscale DAVIS 2016 mask", path,
                                  "DAVIS 2016 masks are 8-bit grayscale 0/255; palette PNGs are read as object ids")
            values = np.asarray(image)
    except MassegError:
        raise
    except FileNotFoundError:
        raise MassegError("annotation PNG not found", path, "check the video and frame name") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MassegError(f"cannot decode PNG ({exc})", path, "the file is corrupt or truncated: re-export it") from None
    if values.dtype == bool:  # mode "1"
        return values.astype(np.uint8)
    present = np.unique(values)
    odd = [int(v) for v in present if v not in (0, BINARY_OBJECT_VALUE)]
    if odd:
        raise MassegError(f"grayscale mask holds values {odd[:5]} besides 0 and {BINARY_OBJECT_VALUE}", path,
                          "a DAVIS 2016 mask is 0 (background) / 255 (object); save several objects as a palette PNG "
                          "of ids (masseg_search.data.layout.write_mask)")
    return (values == BINARY_OBJECT_VALUE).astype(np.uint8)


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Encode an id mask as palette-PNG bytes (DAVIS palette)."""
    import io

    if mask.dtype != np.uint8:
        if mask.size and (mask.min() < 0 or mask.max() > 255):
            raise MassegError(f"mask values {mask.min()}..{mask.max()} do not fit a palette PNG (0..255)")
        mask = mask.astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(mask))  # mode "L"; putpalette turns it into "P"
    image.putpalette(_PALETTE_BYTES)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write an id mask as an indexed PNG with the DAVIS palette, atomically."""
    atomic_write_bytes(Path(path), encode_mask_png(mask))


def read_frame(path: str | Path) -> np.ndarray:
    """Read a video frame as an RGB ``uint8`` array (H, W, 3)."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise MassegError("frame not found", path, "check the video folder") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise MassegError(f"cannot decode image ({exc})", path, "the file is corrupt or truncated: re-extract it") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise MassegError(f"cannot read image header ({exc})", path, "the file is corrupt: re-extract it") from None
    return height, width


def list_files(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files in ``folder`` with one of ``extensions``, sorted by name (MOSE frame order), hidden files skipped."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in extensions and not p.name.startswith("."))


@dataclass
class Video:
    """One video: its frames (sorted) and its annotation folder (may hold only some frames)."""

    name: str
    image_dir: Path
    annotation_dir: Path
    frame_paths: list[Path] = field(default_factory=list)

    @property
    def frame_names(self) -> list[str]:
        """Frame names without extension, in order (``00000``, ``00001``, ...)."""
        return [p.stem for p in self.frame_paths]

    def annotation_paths(self) -> list[Path]:
        """The annotation PNGs present for this video, sorted."""
        return list_files(self.annotation_dir, (".png",))

    def annotation_path(self, frame_name: str) -> Path:
        """Where the annotation of ``frame_name`` lives (whether or not it exists)."""
        return self.annotation_dir / f"{frame_name}.png"

    def first_annotation(self) -> tuple[int, np.ndarray]:
        """(frame index, id mask) of the first annotated frame; a clear error if there is none."""
        names = {name: index for index, name in enumerate(self.frame_names)}
        for path in self.annotation_paths():
            if path.stem in names:
                return names[path.stem], read_mask(path)
        raise MassegError(
            f"video {self.name!r} has no annotation for any of its frames",
            self.annotation_dir,
            "give the first frame's mask as <frame>.png next to the other annotations",
        )

    def read_frames(self) -> Iterator[np.ndarray]:
        """Decode the frames in order."""
        for path in self.frame_paths:
            yield read_frame(path)


@dataclass
class Dataset:
    """A MOSE- or DAVIS-layout dataset: where images and annotations are, and the selected videos."""

    root: Path
    image_root: Path
    annotation_root: Path
    video_names: list[str]

    def video(self, name: str) -> Video:
        """The video ``name`` with its frames listed."""
        image_dir = self.image_root / name
        return Video(name, image_dir, self.annotation_root / name, list_files(image_dir, IMAGE_EXTENSIONS))

    def videos(self) -> Iterator[Video]:
        """Every selected video, in list order."""
        for name in self.video_names:
            yield self.video(name)

    def __len__(self) -> int:
        return len(self.video_names)


def parse_split_line(line: str) -> tuple[str, str | None] | None:
    """(video, frame stem or None) of one split-list line; None for a blank line or a ``#`` comment.

    A line is a video name (MOSE, DAVIS 2017) or a DAVIS 2016 frame pair such as
    ``/JPEGImages/480p/bear/00000.jpg /Annotations/480p/bear/00000.png`` (video ``bear``, frame ``00000``).
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    first = text.split()[0]
    if "/" in first and len(PurePosixPath(first).parts) >= 2:
        image = PurePosixPath(first)
        return image.parent.name, image.stem
    return text, None


def read_split_list(path: str | Path) -> list[str]:
    """Video names from a list file (one a line; blank lines and ``#`` comments ignored).

    DAVIS 2016 lists (one frame pair a line) give each sequence once, in order of its first frame.
    """
    path = Path(path)
    if not path.is_file():
        raise MassegError("split list file not found", path, "pass an existing file with one video name per line")
    names: list[str] = []
    from_frames: set[str] = set()
    for line in path.read_text().splitlines():
        parsed = parse_split_line(line)
        if parsed is None:
            continue
        name, frame = parsed
        if frame is None:
            names.append(name)  # a name listed twice stays twice: `data check` reports it
        elif name not in from_frames:
            from_frames.add(name)
            names.append(name)
    return names


def write_split_list(path: str | Path, names: list[str]) -> None:
    """Write a split list file, one video name a line."""
    atomic_write_bytes(Path(path), ("\n".join(names) + "\n").encode())


def _resolve_roots(root: Path) -> tuple[Path, Path]:
    """Find (image_root, annotation_root) for a MOSE root, a DAVIS root, or an Annotations-only tree."""
    image_root, annotation_root = root / IMAGE_DIR, root / ANNOTATION_DIR
    for level in DAVIS_LEVELS:
        if (image_root / level).is_dir() or (annotation_root / level).is_dir():
            return image_root / level, annotation_root / level
    return image_root, annotation_root


def split_list_candidates(root: str | Path, split: str) -> list[Path]:
    """Where the list file of split ``split`` may be, in the order looked at: ``ROOT/<split>.txt``,
    ``ROOT/ImageSets/<split>.txt``, DAVIS 2017's ``ImageSets/2017/<split>.txt``, DAVIS 2016's
    ``ImageSets/<level>/<split>.txt``. A split such as ``2016/val`` names a sub-folder of ``ImageSets``."""
    root = Path(root)
    return [root / f"{split}.txt", root / "ImageSets" / f"{split}.txt", root / "ImageSets" / "2017" / f"{split}.txt",
            *(root / "ImageSets" / level / f"{split}.txt" for level in DAVIS_LEVELS)]


def find_split_list(root: str | Path, split: str) -> Path:
    """The list file of split ``split`` (see :func:`split_list_candidates`); an error names the first candidate.
    A ``split`` that is itself a list file (a path ending in ``.txt``: SAM2's MOSE val list) is taken as it is
    (relative to the working folder, else to ROOT)."""
    root = Path(root)
    given = Path(split)
    if given.suffix == ".txt":
        for candidate in (given, root / given):
            if candidate.is_file():
                return candidate
        raise MassegError("split list file not found", given, f"pass an existing list file (one video a line), or a split name under {root}")
    candidates = split_list_candidates(root, split)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise MassegError(f"no list file for split {split!r} (looked for {', '.join(str(c.relative_to(root)) for c in candidates)})",
                      root, f"create {root / (split + '.txt')} or pass --split-list")


def resolve_roots(root: str | Path) -> tuple[Path, Path]:
    """(image root, annotation root) of a MOSE root or of a DAVIS root (its ``480p/`` or ``Full-Resolution/`` level)."""
    return _resolve_roots(Path(root))


def open_dataset(root: str | Path, split_list: str | Path | None = None, split: str | None = None) -> Dataset:
    """Open a MOSE or DAVIS dataset at ``root``.

    ``split_list`` is a list file; ``split`` a name looked up as ``ROOT/<split>.txt``, ``ROOT/ImageSets/<split>.txt``
    or ``ROOT/ImageSets/2017/<split>.txt``. Without either, every video folder under the images (or, if there are
    no images, the annotations) is taken.
    """
    root = Path(root)
    if not root.is_dir():
        raise MassegError("dataset root not found", root, "pass the folder that holds JPEGImages/ and Annotations/")
    image_root, annotation_root = _resolve_roots(root)
    if not image_root.is_dir() and not annotation_root.is_dir():
        raise MassegError(
            f"no {IMAGE_DIR}/ or {ANNOTATION_DIR}/ folder",
            root,
            "point at a MOSE root (JPEGImages/<video>/, Annotations/<video>/) or a DAVIS root (…/480p/)",
        )
    if split_list is None and split is not None:
        split_list = find_split_list(root, split)
    if split_list is not None:
        names = read_split_list(split_list)
    else:
        listing_root = image_root if image_root.is_dir() else annotation_root
        names = sorted(p.name for p in listing_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    return Dataset(root, image_root, annotation_root, names)


def open_annotations(folder: str | Path) -> Dataset:
    """Open a bare ``Annotations``-style tree (``<video>/<frame>.png``), e.g. a prediction or a submission."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MassegError("annotation folder not found", folder, "pass the folder that holds one sub-folder per video")
    if (folder / ANNOTATION_DIR).is_dir():
        folder = _resolve_roots(folder)[1]
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return Dataset(folder, folder, folder, names)
