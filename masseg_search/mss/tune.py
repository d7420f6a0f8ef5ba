"""The tune-mss stage from Python: validation objects and their scene types, storage, engine passes, the search,
the held-out estimate and the outputs, and with ``policy="learned"`` the learned policy beside them
(:mod:`masseg_search.mss.policy`). ``masseg-search tune-mss`` is a thin wrapper around :func:`tune_mss`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from masseg_search.config import ProjectConfig
from masseg_search.data.layout import Dataset, open_dataset
from masseg_search.data.scene_types import save_scene_types, scene_type_table
from masseg_search.errors import MassegError
from masseg_search.model.build import load_state_dict_file
from masseg_search.mss.holdout import HoldoutResult, run_holdout
from masseg_search.mss.outputs import write_outputs
from masseg_search.mss.passes import EnginePassWorker, LocalPassScorer, RayPassScorer
from masseg_search.mss.policy import PolicyResult, run_policy
from masseg_search.mss.search import PassScorer, SearchReport, StopRequest, run_batched_search
from masseg_search.mss.studies import open_storage, open_type_studies
from masseg_search.store.best_configs import BestConfigs
from masseg_search.store.mss_results import MssResults, write_folds


@dataclass
class TuneResult:
    """Where the results went and what the run did."""

    out_dir: Path
    storage_url: str
    best: BestConfigs
    report: SearchReport
    holdout: HoldoutResult | None
    policy: PolicyResult | None = None


def open_validation_split(config: ProjectConfig) -> Dataset:
    """The dataset split tune-mss searches on: ``mss.split`` (a name or a list file), else ``data.val_split``."""
    split = config.mss.split or config.data.val_split
    root = Path(config.data.root)
    if not root.is_dir():
        raise MassegError("dataset root not found", root, "set data.root to your dataset (or give the config a data.synth "
                          "section: `masseg-search data synth` makes it, and tune-mss and run make it when missing)")
    if Path(split).is_file():
        return open_dataset(root, split_list=split)
    return open_dataset(root, split=split)


def swept_checkpoint(config: ProjectConfig) -> Path | None:
    """The best checkpoint of the config's train-sweep (``<storage>/<name>/best_checkpoint.txt``) when that sweep
    has run, else None: what tune-mss starts from after `masseg-search train-sweep`."""
    section = config.train_sweep
    if section is None:
        return None
    pointer = Path(section.storage) / section.name / "best_checkpoint.txt"
    if not pointer.is_file():
        return None
    checkpoint = Path(pointer.read_text().strip())
    return checkpoint if checkpoint.is_file() else None


def validation_objects(dataset: Dataset, config: ProjectConfig, save_csv: Path | None = None) -> pd.DataFrame:
    """Every object of the validation videos: ``video, object_id, scene_type`` and its first-frame features (typed
    afresh each run, so a changed ``scene_types`` section takes effect; the table is saved beside the results)."""
    table = scene_type_table(dataset, config.scene_types)
    if save_csv is not None:
        save_scene_types(table, save_csv)
    return table.reset_index(drop=True)


def engine_scorer(config: ProjectConfig, checkpoint: str | None, ray_address: str | None, progress: bool) -> PassScorer:
    """The engine PassScorer: in this process, or on Ray actors when ``ray_address`` is given."""
    if ray_address:
        return RayPassScorer(ray_address, config.model.config, checkpoint, config.data.root, config.mss.feature_cache_mb,
                             progress=progress, max_rows=config.mss.engine_max_rows,
                             chunk_by_config=config.mss.engine_chunk_by_config)
    worker = EnginePassWorker(config.model.config, checkpoint, config.data.root, config.model.device,
                              config.mss.feature_cache_mb, max_rows=config.mss.engine_max_rows,
                              chunk_by_config=config.mss.engine_chunk_by_config)
    return LocalPassScorer(worker, progress=progress)


def tune_mss(config: ProjectConfig, study: str = "val", trials: int | None = None, batch: int | None = None,
             storage: str | None = None, sampler: str | None = None, seed: int | None = None, cv: int | None = None,
             ray_address: str | None = None, checkpoint: str | None = None, progress: bool = True,
             scorer: PassScorer | None = None, pruner: str | None = None, knobs: list[str] | None = None,
             policy: str | None = None) -> TuneResult:
    """Search a configuration per scene type on the validation split: scale, bias and the memory knobs of
    ``mss.space``, or ``knobs`` (their ranges from ``mss.space`` where declared there, else the defaults of
    ``masseg_search.config.DEFAULT_KNOB_SPACE``); see the package docstring. Resumable.
    ``pruner``: none | wilcoxon | sha (None = ``mss.pruner``).

    ``policy="learned"`` then learns a policy over first-frame features and compares it held out with the fixed and
    per-type ones (needs ``cv`` >= 2); ``"none"`` does not; None = ``mss.policy.learn``."""
    if policy not in (None, "learned", "none"):
        raise MassegError(f"unknown policy {policy!r}", fix="pass --policy learned (or leave it out)")
    policy = policy or ("learned" if config.mss.policy.learn else "none")
    if knobs:
        config = config.model_copy(update={"mss": config.mss.model_copy(update={"space": config.mss.space.select(knobs)})})
    mss = config.mss
    pruner = pruner or mss.pruner
    trials = trials or mss.trials
    batch = batch or mss.batch
    folds = mss.cv_folds if cv is None else cv
    checkpoint = checkpoint or config.model.checkpoint
    if checkpoint:
        load_state_dict_file(checkpoint)  # a bad file is named here, not inside an engine worker
    if policy == "learned" and folds < 2:
        raise MassegError(f"--policy learned is scored on held-out folds, but the run has --cv {folds}",
                          fix="pass --cv 2 or more (mss.cv_folds)")
    out_dir = Path(mss.results_dir) / study
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = open_validation_split(config)
    objects = validation_objects(dataset, config, out_dir / "scene_types.csv")
    if objects.empty:
        raise MassegError("the validation split has no objects", dataset.root, "check mss.split / data.val_split")
    opened = open_storage(storage or mss.storage, study, mss.heartbeat_interval, mss.grace_period)
    own_scorer = scorer is None
    scorer = scorer or engine_scorer(config, checkpoint, ray_address, progress)
    holdout = None
    learned = None
    try:
        with StopRequest() as stop:
            studies = open_type_studies(opened, study, sorted(objects["scene_type"].unique()), mss, sampler=sampler, seed=seed)
            report = run_batched_search(studies, opened, objects, scorer, trials, batch, space_mss=mss, progress=progress,
                                        stop=stop, pruner=pruner, seed=seed)
            if folds >= 2 and not report.stopped_early:
                holdout = run_holdout(opened, study, objects, scorer, mss, folds, trials, batch, sampler=sampler,
                                      seed=seed, progress=progress, stop=stop, pruner=pruner)
                write_folds(MssResults(out_dir).folds, holdout.folds)
                report.stopped_early = holdout.stopped_early
                if holdout.stopped_early:
                    holdout = None
            best = write_outputs(out_dir, study, studies, objects, config, holdout, Path(mss.artifact_dir), checkpoint)
            if policy == "learned" and holdout is not None:
                learned = run_policy(objects, scorer, mss, holdout, best, out_dir, study, config.model.config, checkpoint,
                                     seed=seed, progress=progress, stop=stop)
                report.stopped_early |= learned is None
    finally:
        if own_scorer and hasattr(scorer, "close"):
            scorer.close()
    return TuneResult(out_dir, opened.url, best, report, holdout, learned)

