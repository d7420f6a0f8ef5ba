"""The honest estimate: F folds over videos; tune on F-1, score the chosen configurations on the held-out fold.

Per fold ``f`` the studies ``<study>/cv<f>/<scene_type>`` search on the other folds' objects (same storage, so
they resume like the main studies); then ONE engine pass over the held-out videos scores three slots side by side
on the same objects: the configurations chosen on the other folds (a type missing there gets SAM2's default),
SAM2's 20/-10 and MASSeg's 7.5/-4.0. The pooled held-out per-object J&F gives the estimate, with a bootstrap
confidence interval over videos (videos resampled with replacement, all their objects kept), also for the paired
gains. The in-sample best of the main studies is never the reported number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from masseg_search.config import MssSection
from masseg_search.errors import MassegError
from masseg_search.mss.search import Config, PassScorer, StopRequest, run_batched_search
from masseg_search.mss.studies import StudyStorage, knobs_from_params, open_type_studies
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT
from masseg_search.store.knobs import as_knobs, knobs_id

METHODS = {"chosen": None, "sam2_default": as_knobs(SAM2_DEFAULT), "masseg": as_knobs(MASSEG_BEST)}


@dataclass
class HoldoutResult:
    """Held-out per-object scores and their summaries."""

    folds: list[list[str]]
    per_object: pd.DataFrame  # fold, video, object_id, scene_type, chosen_config, chosen_scale, chosen_bias, chosen_from, jf_*
    summary: pd.DataFrame  # scene_type ('all' first), method, jf, ci_low, ci_high, objects, videos
    stopped_early: bool = False


def video_folds(videos: list[str], folds: int, seed: int) -> list[list[str]]:
    """Split videos into ``folds`` folds (seeded shuffle, round robin), each sorted."""
    unique = sorted(set(videos))
    if folds < 2:
        raise MassegError(f"--cv {folds}: a held-out estimate needs at least 2 folds", fix="pass --cv 3 (or --cv 0 to skip)")
    if folds > len(unique):
        raise MassegError(f"--cv {folds} needs at least {folds} validation videos, the split has {len(unique)}",
                          fix=f"pass --cv {max(2, len(unique))} or use a larger validation split")
    order = np.random.default_rng(seed).permutation(len(unique))
    return [sorted(unique[i] for i in order[f::folds]) for f in range(folds)]



def chosen_configs(studies: dict[str, optuna.Study]) -> dict[str, Config]:
    """Best finished configuration (Knobs) of every study that has one."""
    chosen = {}
    for scene_type, type_study in studies.items():
        complete = type_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            best = max(complete, key=lambda trial: trial.value)
            chosen[scene_type] = knobs_from_params(best.params)
    return chosen


def bootstrap_ci(values: pd.Series, videos: pd.Series, samples: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the object mean when videos are resampled with replacement."""
    if samples <= 0 or values.empty:
        return float("nan"), float("nan")
    groups = [group.to_numpy(dtype=float) for _, group in values.groupby(videos.to_numpy())]
    sums = np.array([g.sum() for g in groups])
    counts = np.array([len(g) for g in groups])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(groups), size=(samples, len(groups)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def summarize(per_object: pd.DataFrame, samples: int, seed: int) -> pd.DataFrame:
    """Held-out J&F per method and scene type ('all' = every object), plus paired gains, with bootstrap CIs."""
    columns = {"chosen": "jf_chosen", "sam2_default": "jf_sam2_default", "masseg": "jf_masseg"}
    frame = per_object.assign(gain_over_sam2_default=per_object.jf_chosen - per_object.jf_sam2_default,
                              gain_over_masseg=per_object.jf_chosen - per_object.jf_masseg)
    columns.update({"gain_over_sam2_default": "gain_over_sam2_default", "gain_over_masseg": "gain_over_masseg"})
    rows = []
    groups = [("all", frame)] + [(name, group) for name, group in frame.groupby("scene_type", sort=True)]
    for scene_type, group in groups:
        for method, column in columns.items():
            low, high = bootstrap_ci(group[column], group["video"], samples, seed)
            rows.append({"scene_type": scene_type, "method": method, "jf": float(group[column].mean()), "ci_low": low,
                         "ci_high": high, "objects": len(group), "videos": group["video"].nunique()})
    return pd.DataFrame(rows)


def score_held_out(held_objects: pd.DataFrame, chosen: dict[str, Config], scorer: PassScorer, fold: int) -> list[dict]:
    """ONE engine pass over the held-out videos: each object under its type's chosen configuration (SAM2's default
    for a type the other folds lack), 20/-10 and 7.5/-4.0 side by side; one row per object."""
    sam2, masseg = METHODS["sam2_default"], METHODS["masseg"]
    pass_configs: dict[str, dict[int, list[Config]]] = {}
    for row in held_objects.itertuples(index=False):
        own = chosen.get(row.scene_type, sam2)
        pass_configs.setdefault(row.video, {})[int(row.object_id)] = [own, sam2, masseg]
    scores = scorer(pass_configs)
    rows = []
    for row in held_objects.itertuples(index=False):
        jf = scores[row.video][int(row.object_id)]
        own = chosen.get(row.scene_type, sam2)
        rows.append({"fold": fold, "video": row.video, "object_id": int(row.object_id), "scene_type": row.scene_type,
                     "chosen_config": knobs_id(own), "chosen_scale": own.scale, "chosen_bias": own.bias,
                     "chosen_from": "search" if row.scene_type in chosen else "default",
                     "jf_chosen": jf[0], "jf_sam2_default": jf[1], "jf_masseg": jf[2]})
    return rows


def held_out_table(rows: list[dict]) -> pd.DataFrame:
    """The per-object held-out rows as a table (fixed columns, also when empty)."""
    return pd.DataFrame(rows, columns=["fold", "video", "object_id", "scene_type", "chosen_config", "chosen_scale",
                                       "chosen_bias", "chosen_from", "jf_chosen", "jf_sam2_default", "jf_masseg"])


def run_holdout(opened: StudyStorage, study: str, objects: pd.DataFrame, scorer: PassScorer, mss: MssSection,
                folds: int, trials: int, batch: int, sampler: str | None = None, seed: int | None = None,
                progress: bool = True, stop: StopRequest | None = None,
                on_fold: Callable[[int, dict[str, optuna.Study]], None] | None = None,
                pruner: str | None = None) -> HoldoutResult:
    """Tune on F-1 folds and score on the held-out one, for every fold; see the module docstring. ``pruner``
    prunes the folds' searches (None = ``mss.pruner``); the held-out pass itself is never pruned."""
    run_seed = mss.seed if seed is None else seed
    fold_videos = video_folds(objects["video"].tolist(), folds, run_seed)
    rows = []
    stopped = False
    for fold, held_videos in enumerate(fold_videos):
        tune_objects = objects[~objects["video"].isin(held_videos)]
        held_objects = objects[objects["video"].isin(held_videos)]
        types = sorted(tune_objects["scene_type"].unique())
        studies = open_type_studies(opened, f"{study}/cv{fold}", types, mss, sampler=sampler, seed=seed)
        report = run_batched_search(studies, opened, tune_objects, scorer, trials, batch, space_mss=mss,
                                    progress=progress, stop=stop, pruner=pruner, seed=seed)
        if on_fold is not None:
            on_fold(fold, studies)
        if report.stopped_early:
            stopped = True
            break
        rows += score_held_out(held_objects, chosen_configs(studies), scorer, fold)
    per_object = held_out_table(rows)
    summary = summarize(per_object, mss.bootstrap, run_seed) if not per_object.empty else pd.DataFrame()
    return HoldoutResult(fold_videos, per_object, summary, stopped)
