"""Stored predictions: low-res logits per configuration, video and object, and turning them into id masks.

Layout (what `infer` writes and `ensemble`/`tune-mss` read)::

    <predictions>/<config_id>/<video>/object_<id>.npz   logits float16 (T, h, w), object_score float32 (T,),
                                                        predicted_iou float32 (T,) where the model gives one
    <predictions>/<config_id>/<video>/meta.json         frame names, video size, object ids, first frames,
                                                        scale, bias, family  (written last: its presence = complete)
    <predictions>/per_type/<video>/...                  infer --per-type: scale/bias null, object_configs per object
    <predictions>/policy/<video>/...                    infer --policy: the same, each object as a learned policy says
    <predictions>/<config_id>@<view>/<video>/...        infer --view NAME [--flip]: the same under another view

``config_id`` is ``s<scale>_b<bias>`` with ``%g`` numbers (``s20_b-10``, ``s7.5_b-4``), plus a short field per
memory knob that is set (``s7.5_b-4_st2_mf4``, see :mod:`masseg_search.store.knobs`), and ``@<view>`` when the
logits come from another *view* of the problem: another model (a second sweep trial's checkpoint) and/or the
horizontally mirrored video (``infer --flip``, mirrored back). Views are what the ensemble fuses besides the
configurations themselves; the view-less folders are the *base* view. A view may hold another model family
(``family`` in meta.json: ``sam2``, ``cutie``, or ``imported`` for masks of any tool brought in by
``infer --import-masks``, as pseudo-logits: :mod:`masseg_search.store.pseudo_logits`). Video-resolution masks
are a bilinear upsampling (half-pixel centres, as torch ``align_corners=False``) of the low-res logits, merged
with SAM2's non-overlap rule: per pixel the object with the highest logit wins, if that logit is above 0.
No torch here: fusion and submission writing run without it.
"""
from __future__ import annotations

import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.store.knobs import Knobs, as_knobs, knobs_id, parse_knobs_id

META_FILE = "meta.json"
_VIEW = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_VIEW_NAME = re.compile(rf"^{_VIEW}$")


def check_view(view: str | None) -> str | None:
    """A view name as given (None = the base view); a clear error for one that cannot name a folder."""
    if view is None or view == "":
        return None
    if not _VIEW_NAME.match(str(view)):
        raise MassegError(f"{view!r} is not a view name", fix="use letters, digits, '_', '.' or '-' (e.g. flip, trial2)")
    return str(view)


def config_id(scale: float | Knobs, bias: float | None = None, view: str | None = None) -> str:
    """``s<scale>_b<bias>`` with ``%g`` numbers: (20, -10) -> ``s20_b-10``, (7.5, -4.0) -> ``s7.5_b-4``; with a
    view, ``s20_b-10@flip``. Given a :class:`Knobs` (``config_id(knobs, view=...)``), its knobs that are set add
    their fields (``s7.5_b-4_st2_mf4``, see :mod:`masseg_search.store.knobs`)."""
    knobs = scale if isinstance(scale, Knobs) else Knobs(scale, bias)
    return knobs_id(knobs, check_view(view))


def split_config_id(text: str) -> tuple[float, float, str | None]:
    """(scale, bias, view or None) from a config id that sets no other knob; a clear error for anything else
    (use :func:`split_knobs_id` where memory knobs may be set)."""
    knobs, view = split_knobs_id(text)
    if knobs.extras():
        raise MassegError(f"{text!r} sets memory knobs {sorted(knobs.extras())}; only (scale, bias) is read here",
                          fix="use a plain s<scale>_b<bias> id here")
    return knobs.scale, knobs.bias, view


def split_knobs_id(text: str) -> tuple[Knobs, str | None]:
    """(Knobs, view or None) from any config id; a clear error for anything else."""
    return parse_knobs_id(text)


def parse_config_id(text: str) -> Knobs:
    """The configuration (scale, bias and knobs) of a config id, its view dropped; a clear error for anything else."""
    return parse_knobs_id(text)[0]


def _is_config_id(name: str) -> bool:
    try:
        parse_knobs_id(name)
    except MassegError:
        return False
    return True


def view_folder(folder: str, view: str | None) -> str:
    """A store folder (a config id without view, or ``per_type``) under ``view``: ``per_type@flip``."""
    view = check_view(view)
    return folder if view is None else f"{folder}@{view}"


def config_view(text: str) -> str | None:
    """The view of a config id or store folder (``per_type@flip`` -> ``flip``); None for the base view."""
    _, at, view = text.partition("@")
    return view if at else None


def parse_config_list(text: str) -> list[Knobs]:
    """``"20,-10;7.5,-4"`` -> [Knobs(20, -10), Knobs(7.5, -4)]; config ids (with knobs) are accepted too."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        if item.startswith("s") and "_b" in item:
            pairs.append(parse_config_id(item))
            continue
        numbers = item.split(",")
        try:
            scale, bias = (float(value) for value in numbers)
        except ValueError:
            raise MassegError(f"bad configuration {item!r}", fix='write "scale,bias;scale,bias", e.g. "20,-10;7.5,-4"') from None
        pairs.append(Knobs(scale, bias))
    if not pairs:
        raise MassegError("no configuration given", fix='write "scale,bias;scale,bias", e.g. "20,-10;7.5,-4"')
    return pairs


@dataclass
class VideoPrediction:
    """One video's stored prediction under one configuration."""

    video: str
    frame_names: list[str]
    height: int
    width: int
    object_ids: list[int]
    first_frames: dict[int, int]
    logits: dict[int, np.ndarray] = field(default_factory=dict)  # id -> (T, h, w) float16
    object_scores: dict[int, np.ndarray] = field(default_factory=dict)  # id -> (T,) float32
    scale: float | None = None
    bias: float | None = None
    object_configs: dict[int, Knobs] | None = None  # per-object configuration when they differ (per_type)
    knobs: dict[str, Any] | None = None  # the memory knobs set besides scale and bias (store.knobs), None = defaults
    view: str | None = None  # None = the base view; else the view name (another model and/or the mirrored video)
    flipped: bool = False  # tracked on the mirrored video (logits mirrored back)
    family: str = "sam2"  # the model family that made the logits: sam2, cutie, imported (another tool's masks)
    predicted_ious: dict[int, np.ndarray] = field(default_factory=dict)  # id -> (T,) float32: SAM2's IoU head, if stored

    def meta(self) -> dict:
        """What goes in meta.json."""
        return {
            "video": self.video,
            "frame_names": self.frame_names,
            "height": self.height,
            "width": self.width,
            "object_ids": self.object_ids,
            "first_frames": {str(k): v for k, v in self.first_frames.items()},
            "scale": self.scale,
            "bias": self.bias,
            "object_configs": None if self.object_configs is None else {str(k): _config_entry(v) for k, v in self.object_configs.items()},
            "knobs": self.knobs or None,
            "view": self.view,
            "flipped": self.flipped,
            "family": self.family,
        }


def _config_entry(config: Any) -> list[float] | dict[str, Any]:
    """A per-object configuration in meta.json: [scale, bias] at default knobs (as before), else the knob mapping."""
    knobs = as_knobs(config)
    return [knobs.scale, knobs.bias] if not knobs.extras() else knobs.as_dict()


def object_file(video_dir: Path, object_id: int) -> Path:
    """Where one object's logits live."""
    return Path(video_dir) / f"object_{int(object_id)}.npz"


def save_object(video_dir: Path, object_id: int, logits: np.ndarray, object_score: np.ndarray,
                predicted_iou: np.ndarray | None = None) -> None:
    """Write one object's logits (stored float16, uncompressed) and scores (and SAM2's predicted IoUs when given),
    atomically.

    Uncompressed on purpose: deflate saves only 20-45% on float16 logits but inflating them took ~0.7 ms per
    256x256 frame, 14x the uncompressed read and more than writing the final PNG (benchmarks/bench_ensemble.py).
    Files written compressed by earlier versions load the same way.
    """
    buffer = io.BytesIO()
    arrays = {"logits": np.asarray(logits, dtype=np.float16), "object_score": np.asarray(object_score, dtype=np.float32)}
    if predicted_iou is not None:
        arrays["predicted_iou"] = np.asarray(predicted_iou, dtype=np.float32)
    np.savez(buffer, **arrays)
    atomic_write_bytes(object_file(video_dir, object_id), buffer.getvalue())


def save_video_prediction(video_dir: Path, prediction: VideoPrediction) -> None:
    """Write every object, then meta.json last (so a half-written video is never taken for complete)."""
    video_dir = Path(video_dir)
    (video_dir / META_FILE).unlink(missing_ok=True)
    for object_id in prediction.object_ids:
        save_object(video_dir, object_id, prediction.logits[object_id], prediction.object_scores[object_id],
                    prediction.predicted_ious.get(object_id))
    atomic_write_bytes(video_dir / META_FILE, json.dumps(prediction.meta(), indent=1).encode())


def is_complete(video_dir: Path) -> bool:
    """True when meta.json and every object file it names exist."""
    meta_path = Path(video_dir) / META_FILE
    if not meta_path.is_file():
        return False
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        return False
    return all(object_file(video_dir, object_id).is_file() for object_id in meta["object_ids"])


_NPY_MAGIC = b"\x93NUMPY"
_npy_headers: dict[bytes, tuple[tuple[int, ...], bool, np.dtype]] = {}  # raw .npy header -> parsed (a store has few shapes)


def _npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """(shape, fortran_order, dtype) of the .npy member at the handle's position, which is left at its data;
    None for a format version other than 1.0 / 2.0 (the handle is then left anywhere).

    numpy parses the header; the result is cached by the header's bytes, as parsing it (``ast``) costs more
    than mapping the array.
    """
    prefix = handle.read(8)
    if len(prefix) != 8 or prefix[:6] != _NPY_MAGIC or prefix[6:] not in (b"\x01\x00", b"\x02\x00"):
        return None
    size_bytes = handle.read(2 if prefix[6] == 1 else 4)
    header = handle.read(int.from_bytes(size_bytes, "little")) if len(size_bytes) in (2, 4) else b""
    key = prefix + size_bytes + header
    parsed = _npy_headers.get(key)
    if parsed is None:
        source = io.BytesIO(key)
        version = np.lib.format.read_magic(source)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        parsed = read_header(source)  # raises on a malformed header, as np.load does
        if len(_npy_headers) < 256:
            _npy_headers[key] = parsed
    return parsed


def read_npz(path: Path, mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, as ``np.load`` gives them.

    Members stored uncompressed (as :func:`save_object` writes them) are read straight from the file at their
    offset, skipping zipfile's buffered read and CRC pass (about 3x faster); deflated ones go through ``np.load``.
    ``mmap=True`` maps uncompressed members read-only instead of reading them (memory stays in the page cache;
    a long video's logits need not fit in the process).
    """
    with open(path, "rb") as handle:
        with zipfile.ZipFile(handle) as archive:
            members = archive.infolist()
        if any(member.compress_type != zipfile.ZIP_STORED for member in members):
            with np.load(path) as arrays:
                return {name: arrays[name] for name in arrays.files}
        arrays = {}
        for member in members:
            handle.seek(member.header_offset)
            local_header = handle.read(30)
            if len(local_header) != 30 or local_header[:4] != b"PK\x03\x04":
                raise ValueError(f"bad zip member header for {member.filename}")
            name_length, extra_length = struct.unpack("<HH", local_header[26:30])
            start = member.header_offset + 30 + name_length + extra_length
            name = member.filename.removesuffix(".npy")
            if mmap:
                handle.seek(start)
                parsed = _npy_header(handle)
                if parsed is not None and not parsed[2].hasobject:
                    shape, fortran_order, dtype = parsed
                    # the open handle, not the path: np.memmap would resolve the path (a stat per folder)
                    arrays[name] = np.memmap(handle, dtype=dtype, mode="r", offset=handle.tell(), shape=shape,
                                             order="F" if fortran_order else "C")
                    continue
            handle.seek(start)
            arrays[name] = np.lib.format.read_array(handle, allow_pickle=False)
    return arrays


def load_video_prediction(video_dir: Path, object_ids: list[int] | None = None, mmap: bool = False) -> VideoPrediction:
    """Read a stored video (all objects, or only ``object_ids``); ``mmap=True`` maps the logits read-only."""
    video_dir = Path(video_dir)
    meta_path = video_dir / META_FILE
    if not meta_path.is_file():
        raise MassegError("prediction is missing or incomplete (no meta.json)", video_dir, "rerun `masseg-search infer`; it resumes")
    meta = json.loads(meta_path.read_text())
    wanted = meta["object_ids"] if object_ids is None else [int(i) for i in object_ids]
    prediction = VideoPrediction(
        video=meta["video"],
        frame_names=meta["frame_names"],
        height=int(meta["height"]),
        width=int(meta["width"]),
        object_ids=[int(i) for i in meta["object_ids"]],
        first_frames={int(k): int(v) for k, v in meta["first_frames"].items()},
        scale=meta.get("scale"),
        bias=meta.get("bias"),
        object_configs=None if meta.get("object_configs") is None else {int(k): as_knobs(v) for k, v in meta["object_configs"].items()},
        knobs=meta.get("knobs"),
        view=meta.get("view"),
        flipped=bool(meta.get("flipped", False)),
        family=str(meta.get("family") or "sam2"),  # stores written before families existed hold SAM2 only
    )
    for object_id in wanted:
        path = object_file(video_dir, object_id)
        if object_id not in prediction.object_ids or not path.is_file():
            raise MassegError(f"object {object_id} has no stored logits", path, "rerun `masseg-search infer` for this video")
        try:
            arrays = read_npz(path, mmap=mmap)
            prediction.logits[object_id] = arrays["logits"]
            prediction.object_scores[object_id] = arrays["object_score"]
            if "predicted_iou" in arrays:
                prediction.predicted_ious[object_id] = arrays["predicted_iou"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise MassegError(f"cannot read stored logits ({exc})", path, "delete the video folder and rerun infer") from None
    return prediction


def list_config_ids(predictions_root: Path) -> list[str]:
    """Config ids present under a predictions root (folders named like ``s20_b-10`` or ``s20_b-10@flip``)."""
    root = Path(predictions_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and _is_config_id(p.name))


def upsample_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of (N, h, w) logits to (N, height, width), half-pixel centres (torch align_corners=False)."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape[-2:] == (height, width):
        return logits
    return np.stack([cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in logits]) if len(logits) else np.zeros((0, height, width), np.float32)


def merge_objects(video_res_logits: np.ndarray, object_ids: list[int]) -> np.ndarray:
    """SAM2's non-overlap rule on video-resolution logits (N, H, W): per pixel the highest logit wins if > 0.

    Ties go to the object listed first, as ``torch.argmax`` does in SAM2's predictor.
    """
    if len(object_ids) == 0:
        return np.zeros(video_res_logits.shape[-2:], dtype=np.uint8)
    winner = np.argmax(video_res_logits, axis=0)
    best = np.take_along_axis(video_res_logits, winner[None], axis=0)[0]
    ids = np.asarray(object_ids, dtype=np.uint8)
    return np.where(best > 0, ids[winner], 0).astype(np.uint8)


def logits_to_mask(low_res_logits: np.ndarray, object_ids: list[int], height: int, width: int) -> np.ndarray:
    """Low-res logits of every object at one frame (N, h, w) -> a video-resolution id mask."""
    return merge_objects(upsample_logits(low_res_logits, height, width), object_ids)
