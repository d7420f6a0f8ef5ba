"""Dataset inference: every video through the multi-configuration engine, stored as low-res logits, resumable.

Output (the layout of masseg_search/store/predictions.py)::

    <out>/<config_id>/<video>/object_<id>.npz + meta.json    one folder per configuration (s20_b-10, s7.5_b-4)
    <out>/per_type/<video>/...                              with --per-type: each object under its type's config
    <out>/policy/<video>/...                                with --policy: each object under a learned policy's config
    <out>/infer_run.json                                    what produced them (model, checkpoint, configs)
    <out>/<config_id>/Annotations/<video>/<frame>.png       with --save-masks (first frame = the given mask)
    <out>/<config_id>@<view>/..., <out>/per_type@<view>/... with --view NAME (another checkpoint) and/or --flip
    <out>/infer_run@<view>.json                             (the mirrored video); one record per view

A predictions folder holds one model per view: the base view (no ``@``) and any number of named views, each with
its own run record, so the ensemble can fuse several checkpoints and the mirrored video (test-time augmentation).

A video whose every folder is complete (``predictions.is_complete``) is skipped, so a killed run resumes; a
half-written one has no ``meta.json`` and is redone.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from masseg_search.config import SceneTypesSection, load_config
from masseg_search.data.layout import Dataset, atomic_write_bytes, open_dataset, write_mask
from masseg_search.data.scene_types import load_scene_types, scene_type_table
from masseg_search.errors import MassegError
from masseg_search.model.build import build_model, resolve_device
from masseg_search.store.best_configs import BestConfigs, load_best_configs
from masseg_search.store.knobs import Knobs, as_knobs
from masseg_search.store.predictions import (
    VideoPrediction,
    check_view,
    config_id,
    is_complete,
    load_video_prediction,
    logits_to_mask,
    parse_config_list,
    save_video_prediction,
    view_folder,
)

logger = logging.getLogger(__name__)

PER_TYPE_ID = "per_type"
POLICY_ID = "policy"  # infer --policy: each object under the configuration a learned policy gives it
RUN_FILE = "infer_run.json"


def _object_table(dataset: Dataset, scene_types: Any, video_names: list[str],
                  rules: SceneTypesSection | None = None) -> tuple[Any, str | None]:
    """The scene-type table (features included) of the videos, and its source for messages: a CSV path, a DataFrame,
    or computed with ``rules`` (the default config's when None)."""
    import pandas as pd

    if isinstance(scene_types, pd.DataFrame):
        return scene_types, None
    if scene_types is not None:
        return load_scene_types(scene_types), str(scene_types)
    subset = Dataset(dataset.root, dataset.image_root, dataset.annotation_root, list(video_names))
    return scene_type_table(subset, rules if rules is not None else load_config().scene_types, progress=True), None


def _object_keys(best: BestConfigs, table: Any, source: str | None) -> dict[tuple[str, int], str]:
    """(video, object id) -> the key ``best`` looks its configuration up by: the scene type, or a policy's leaf."""
    keys = best.object_keys(table, source)
    return {(str(video), int(obj)): key for video, obj, key in zip(table["video"], table["object_id"], keys)}


def _configs_per_object(video: Any, configs: Sequence[Knobs],
                        choosers: dict[str, tuple[BestConfigs, dict[tuple[str, int], str], str | None]]
                        ) -> tuple[dict[int, list[Knobs]], dict[str, dict[int, Knobs]]]:
    """Every object's configurations (the shared list plus its own choice of each chooser: ``per_type`` for
    --per-type, ``policy`` for --policy) and, per chooser's folder, each object's choice. A chooser is (best, its
    key per object, the scene-type CSV they came from)."""
    from masseg_search.model.engine import check_video

    checked = check_video(video)
    per_object: dict[int, list[Knobs]] = {}
    chosen: dict[str, dict[int, Knobs]] = {folder: {} for folder in choosers}
    for obj in checked.object_ids:
        pairs = list(configs)
        for folder, (best, keys, source) in choosers.items():
            key = keys.get((video.name, obj))
            if key is None:
                raise MassegError(f"video {video.name!r} object {obj} has no row in the scene-type table", source,
                                  fix="recompute the scene-type CSV for this dataset (masseg-search data scene-types)")
            chosen[folder][obj] = best.for_type(key)
            pairs.append(chosen[folder][obj])
        per_object[obj] = pairs
    return per_object, chosen


def _per_type_prediction(results: dict[str, VideoPrediction], chosen: dict[int, Knobs]) -> VideoPrediction:
    """One prediction whose objects each come from their own type's configuration."""
    first = next(iter(results.values()))
    merged = VideoPrediction(video=first.video, frame_names=first.frame_names, height=first.height, width=first.width,
                             object_ids=sorted(chosen), first_frames={}, scale=None, bias=None,
                             object_configs=dict(chosen))
    for obj, knobs in chosen.items():
        source = results[config_id(knobs)]
        merged.logits[obj] = source.logits[obj]
        merged.object_scores[obj] = source.object_scores[obj]
        merged.first_frames[obj] = source.first_frames[obj]
    return merged


def run_inference(model_config: str, checkpoint: str | Path | None, data_root: str | Path, out_dir: str | Path,
                  configs: str | Sequence[Knobs | tuple[float, float]] | None, split_list: str | Path | None = None,
                  per_type: str | Path | None = None, scene_types: Any = None, save_masks: bool = False,
                  device: str = "auto", skip_bad: bool = False, videos: Sequence[str] | None = None,
                  postprocess: bool = False, progress: bool = True, view: str | None = None,
                  flip: bool = False, scene_type_rules: SceneTypesSection | None = None,
                  policy: str | Path | None = None, engine: Callable[[], Any] | None = None) -> Path:
    """Run every selected video under ``configs`` (``"20,-10;7.5,-4"`` or pairs) and/or each object's scene-type
    configuration from ``per_type`` (a best_configs.yaml) and/or its learned policy's configuration from ``policy``
    (a policy.yaml; either file works in either place). Types and features come from ``scene_types``: a CSV path, a
    DataFrame, or None = computed with ``scene_type_rules`` (a config's scene_types section). Returns ``out_dir``.

    ``view`` stores everything as ``<config_id>@<view>`` (``per_type@<view>``) so another checkpoint can sit beside
    the base predictions; ``flip`` tracks the mirrored video (the view defaults to ``flip`` then). ``engine``
    returns the engine to use, called only when a video needs running (a Ray worker's, kept across videos:
    :mod:`masseg_search.inference.distributed`); None builds one with :func:`build_engine`."""
    from tqdm import tqdm

    from masseg_search.model.engine import check_video

    pairs = parse_config_list(configs) if isinstance(configs, str) else [as_knobs(c) for c in (configs or [])]
    if not pairs and per_type is None and policy is None:
        raise MassegError("nothing to run: no --configs, --per-type or --policy",
                          fix='pass --configs "20,-10", --per-type best_configs.yaml or --policy policy.yaml')
    chooser_files = {folder: path for folder, path in ((PER_TYPE_ID, per_type), (POLICY_ID, policy)) if path is not None}
    bests = {folder: load_best_configs(path) for folder, path in chooser_files.items()}
    view = check_view(view) or ("flip" if flip else None)
    dataset = open_dataset(data_root, split_list=split_list)
    names = list(videos) if videos is not None else list(dataset.video_names)
    unknown = [n for n in names if n not in set(dataset.video_names) and not (dataset.image_root / n).is_dir()]
    if unknown:
        raise MassegError(f"videos not in the dataset: {unknown[:5]}", data_root, "check the names against the split list")
    out_dir = Path(out_dir)
    folders = [config_id(knobs, view=view) for knobs in pairs] + [view_folder(folder, view) for folder in bests]
    todo = [n for n in names if not all(is_complete(out_dir / folder / n) for folder in folders)]
    logger.info("%d of %d videos already done in %s", len(names) - len(todo), len(names), out_dir)
    skipped: list[str] = []
    if todo:
        choosers = {}
        if bests:
            table, source = _object_table(dataset, scene_types, todo, scene_type_rules)
            choosers = {folder: (best, _object_keys(best, table, source), source) for folder, best in bests.items()}
        engine = engine() if engine is not None else build_engine(model_config, checkpoint, device, postprocess, flip)
        _write_run_record(out_dir, model_config, checkpoint, pairs, per_type, postprocess, view, flip, policy)
        for name in tqdm(todo, desc="infer", unit="video", disable=not progress):
            video = dataset.video(name)
            try:  # input problems (and frames that fail to decode) are MassegErrors naming the video
                check_video(video)
                per_object, chosen = _configs_per_object(video, pairs, choosers)
                results = engine.predict_video(video, per_object)
            except MassegError as exc:
                if not skip_bad:
                    raise
                logger.warning("skipping video %s: %s", name, exc)
                skipped.append(name)
                continue
            for prediction in results.values():
                prediction.view, prediction.flipped = view, flip
            for knobs in pairs:
                folder = config_id(knobs, view=view)
                if not is_complete(out_dir / folder / name):
                    save_video_prediction(out_dir / folder / name, results[config_id(knobs)])
            for folder, per_object_choice in chosen.items():
                merged = _per_type_prediction(results, per_object_choice)
                merged.view, merged.flipped = view, flip
                save_video_prediction(out_dir / view_folder(folder, view) / name, merged)
    if skipped:
        logger.warning("skipped %d bad videos: %s", len(skipped), ", ".join(skipped))
    if save_masks:
        done = [n for n in names if n not in skipped]
        for folder in folders:
            write_masks(out_dir, folder, out_dir, dataset, videos=done, progress=progress)
    return out_dir


def build_engine(model_config: str, checkpoint: str | Path | None, device: str = "auto", postprocess: bool = False,
                 flip: bool = False) -> Any:
    """The multi-configuration engine infer runs: the model built on ``device`` (``auto``: a GPU if one is visible)."""
    from masseg_search.model.engine import MultiConfigEngine

    device = resolve_device(device)
    return MultiConfigEngine(build_model(model_config, checkpoint, device=device, postprocess=postprocess), device,
                             flip=flip)


def run_record_path(out_dir: Path, view: str | None = None) -> Path:
    """Where the run record of one view lives: ``infer_run.json`` (base view) or ``infer_run@<view>.json``."""
    view = check_view(view)
    return Path(out_dir) / (RUN_FILE if view is None else f"{Path(RUN_FILE).stem}@{view}.json")


def _write_run_record(out_dir: Path, model_config: str, checkpoint: Any, pairs: list, per_type: Any, postprocess: bool,
                      view: str | None = None, flip: bool = False, policy: Any = None) -> None:
    """Record what produces this view of the folder; resuming a view with another model into it is an error
    (results would mix): another model goes under another ``--view``."""
    record = {"model_config": str(model_config), "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
              "configs": [config_id(knobs, view=view) for knobs in pairs], "per_type": str(per_type) if per_type else None,
              "policy": str(policy) if policy else None, "postprocess": postprocess, "view": view, "flip": flip}
    path = run_record_path(out_dir, view)
    if path.is_file():
        previous = json.loads(path.read_text())
        previous.setdefault("view", None)
        previous.setdefault("flip", False)
        changed = [key for key in ("model_config", "checkpoint", "postprocess", "flip") if previous.get(key) != record[key]]
        if changed:
            raise MassegError(f"this folder holds predictions of another run ({', '.join(f'{k}: {previous.get(k)}' for k in changed)})",
                              path, "pass a new --out or another --view NAME, or delete the folder to start over")
        record["configs"] = sorted(set(previous.get("configs", [])) | set(record["configs"]))
    atomic_write_bytes(path, json.dumps(record, indent=1).encode())


def write_masks(predictions_root: str | Path, folder: str, out_root: str | Path, dataset: Dataset,
                videos: Sequence[str] | None = None, progress: bool = False) -> Path:
    """Video-resolution palette PNGs of one stored configuration (or ``per_type`` / ``policy``):
    ``<out_root>/<folder>/Annotations/<video>/<frame>.png``, the first annotated frame being the given mask,
    frames before it empty. Upsampling and merge are SAM2's (bilinear, per pixel the highest logit if above 0)."""
    from tqdm import tqdm

    predictions_root, out_root = Path(predictions_root), Path(out_root)
    names = list(videos) if videos is not None else list(dataset.video_names)
    annotations = out_root / folder / "Annotations"
    for name in tqdm(names, desc=f"masks {folder}", unit="video", disable=not progress):
        prediction = load_video_prediction(predictions_root / folder / name)
        video = dataset.video(name)
        start, first_mask = video.first_annotation()
        ids = prediction.object_ids
        for t, frame in enumerate(prediction.frame_names):
            path = annotations / name / f"{frame}.png"
            if t == start:
                mask = first_mask
            elif ids:
                mask = logits_to_mask(np.stack([prediction.logits[i][t] for i in ids]), ids, prediction.height, prediction.width)
            else:
                mask = np.zeros((prediction.height, prediction.width), np.uint8)
            write_mask(path, mask)
    return out_root / folder


def save_masks(predictions_root: str | Path, config_id: str, out_root: str | Path, dataset: Dataset) -> Path:  # noqa: F811
    """Palette PNGs of every video of ``dataset`` under one configuration: see :func:`write_masks`."""
    return write_masks(predictions_root, config_id, out_root, dataset)
