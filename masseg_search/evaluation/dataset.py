"""Dataset-level evaluation: read ground truth and predicted PNGs, score every video (in a process pool), build the
global / per-object / per-frame / per-scene-type tables and write them as CSV at full float precision.

Ground truth: a MOSE or DAVIS root (``layout.open_dataset``) or a bare ``Annotations`` tree; a split list selects
videos. Predictions: an ``Annotations``-style tree ``<video>/<frame>.png`` (indexed PNGs, pixel = object id), frames
matched to the ground truth by name, as the official DAVIS code does. Only the scored frames (all annotated frames
but the first and last) are read. Objects: the official set ``1..max(first frame id)`` by default, the first
frame's ids with ``objects="present"`` (``metric.object_ids_of``), or each video's list in a MOSEv2 / YouTube-VOS
``meta.json`` (``meta=``), as the MOSEv2 scorer takes them. No torch here.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from masseg_search.data import layout
from masseg_search.data.scene_types import load_scene_types
from masseg_search.errors import MassegError
from masseg_search.evaluation.metric import OBJECT_SETS, first_frame_object_ids, object_ids_of
from masseg_search.evaluation.protocols import ScoringProtocol, get_protocol
from masseg_search.evaluation.scores import VideoScores
from masseg_search.evaluation.video import single_threaded_opencv

SCENE_TYPE_COLUMNS = ["video", "object_id", "scene_type"]
NOT_IN_FIRST_FRAME = "not in first frame"  # the scene type of a scored object absent from the first frame
GLOBAL_FILE, PER_OBJECT_FILE, PER_FRAME_FILE, PER_SCENE_TYPE_FILE = "global.csv", "per_object.csv", "per_frame.csv", "per_scene_type.csv"


# ----------------------------------------------------------------------------------------------------- tables
def _per_frame_table(video_scores: list[VideoScores], protocol: ScoringProtocol) -> pd.DataFrame:
    columns: dict[str, list[np.ndarray]] = {"video": [], "object_id": [], "frame": []}
    columns.update({name: [] for name, _ in protocol.frame_columns})
    for scores in video_scores:
        frames = len(scores.frame_names)
        for row, object_id in enumerate(scores.object_ids):
            columns["video"].append(np.full(frames, scores.video, dtype=object))
            columns["object_id"].append(np.full(frames, object_id, dtype=np.int64))
            columns["frame"].append(np.asarray(scores.frame_names, dtype=object))
            for name, attribute in protocol.frame_columns:
                columns[name].append(getattr(scores, attribute)[row])
    return pd.DataFrame({name: (np.concatenate(parts) if parts else []) for name, parts in columns.items()})


def load_scene_type_table(scene_types: pd.DataFrame | str | Path) -> pd.DataFrame:
    """A scene-type table (columns ``video, object_id, scene_type``, others ignored) from a DataFrame or CSV."""
    source = None
    if not isinstance(scene_types, pd.DataFrame):
        source = Path(scene_types)
        scene_types = load_scene_types(source)
    missing = [column for column in SCENE_TYPE_COLUMNS if column not in scene_types.columns]
    if missing:
        raise MassegError(f"scene-type table lacks column(s) {missing}", source, "it needs the columns video, object_id, scene_type")
    table = scene_types[SCENE_TYPE_COLUMNS].copy()
    table["video"] = table["video"].astype(str)
    table["object_id"] = table["object_id"].astype(np.int64)
    if table.duplicated(["video", "object_id"]).any():
        raise MassegError("scene-type table lists an object twice", source, "keep one row per (video, object_id)")
    return table


def _per_scene_type_table(
    per_object: pd.DataFrame, scene_types: pd.DataFrame | str | Path, protocol: ScoringProtocol
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-object table with a scene_type column, one row of global means per scene type)."""
    table = load_scene_type_table(scene_types)
    merged = per_object.merge(table, on=["video", "object_id"], how="left", validate="one_to_one")
    # Scene types come from the first frame: an object absent from it (official object set, --meta) has none.
    absent = merged["scene_type"].isna() & ~merged["in_first_frame"].astype(bool)
    merged.loc[absent, "scene_type"] = NOT_IN_FIRST_FRAME
    untyped = merged[merged["scene_type"].isna()]
    if len(untyped):
        sample = ", ".join(untyped["Sequence"].head(5))
        raise MassegError(
            f"{len(untyped)} scored object(s) have no scene type (e.g. {sample})",
            scene_types if not isinstance(scene_types, pd.DataFrame) else None,
            "compute the scene types for this dataset and split with `masseg-search data scene-types`",
        )
    rows = []
    for scene_type, group in merged.groupby("scene_type", sort=True):
        rows.append({"scene_type": scene_type, "objects": len(group), **protocol.global_row(group)})
    return merged, pd.DataFrame(rows)


@dataclass
class EvaluationResult:
    """Scores of a prediction set: global, per-object, per-frame and (with scene types) per-scene-type tables."""

    protocol: str
    global_table: pd.DataFrame
    per_object: pd.DataFrame
    per_frame: pd.DataFrame
    per_scene_type: pd.DataFrame | None
    video_scores: list[VideoScores]
    sources: dict | None = None  # what was scored (gt_root, pred_root, split_list, protocol): evaluation.json

    def object_columns(self) -> list[str]:
        """The per-object statistic columns written to ``per_object.csv`` after ``Sequence``."""
        return get_protocol(self.protocol).object_columns

    def write(self, out_dir: str | Path) -> Path:
        """Write global.csv, per_object.csv, per_frame.csv (and per_scene_type.csv) atomically; return the folder."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tables = {
            GLOBAL_FILE: self.global_table,
            PER_OBJECT_FILE: self.per_object[["Sequence", *self.object_columns()]],
            PER_FRAME_FILE: self.per_frame,
        }
        if self.per_scene_type is not None:
            tables[PER_SCENE_TYPE_FILE] = self.per_scene_type
        for name, table in tables.items():
            layout.atomic_write_bytes(out_dir / name, table.to_csv(index=False).encode())
        if self.sources is not None:  # lets `report` find the frames and masks again for overlays
            layout.atomic_write_bytes(out_dir / "evaluation.json", json.dumps(self.sources, indent=1).encode())
        return out_dir

    def summary(self) -> str:
        """The global table (and the per-scene-type one) as text, 3 decimals (the CSVs keep full precision)."""
        text = self.global_table.to_string(index=False, float_format=lambda value: f"{value:.3f}")
        if self.per_scene_type is not None:
            text += "\n\n" + self.per_scene_type.to_string(index=False, float_format=lambda value: f"{value:.3f}")
        return text


def tables_from_scores(
    video_scores: list[VideoScores], protocol: str = "davis", scene_types: pd.DataFrame | str | Path | None = None
) -> EvaluationResult:
    """Build an :class:`EvaluationResult` from in-memory :class:`VideoScores` (e.g. from ``score_video``)."""
    if not video_scores:
        raise MassegError("no video to evaluate", fix="check the ground-truth folder and the split list")
    rules = get_protocol(protocol)
    rows = []
    for scores in video_scores:
        present = None if scores.first_frame_ids is None else set(scores.first_frame_ids)
        for row in rules.object_rows(scores):
            rows.append({**row, "in_first_frame": present is None or row["object_id"] in present})
    per_object = pd.DataFrame(rows)
    global_table = pd.DataFrame([rules.global_row(per_object)])
    per_scene_type = None
    if scene_types is not None:
        per_object, per_scene_type = _per_scene_type_table(per_object, scene_types, rules)
    return EvaluationResult(protocol, global_table, per_object, _per_frame_table(video_scores, rules), per_scene_type, video_scores)


def jf_by_object(result: EvaluationResult) -> dict[tuple[str, int], float]:
    """(video, object_id) -> the object's J&F mean (J&Ḟ under the MOSEv2 protocol)."""
    table = result.per_object
    values = get_protocol(result.protocol).object_jf(table)
    return {(str(video), int(object_id)): float(value) for video, object_id, value in zip(table["video"], table["object_id"], values)}


# ------------------------------------------------------------------------------------------------ reading files
def read_meta_objects(meta_path: str | Path) -> dict[str, list[int]]:
    """video -> its object ids, from a MOSEv2 / YouTube-VOS ``meta.json`` (``{"videos": {video: {"objects": ...}}}``,
    ``objects`` a list of ids or a dict keyed by id; ids may be strings, as YouTube-VOS writes them)."""
    meta_path = Path(meta_path)
    if not meta_path.is_file():
        raise MassegError("meta file not found", meta_path, "pass the split's meta.json (the one the MOSEv2 scorer reads)")
    try:
        videos = json.loads(meta_path.read_text())["videos"]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MassegError(f"meta file is not JSON ({exc})", meta_path, "pass the split's meta.json") from None
    except (KeyError, TypeError):
        raise MassegError('meta file has no "videos" object', meta_path, 'it needs {"videos": {VIDEO: {"objects": [IDS]}}}') from None
    if not isinstance(videos, dict):
        raise MassegError('"videos" in the meta file is not an object', meta_path, 'it needs {"videos": {VIDEO: {"objects": [IDS]}}}')
    objects: dict[str, list[int]] = {}
    for video, entry in videos.items():
        listed = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(listed, (list, dict)):
            raise MassegError(f'video {video!r} in the meta file has no "objects" list', meta_path, 'give each video "objects": [IDS]')
        try:
            ids = sorted({int(i) for i in listed})
        except (TypeError, ValueError):
            raise MassegError(f"video {video!r} in the meta file lists an object id that is not an integer", meta_path,
                              "object ids are the mask values 1..254") from None
        if any(not 0 < i < 255 for i in ids):
            raise MassegError(f"video {video!r} in the meta file lists object ids {ids}, outside 1..254", meta_path,
                              "object ids are the mask values 1..254")
        objects[str(video)] = ids
    return objects


def score_video_files(
    video: str,
    gt_dir: Path,
    pred_dir: Path,
    allow_missing: bool = False,
    protocol: str = "davis",
    method: str = "fast",
    objects: str = "official",
    object_ids: Sequence[int] | None = None,
) -> VideoScores:
    """Score one video from its ground-truth and prediction folders (PNG per frame, matched by name).

    The objects are ``object_ids`` when given (from a meta file), else the ``objects`` set of the first frame.
    """
    gt_dir, pred_dir = Path(gt_dir), Path(pred_dir)
    gt_paths = layout.list_files(gt_dir, (".png",))
    if len(gt_paths) < 3:
        raise MassegError(
            f"ground truth of video {video!r} has {len(gt_paths)} annotated frame(s); the first and last are not "
            "scored, so evaluation needs at least 3",
            gt_dir,
            "evaluate on a split whose videos are annotated on every frame (e.g. a held-out train split)",
        )
    first_gt = layout.read_mask(gt_paths[0])
    first_ids = first_frame_object_ids(first_gt)
    object_ids = object_ids_of(first_gt, objects) if object_ids is None else [int(i) for i in object_ids]
    if not object_ids:
        raise MassegError("the video has no object to score", gt_paths[0], "every evaluated video needs objects in its first frame (or in --meta)")
    pred_present = pred_dir.is_dir()
    if not pred_present and not allow_missing:
        raise MassegError(
            f"no prediction for video {video!r}",
            pred_dir,
            "predict every video of the split, or pass --allow-missing to score it by the protocol's rule (davis: as empty "
            "masks; mosev2: J = F = 0)",
        )
    height, width = first_gt.shape
    rules = get_protocol(protocol)
    scorer = rules.frame_scorer(height, width, object_ids, method)
    empty = np.zeros((height, width), dtype=np.uint8)
    predicted_names = {path.name for path in layout.list_files(pred_dir, (".png",))} if pred_present else set()
    for gt_path in gt_paths[1:-1]:
        gt = layout.read_mask(gt_path)
        if gt.shape != (height, width):
            raise MassegError(f"ground-truth frame is {gt.shape}, the first frame {(height, width)}", gt_path, "all frames of a video must have one size")
        pred_path = pred_dir / gt_path.name
        predicted = gt_path.name in predicted_names
        if predicted:
            pred = layout.read_mask(pred_path)
            if pred.shape != gt.shape:
                raise MassegError(
                    f"predicted mask is {pred.shape[1]}x{pred.shape[0]}, the ground truth {width}x{height}",
                    pred_path,
                    "write predictions at the video's own resolution",
                )
        elif allow_missing:
            pred = empty
        else:
            raise MassegError(
                f"prediction frame missing for video {video!r}", pred_path, "write a PNG for every frame, or pass --allow-missing to score it as empty"
            )
        scorer.add(gt, pred, check_ids=predicted, where=pred_path)
        del gt, pred  # before the next decode, which can then reuse their memory while it is still in cache
    scores = scorer.result(video, [path.stem for path in gt_paths[1:-1]])
    scores.first_frame_ids = first_ids
    return scores if pred_present else rules.missing_prediction(scores)


def _score_job(job: tuple) -> VideoScores:
    with single_threaded_opencv():
        return score_video_files(*job)


def open_ground_truth(gt_root: str | Path, split_list: str | Path | None = None) -> layout.Dataset:
    """The ground truth as a dataset: a MOSE/DAVIS root or a bare Annotations tree, optionally split-selected."""
    root = Path(gt_root)
    if (root / layout.IMAGE_DIR).is_dir() or (root / layout.ANNOTATION_DIR).is_dir():
        return layout.open_dataset(root, split_list=split_list)
    dataset = layout.open_annotations(root)
    if split_list is not None:
        dataset.video_names = layout.read_split_list(split_list)
    return dataset


def evaluate_predictions(
    gt_root: str | Path,
    pred_root: str | Path,
    split_list: str | Path | None = None,
    videos: Sequence[str] | None = None,
    workers: int | None = 1,
    allow_missing: bool = False,
    scene_types: pd.DataFrame | str | Path | None = None,
    protocol: str = "davis",
    method: str = "fast",
    progress: bool = True,
    objects: str = "official",
    meta: str | Path | None = None,
    map_jobs: Callable[[Callable[[tuple], VideoScores], list[tuple]], Iterable[VideoScores]] | None = None,
) -> EvaluationResult:
    """Score the predicted masks under ``pred_root`` against the ground truth under ``gt_root``.

    ``workers``: processes over videos (0 or None = one per core). ``videos`` restricts the evaluation to those
    names. ``scene_types``: a DataFrame or CSV with ``video, object_id, scene_type`` adds ``per_scene_type``
    (objects absent from the first frame get the type ``"not in first frame"``). ``objects``: ``"official"``
    (ids ``1..max`` of the first frame, as davis2017-evaluation) or ``"present"`` (the first frame's ids);
    ``meta``: a ``meta.json`` whose per-video ``objects`` are scored instead (as the MOSEv2 scorer does).
    ``allow_missing``: a missing prediction frame scores as an empty mask, a missing video by the protocol's rule
    (DAVIS: empty masks; MOSEv2: J = F = 0). ``method="plain"`` uses the full-frame reference implementation.
    ``map_jobs(score, jobs)``, when given, scores the videos instead of ``workers`` processes, yielding each job's
    scores in order (``masseg_search.cluster.evaluate`` runs them on Ray; this package stays free of it).
    """
    get_protocol(protocol)  # an unknown name fails before any file is read
    if objects not in OBJECT_SETS:
        raise MassegError(f"unknown object set {objects!r}", fix="use " + " or ".join(repr(name) for name in OBJECT_SETS))
    if meta is not None and objects != "official":
        raise MassegError(f"both objects={objects!r} and a meta file choose the objects", meta, "pass one of them")
    meta_objects = read_meta_objects(meta) if meta is not None else None
    dataset = open_ground_truth(gt_root, split_list)
    names = list(dataset.video_names)
    if videos is not None:
        unknown = sorted(set(videos) - set(names))
        if unknown:
            raise MassegError(f"video(s) {unknown[:5]} are not in the ground truth", gt_root, "check the video names and the split list")
        wanted = set(videos)
        names = [name for name in names if name in wanted]
    if not names:
        raise MassegError("no video to evaluate", gt_root, "check the ground-truth folder and the split list")
    for name in names:
        if not (dataset.annotation_root / name).is_dir():
            raise MassegError(f"no ground-truth annotations for video {name!r}", dataset.annotation_root / name, "check the split list against the dataset")
    if meta_objects is not None:
        unlisted = [name for name in names if name not in meta_objects]
        if unlisted:
            raise MassegError(f"{len(unlisted)} video(s) to score are not in the meta file (e.g. {unlisted[:5]})", meta,
                              "pass the meta.json of the split being scored")
    pred_dataset = layout.open_annotations(pred_root)
    jobs = [(name, dataset.annotation_root / name, pred_dataset.annotation_root / name, allow_missing, protocol, method,
             objects, None if meta_objects is None else meta_objects[name]) for name in names]
    workers = int(workers) if workers else (os.cpu_count() or 1)
    bar = tqdm(total=len(jobs), desc=f"evaluate ({protocol})", unit="video", disable=not progress)
    video_scores: list[VideoScores] = []
    if map_jobs is not None:
        for scores in map_jobs(_score_job, jobs):
            video_scores.append(scores)
            bar.update()
    elif workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for scores in pool.map(_score_job, jobs):
                video_scores.append(scores)
                bar.update()
    else:
        for job in jobs:
            video_scores.append(_score_job(job))
            bar.update()
    bar.close()
    result = tables_from_scores(video_scores, protocol, scene_types)
    result.sources = {"gt_root": str(Path(gt_root).resolve()), "pred_root": str(Path(pred_root).resolve()),
                      "split_list": str(Path(split_list).resolve()) if split_list else None, "protocol": protocol,
                      "objects": "meta" if meta is not None else objects, "meta": str(Path(meta).resolve()) if meta is not None else None}
    return result
