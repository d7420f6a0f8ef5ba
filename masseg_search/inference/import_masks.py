"""`infer --import-masks DIR --view NAME`: another VOS model's predictions stored as a view beside SAM2's.

Accepted layouts of ``DIR`` (one folder per video of the split, one file per JPEG frame, named like the frame):

- **hard masks** (what Cutie, XMem, DeAOT, SAM2Long, SeC write): ``DIR/<video>/<frame>.png``, an indexed (palette)
  PNG of the video's size whose values are 0 or ids of the video's first given mask; ``DIR/Annotations/<video>/``
  is accepted too. The same checks as ``submission check`` (every frame, sizes, ids, nothing stray) run first and
  name every bad file.
- **probability maps**: ``DIR/<video>/<frame>.npz`` holding ``object_ids`` (N,) int, ``probabilities`` (N, H, W)
  (float in [0, 1], or uint8 read as value / 255, as Cutie and XMem save their scores) and optionally
  ``background`` (H, W) (a softmax's channel 0). Every frame present, the video's size, ids of the first given
  mask, values in range: each bad file is named.

Both become the store's low-res pseudo-logits by the rule of :mod:`masseg_search.store.pseudo_logits`, at the
low resolution of the SAM2 predictions already in ``--out`` for that video (or ``--low-res``), so the ensemble
fuses them with SAM2's like any view. They are stored under ``<config_id>@<view>`` for each configuration given
(default SAM2's ``s20_b-10``; the configuration means nothing for another model, but a view variant of a fusion
candidate takes each of its configurations under the view, so store the import under the configurations the
candidates name) with ``family: imported`` in meta.json, and ``infer_run@<view>.json`` records the source.
Resumable per video; no torch here.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from masseg_search.data import layout
from masseg_search.ensemble.submission import SubmissionProblem, check_submission
from masseg_search.errors import MassegError
from masseg_search.store.best_configs import SAM2_DEFAULT
from masseg_search.store.knobs import Knobs, as_knobs
from masseg_search.store.predictions import (
    VideoPrediction,
    check_view,
    config_id,
    is_complete,
    list_config_ids,
    load_video_prediction,
    parse_config_list,
    save_video_prediction,
)
from masseg_search.store.pseudo_logits import mask_pseudo_logits, probability_pseudo_logits

logger = logging.getLogger(__name__)

IMPORTED_FAMILY = "imported"
_MAX_PROBLEMS_SHOWN = 10


def _run_record_path(out_dir: Path, view: str) -> Path:
    return out_dir / f"infer_run@{view}.json"


def find_masks_root(masks_dir: Path, videos: list[str]) -> tuple[Path, str]:
    """(folder holding the video folders, ``"masks"`` or ``"probabilities"``) of an imported tree."""
    masks_dir = Path(masks_dir)
    if not masks_dir.is_dir():
        raise MassegError("masks folder not found", masks_dir, "pass the folder holding <video>/<frame>.png (or .npz)")
    root = masks_dir
    if not any((masks_dir / video).is_dir() for video in videos) and (masks_dir / layout.ANNOTATION_DIR).is_dir():
        root = masks_dir / layout.ANNOTATION_DIR
    suffixes = {p.suffix.lower() for video in videos if (root / video).is_dir()
                for p in (root / video).iterdir() if p.is_file() and not p.name.startswith(".")}
    if ".npz" in suffixes and ".png" in suffixes:
        raise MassegError("the masks folder mixes .png masks and .npz probability maps", root,
                          "import one kind at a time (one folder each)")
    return root, ("probabilities" if ".npz" in suffixes else "masks")


def stored_low_res(out_dir: Path, video: str) -> tuple[int, int] | None:
    """(h, w) of the logits already stored for ``video`` in ``out_dir`` (base view first), or None."""
    for config in sorted(list_config_ids(out_dir), key=lambda c: ("@" in c, c)):
        folder = out_dir / config / video
        if is_complete(folder):
            prediction = load_video_prediction(folder, mmap=True)
            for logits in prediction.logits.values():
                return int(logits.shape[1]), int(logits.shape[2])
    return None


def _probability_problems(root: Path, dataset: layout.Dataset, videos: list[str]) -> list[SubmissionProblem]:
    """Every problem of a probability-map tree, each naming its file (frames, sizes, ids, values)."""
    problems: list[SubmissionProblem] = []
    for name in videos:
        video = dataset.video(name)
        folder = root / name
        if not video.frame_paths:
            raise MassegError(f"video {name!r} has no JPEG frames", video.image_dir, "pass the dataset the masks were made on")
        height, width = layout.image_size(video.frame_paths[0])
        allowed = set(_first_ids(video))
        files = {p.stem for p in layout.list_files(folder, (".npz",))}
        missing = [f for f in video.frame_names if f not in files]
        if missing:
            problems.append(SubmissionProblem(name, f"{len(missing)} of {len(video.frame_names)} frames missing, e.g. "
                                              f"{', '.join(m + '.npz' for m in missing[:5])}",
                                              "write one .npz per JPEG frame, named like the frame"))
        for stem in sorted(files - set(video.frame_names)):
            problems.append(SubmissionProblem(f"{name}/{stem}.npz", "has no JPEG frame of that name", "delete it or rename it"))
        for frame in video.frame_names:
            if frame in files:
                problems += _check_probability_file(root, f"{name}/{frame}.npz", (height, width), allowed)
    return problems


def _check_probability_file(root: Path, relative: str, size: tuple[int, int], allowed: set[int]) -> list[SubmissionProblem]:
    try:
        arrays = _read_probability_file(root / relative)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return [SubmissionProblem(relative, f"cannot be read as probability maps ({exc})",
                                  "save np.savez(path, object_ids=..., probabilities=(N, H, W)[, background=(H, W)])")]
    ids, probabilities, background = arrays
    problems = []
    if probabilities.ndim != 3 or probabilities.shape[0] != len(ids):
        return [SubmissionProblem(relative, f"probabilities have shape {probabilities.shape} for {len(ids)} object ids",
                                  "store one (H, W) map per object id: shape (N, H, W)")]
    if probabilities.shape[1:] != size or (background is not None and background.shape != size):
        problems.append(SubmissionProblem(relative, f"maps are {probabilities.shape[2]}x{probabilities.shape[1]} but "
                                          f"the video's frames are {size[1]}x{size[0]}", "save the maps at the JPEG size"))
    bad = sorted(int(i) for i in ids if int(i) not in allowed)
    if bad:
        problems.append(SubmissionProblem(relative, f"has object ids {bad} that are not ids of the first frame "
                                          f"({sorted(allowed)})", "store only the first given mask's objects"))
    if len(ids) != len(set(int(i) for i in ids)):
        problems.append(SubmissionProblem(relative, "lists an object id twice", "store each object once"))
    for values, what in ((probabilities, "probabilities"), (background, "background")):
        if values is not None and values.size and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1):
            problems.append(SubmissionProblem(relative, f"{what} fall outside [0, 1]",
                                              "store probabilities (float in [0, 1] or uint8 0..255)"))
    return problems


def _read_probability_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(object ids, probabilities (N, H, W) float32 in [0, 1], background (H, W) or None); uint8 is value / 255."""
    with np.load(path, allow_pickle=False) as arrays:
        ids = np.asarray(arrays["object_ids"]).astype(np.int64).ravel()
        planes = [_as_probability(arrays["probabilities"])]
        planes.append(_as_probability(arrays["background"]) if "background" in arrays.files else None)
    return ids, planes[0], planes[1]


def _as_probability(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values.astype(np.float32) / np.float32(255.0)
    return values.astype(np.float32)


def _first_ids(video: layout.Video) -> list[int]:
    _, first = video.first_annotation()
    return sorted(int(i) for i in np.unique(first) if 0 < i < layout.VOID_ID)


def _raise_problems(problems: list[SubmissionProblem], root: Path) -> None:
    shown = "\n  ".join(str(problem) for problem in problems[:_MAX_PROBLEMS_SHOWN])
    more = len(problems) - _MAX_PROBLEMS_SHOWN
    raise MassegError(f"{len(problems)} problems in the imported predictions{f' ({more} not shown)' if more > 0 else ''}:"
                      f"\n  {shown}\n", root / problems[0].path,
                      "fix or re-export the files named above (the same rules as `masseg-search submission check`)")


def write_view_record(out_dir: Path, view: str, record: dict, identity: tuple[str, ...]) -> None:
    """``infer_run@<view>.json``: what made the view; writing another source (``identity`` keys differ) into it is
    an error, as results would mix."""
    record = {**record, "view": view, "flip": False}
    path = _run_record_path(out_dir, view)
    if path.is_file():
        previous = json.loads(path.read_text())
        changed = [k for k in identity if previous.get(k) != record.get(k)]
        if changed:
            raise MassegError(f"view {view!r} already holds other predictions ({', '.join(f'{k}: {previous.get(k)}' for k in changed)})",
                              path, "pass another --view NAME, or delete that view's folders and this file")
        record["configs"] = sorted(set(previous.get("configs", [])) | set(record.get("configs", [])))
    layout.atomic_write_bytes(path, json.dumps(record, indent=1).encode())


def view_folders(view: str | None, configs: str | Sequence[Any] | None) -> tuple[str, list[Knobs], list[str]]:
    """(view, configurations, folders ``<config_id>@<view>``) of a view another family fills; SAM2's ``s20_b-10``
    when no configuration is given (another family has no (scale, bias): the id only lines it up with SAM2's)."""
    view = check_view(view)
    if view is None:
        raise MassegError("another model family needs a view name (the base view is SAM2's)",
                          fix="pass --view NAME, e.g. --view cutie")
    configs = parse_config_list(configs) if isinstance(configs, str) else [as_knobs(c) for c in (configs or [SAM2_DEFAULT])]
    return view, configs, [config_id(knobs, view=view) for knobs in configs]


def low_res_for(out_dir: Path, video: str, low_res: int | None) -> tuple[int, int]:
    """The low resolution to store ``video`` at: ``low_res`` squared when given, else that of the predictions
    already stored for it (so the ensemble can fuse them)."""
    size = (int(low_res), int(low_res)) if low_res else stored_low_res(out_dir, video)
    if size is None:
        raise MassegError(f"no stored prediction of {video} gives the low resolution to store at", out_dir,
                          "run `masseg-search infer` into --out first, or pass --low-res (SAM2: image size / 4, e.g. 256)")
    return size


def save_view(out_dir: Path, prediction: VideoPrediction, view: str, configs: list[Knobs]) -> None:
    """Store one video of another family under every ``<config_id>@<view>`` not yet complete."""
    prediction.view = view
    for knobs in configs:
        folder = out_dir / config_id(knobs, view=view) / prediction.video
        if not is_complete(folder):
            prediction.scale, prediction.bias, prediction.knobs = knobs.scale, knobs.bias, knobs.extras() or None
            save_video_prediction(folder, prediction)


def import_masks(masks_dir: str | Path, data_root: str | Path, out_dir: str | Path, view: str,
                 split_list: str | Path | None = None, videos: Sequence[str] | None = None,
                 configs: str | Sequence[Any] | None = None, low_res: int | None = None,
                 scale: float = 1.0, progress: bool = True) -> Path:
    """Check ``masks_dir`` against the split, then store it as view ``view`` of ``out_dir`` (see the module
    docstring). Returns ``out_dir``."""
    from tqdm import tqdm

    view, pairs, folders = view_folders(view, configs)
    check_scale(scale)
    out_dir = Path(out_dir)
    dataset = layout.open_dataset(data_root, split_list=split_list)
    names = list(videos) if videos is not None else list(dataset.video_names)
    root, kind = find_masks_root(Path(masks_dir), names)
    problems = (check_submission(root, dataset.image_root, dataset.annotation_root, videos=names) if kind == "masks"
                else _probability_problems(root, dataset, names))
    if problems:
        _raise_problems(problems, root)
    todo = [n for n in names if not all(is_complete(out_dir / folder / n) for folder in folders)]
    write_view_record(out_dir, view, {"family": IMPORTED_FAMILY, "imported_from": str(root.resolve()), "layout": kind,
                                      "pseudo_logit_scale": float(scale), "configs": folders},
                      ("family", "imported_from", "layout", "pseudo_logit_scale"))
    for name in tqdm(todo, desc=f"import {view}", unit="video", disable=not progress):
        prediction = _imported_video(dataset.video(name), root, kind, low_res_for(out_dir, name, low_res), scale)
        save_view(out_dir, prediction, view, pairs)
    return out_dir


def check_scale(scale: float) -> None:
    """The pseudo-logit scale must be positive."""
    if not scale > 0:
        raise MassegError(f"the pseudo-logit scale must be positive, got {scale}", fix="pass --mask-logit-scale 1")


def _imported_video(video: layout.Video, root: Path, kind: str, size: tuple[int, int], scale: float) -> VideoPrediction:
    """One video's pseudo-logits (objects of the first given mask, from its first annotated frame)."""
    start, first = video.first_annotation()
    object_ids = sorted(int(i) for i in np.unique(first) if 0 < i < layout.VOID_ID)
    height, width = first.shape
    frames = len(video.frame_names)
    logits = {i: np.zeros((frames, *size), np.float16) for i in object_ids}
    for t, frame in enumerate(video.frame_names):
        if kind == "masks":
            planes = mask_pseudo_logits(layout.read_mask(root / video.name / f"{frame}.png"), object_ids, *size, scale=scale)
        else:
            ids, probabilities, background = _read_probability_file(root / video.name / f"{frame}.npz")
            by_id = {int(i): plane for i, plane in zip(ids, probabilities)}
            stacked = np.stack([by_id.get(i, np.zeros((height, width), np.float32)) for i in object_ids])
            planes = probability_pseudo_logits(stacked, *size, background=background, scale=scale)
        for index, object_id in enumerate(object_ids):
            logits[object_id][t] = planes[index]
    return VideoPrediction(
        video=video.name, frame_names=video.frame_names, height=height, width=width, object_ids=object_ids,
        first_frames={i: start for i in object_ids}, logits=logits,
        object_scores={i: logits[i].reshape(frames, -1).max(axis=1).astype(np.float32) for i in object_ids},
        family=IMPORTED_FAMILY)

