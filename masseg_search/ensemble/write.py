"""Writing a fused split: per video into a temp folder renamed when complete, then the check and the zip."""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from masseg_search.cluster import map_tasks, ray_connection, require_shared_paths
from masseg_search.data import layout
from masseg_search.ensemble.agreement import count_choices, resolve_choices
from masseg_search.ensemble.fuse import FusedVideo, fuse_video
from masseg_search.ensemble.plan import (
    CHOICE_METHODS,
    FusionPlan,
    FusionRule,
    RuleResolver,
    load_plan,
    load_scene_type_lookup,
    per_object_folders,
    per_type_views,
)
from masseg_search.ensemble.render import video_masks
from masseg_search.ensemble.submission import check_submission, write_submission_zip
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store
from masseg_search.store.best_configs import load_best_configs

PARTIAL_PREFIX = ".partial-"


# ----------------------------------------------------------------------------------------------- writing


def _write_one_video(job: tuple[Path, layout.Video, dict[int, FusionRule], Path]) -> tuple[str, int]:
    """Fuse and write one video into a temp folder, then rename it into place; returns (video, frames)."""
    predictions_root, video, rules, out_dir = job
    final = out_dir / video.name
    if final.is_dir():
        return video.name, 0
    if not video.frame_paths:
        raise MassegError("video has no JPEG frames", video.image_dir, "pass the dataset the predictions were made on (--data)")
    height, width = layout.image_size(video.frame_paths[0])
    if rules:
        fused = fuse_video(predictions_root, video.name, rules)
    else:  # a video whose stored prediction has no object: every frame is background
        fused = FusedVideo(video.name, video.frame_names, [], {}, {}, {})
    if fused.frame_names != video.frame_names:
        raise MassegError(f"stored frames ({len(fused.frame_names)}) differ from the JPEG frames ({len(video.frame_names)})",
                          Path(predictions_root), f"rerun infer on {video.image_dir.parent}")
    partial = out_dir / f"{PARTIAL_PREFIX}{video.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    exact_given: set[str] = set()
    count = 0
    # each mask is written before the next is asked for; a given PNG kept as it is is copied, not decoded
    for name, mask in video_masks(fused, video, height, width, exact_given, reuse=True, given_as_file=True):
        if name in exact_given:  # the given PNG itself (MOSE's first frame): no re-encoding
            data = video.annotation_path(name).read_bytes()
        else:
            data = layout.encode_mask_png(mask)
        (partial / f"{name}.png").write_bytes(data)
        count += 1
    os.replace(partial, final)
    return video.name, count


@dataclass
class EnsembleResult:
    """What a run of :func:`run_ensemble` wrote."""

    out_dir: Path
    zip_path: Path | None
    videos: int
    frames_written: int
    seconds: float
    problems: list[Any] = field(default_factory=list)
    choices: dict[str, dict[int, str]] = field(default_factory=dict)  # video -> object -> member (choice rules)
    choices_path: Path | None = None  # <out>.choices.csv when some rule chose members

    def choice_counts(self) -> dict[str, dict[str, int]]:
        """How often each member was chosen, over videos and over objects."""
        return count_choices(self.choices)


def _applied_record(plan: FusionPlan, predictions_root: Path, data_root: Path, scene_types: Path | None, best: Path | None,
                    videos: list[str]) -> dict:
    return {"plan": plan.to_dict(), "predictions": str(predictions_root), "data": str(data_root),
            "scene_types": str(scene_types) if scene_types else None, "best_configs": str(best) if best else None,
            "videos": len(videos), "first_video": videos[0] if videos else None, "last_video": videos[-1] if videos else None}


def run_ensemble(predictions_root: str | Path, plan: FusionPlan | str | Path, data_root: str | Path, out_dir: str | Path,
                 split_list: str | Path | None = None, workers: int = 1, scene_types: str | Path | None = None,
                 best_configs: str | Path | None = None, videos: list[str] | None = None, write_zip: bool = True,
                 progress: bool = True, ray_address: str | None = None) -> EnsembleResult:
    """Fuse every video of the split by the plan, write the PNG tree, check it, and zip it when the check passes.

    ``scene_types`` / ``best_configs`` override the plan's. Resumes: finished videos are kept. ``ray_address``
    fuses and writes the videos as tasks on that Ray cluster (``local``: a Ray started here) instead of ``workers``
    processes; on several nodes the predictions, the data and ``out_dir`` must be on storage every node sees.
    """
    from tqdm import tqdm

    started = time.perf_counter()
    predictions_root, data_root, out_dir = (Path(path).resolve() if ray_address else Path(path)
                                            for path in (predictions_root, data_root, out_dir))
    plan = plan if isinstance(plan, FusionPlan) else load_plan(plan)
    scene_types_path = Path(scene_types) if scene_types else (Path(plan.scene_types) if plan.scene_types else None)
    best_path = Path(best_configs) if best_configs else (Path(plan.best_configs) if plan.best_configs else None)
    best = load_best_configs(best_path) if best_path else None
    lookup = load_scene_type_lookup(scene_types_path, best) if scene_types_path else None
    if not predictions_root.is_dir():
        raise MassegError("predictions folder not found", predictions_root,
                          "pass --predictions results/predictions/<split> as written by `masseg-search infer`")
    resolver = RuleResolver(plan, store.list_config_ids(predictions_root), lookup, best,
                            per_type_views=per_type_views(predictions_root), predictions_root=predictions_root)
    dataset = layout.open_dataset(data_root, split_list=split_list)
    names = list(videos) if videos is not None else dataset.video_names
    jobs = []
    choices: dict[str, dict[int, str]] = {}
    for name in tqdm(names, desc="ensemble: rules", unit="video", disable=not progress or not _has_choice_rules(plan)):
        object_ids = _stored_object_ids(predictions_root, resolver.available, name)
        rules = resolver.rules_for_video(name, object_ids)
        if any(rule.method in CHOICE_METHODS for rule in rules.values()):  # chosen here, without labels
            rules, choices[name] = resolve_choices(predictions_root, name, rules)
        jobs.append((predictions_root, dataset.video(name), rules, out_dir))

    record_path = out_dir.with_name(out_dir.name + ".plan.yaml")
    record = _applied_record(plan, predictions_root, data_root, scene_types_path, best_path, names)
    if record_path.is_file() and yaml.safe_load(record_path.read_text()) != yaml.safe_load(yaml.safe_dump(record)):
        raise MassegError("this output was written with another plan or other inputs", record_path,
                          "pass a new --out, or delete the folder and this file to start over")
    out_dir.mkdir(parents=True, exist_ok=True)
    layout.atomic_write_bytes(record_path, yaml.safe_dump(record, sort_keys=False).encode())
    for leftover in out_dir.glob(f"{PARTIAL_PREFIX}*"):
        shutil.rmtree(leftover)

    written = 0
    bar = tqdm(total=len(jobs), desc="ensemble", unit="video", disable=not progress)
    if ray_address:
        with ray_connection(ray_address):
            require_shared_paths(inputs={"predictions folder": str(predictions_root), "dataset": str(data_root)},
                                 outputs={"submission folder": str(out_dir)})
            for _, (_, count) in map_tasks(_write_one_video, jobs, key=lambda job: job[1].name):
                written += count
                bar.update()
    elif workers <= 1:
        for job in jobs:
            written += _write_one_video(job)[1]
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(_write_one_video, job) for job in jobs]):
                written += future.result()[1]
                bar.update()
    bar.close()

    choices_path = _write_choices(out_dir, choices) if choices else None
    problems = check_submission(out_dir, dataset.image_root, dataset.annotation_root, videos=names, workers=workers)
    zip_path = out_dir.with_name(out_dir.name + ".zip")
    if problems:
        zip_path.unlink(missing_ok=True)  # an older zip must not pass for this run's result
    if problems or not write_zip:
        zip_path = None
    else:
        write_submission_zip(out_dir, zip_path)
    return EnsembleResult(out_dir, zip_path, len(jobs), written, time.perf_counter() - started, problems, choices,
                          choices_path)


def _has_choice_rules(plan: FusionPlan) -> bool:
    return any(rule.method in CHOICE_METHODS for rule in plan.rules())


def _write_choices(out_dir: Path, choices: dict[str, dict[int, str]]) -> Path:
    """``<out>.choices.csv`` (video, object_id, member): what the choice rules took, beside the submission."""
    path = out_dir.with_name(out_dir.name + ".choices.csv")
    lines = ["video,object_id,member"] + [f"{video},{object_id},{member}" for video, picks in choices.items()
                                         for object_id, member in sorted(picks.items())]
    layout.atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def _stored_object_ids(predictions_root: Path, configs: list[str], video: str) -> list[int]:
    """Object ids of a video: the union over the configs that hold it complete (a clear error if none does)."""
    object_ids: list[int] = []
    configs = [*configs, *per_object_folders(predictions_root)]
    for config in configs:
        video_dir = predictions_root / config / video
        if store.is_complete(video_dir):
            meta = store.load_video_prediction(video_dir, object_ids=[])
            object_ids += [i for i in meta.object_ids if i not in object_ids]
    if not object_ids and not any((predictions_root / c / video / store.META_FILE).is_file() for c in configs):
        raise MassegError(f"video {video} has no complete prediction under any config", predictions_root,
                          "run (or resume) `masseg-search infer` on this split")
    return sorted(object_ids)
