"""``tune-mss --policy learned``: learn which (scale, bias) each object gets from its first frame, held out.

After the per-type search and its held-out folds (:mod:`masseg_search.mss.holdout`), on the same folds:

1. Candidates: SAM2's 20/-10, MASSeg's 7.5/-4, a grid of ``mss.policy.grid_points`` values per dimension over the
   search ranges, and the configurations the studies chose (per fold and final). Not every configuration the
   studies tried: a pass costs about one engine row per object and configuration, and the tried points were steered
   by every validation object (the per-fold choices saw only their training folds). Fold ``f``'s policies choose
   among the baselines, the grid and fold ``f``'s own choices; the final policy among the baselines, the grid and
   the final choices.
2. The candidate table: every validation object under every candidate, engine passes with cached image features
   (in slot ``k`` every object of a video runs candidate ``k``), plus its first-frame features
   (:mod:`masseg_search.data.scene_types`). Saved after every ``videos_per_pass`` videos: a stopped run resumes.
3. Per outer fold, the policies (:mod:`masseg_search.mss.policy_fit`) are fit on the other folds' rows only;
   then ONE engine pass scores every held-out object under its fixed, per_type, learned and oracle
   configurations side by side (four slots: each slot's objects merged as deployed), so ``heldout_jf`` is
   measured, not read off the table.
4. Summaries with a bootstrap 95% interval over videos (videos resampled, their objects kept), and paired gains
   over ``fixed`` and ``per_type``. The oracle is the upper bound, never a result.
5. The final policy: depth by CV over all validation videos, fit on all of them: ``policy.yaml``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from masseg_search.config import MssSection
from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.mss.holdout import HoldoutResult, bootstrap_ci
from masseg_search.mss.outputs import plot_policy
from masseg_search.mss.policy_fit import (
    POLICIES,
    CandidateTable,
    TreeSettings,
    check_features,
    fit_learned_policy,
    nested_choices,
)
from masseg_search.mss.search import Config, PassScorer, StopRequest
from masseg_search.mss.studies import grid_values
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT, BestConfigs
from masseg_search.store.knobs import Knobs, as_knobs, knobs_id, parse_knobs_id
from masseg_search.store.mss_results import MssResults
from masseg_search.store.policy import Policy, save_policy

KEY_COLUMNS = ["video", "object_id", "scene_type"]
ORACLE_NOTE = "upper bound: each object's best candidate, read from its own held-out J&F; never a result"


@dataclass
class PolicyResult:
    """The learned policy and its held-out comparison with the fixed, per-type and oracle policies."""

    policy: Policy
    comparison: pd.DataFrame  # one row per policy (see MssResults.policy_comparison)
    per_object: pd.DataFrame  # one row per held-out object: fold, each policy's configuration and J&F
    folds: pd.DataFrame  # one row per outer fold: depth chosen, inner-CV J&F per depth, rules
    candidates: CandidateTable


def tree_settings(mss: MssSection, seed: int | None = None) -> TreeSettings:
    """The tree settings of the config's ``mss.policy`` section."""
    section = mss.policy
    return TreeSettings(check_features(section.features), section.max_depth, section.max_leaves,
                        section.min_leaf_objects, section.inner_folds, mss.seed if seed is None else seed)


def _unique(configs: list) -> list[Config]:
    """The configurations in order, each once; two that share a config id (the same up to its %g digits) are one
    (the candidate table names its columns by id)."""
    unique: dict[str, Config] = {}
    for config in configs:
        knobs = as_knobs(config)
        unique.setdefault(knobs_id(knobs), knobs)
    return list(unique.values())


def base_candidates(mss: MssSection) -> list[Config]:
    """The two baselines and the grid over the scale and bias ranges of ``mss.space`` (``mss.policy.grid_points``
    per dimension; the other knobs at their defaults)."""
    points = mss.policy.grid_points
    space = mss.space
    grid = [Knobs(scale, bias) for scale in grid_values(space.scale, points) for bias in grid_values(space.bias, points)] \
        if points else []
    return _unique([SAM2_DEFAULT, MASSEG_BEST, *grid])


def heldout_knobs(per_object: pd.DataFrame) -> list[Knobs]:
    """Each row's per-type choice in tune-mss's held-out table: its knobs from its config id (older tables have
    none), its scale and bias at full precision from chosen_scale and chosen_bias."""
    pairs = zip(per_object["chosen_scale"], per_object["chosen_bias"])
    if "chosen_config" in per_object:
        return [parse_knobs_id(str(text))[0].with_pair(float(scale), float(bias))
                for text, (scale, bias) in zip(per_object["chosen_config"], pairs)]
    return [Knobs(scale, bias) for scale, bias in pairs]


def fold_candidates(mss: MssSection, holdout: HoldoutResult) -> dict[int, list[Config]]:
    """Per outer fold: the baselines, the grid, and the per-type configurations chosen on that fold's training folds."""
    base = base_candidates(mss)
    choices = holdout.per_object
    return {fold: _unique([*base, *heldout_knobs(choices[choices.fold == fold])]) for fold in range(len(holdout.folds))}


def final_candidates(mss: MssSection, best: BestConfigs) -> list[Config]:
    """The baselines, the grid, and the final per-type choices (what the final policy may pick)."""
    return _unique([*base_candidates(mss), *sorted(best.configs(), key=knobs_id)])


def _read_table(path: Path, configs: list[Config], needed: list[str]) -> pd.DataFrame | None:
    """The saved candidate rows when they hold the ``needed`` columns and every one of ``configs`` (else None: the
    pass starts over)."""
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"video": str, "scene_type": str})
    if not all(column in table.columns for column in [*needed, *(knobs_id(config) for config in configs)]):
        return None
    return table


def candidate_table(objects: pd.DataFrame, configs: list[Config], scorer: PassScorer, path: Path, features: list[str],
                    videos_per_pass: int, progress: bool = True, stop: StopRequest | None = None) -> CandidateTable | None:
    """Every object under every candidate (see the module docstring); resumes from ``path``; None when stopped."""
    columns = [knobs_id(config) for config in configs]
    keep = [*KEY_COLUMNS, *features]
    saved = _read_table(path, configs, keep)
    done = set() if saved is None else set(saved["video"])
    parts = [] if saved is None else [saved[[*keep, *columns]]]
    todo = sorted(set(objects["video"]) - done)
    chunks = [todo[start:start + videos_per_pass] for start in range(0, len(todo), videos_per_pass)]
    for chunk in tqdm(chunks, desc="policy candidates", unit="pass", disable=not progress or not chunks):
        if stop is not None and stop.requested:
            return None
        rows = objects[objects["video"].isin(chunk)]
        pass_configs = {video: {int(obj): list(configs) for obj in group["object_id"]} for video, group in rows.groupby("video")}
        scores = scorer(pass_configs)
        try:
            jf = np.array([scores[row.video][int(row.object_id)] for row in rows.itertuples(index=False)], dtype=float)
        except KeyError:
            raise MassegError("the engine pass returned no score for a validation object",
                              fix="this is a bug in the pass scorer: it must score every object it was given") from None
        part = rows[keep].reset_index(drop=True).copy()
        part[columns] = jf.reshape(len(rows), len(configs))
        parts.append(part)
        atomic_write_bytes(path, pd.concat(parts, ignore_index=True).to_csv(index=False, float_format="%.17g").encode())
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[*keep, *columns])
    order = objects[["video", "object_id"]].merge(table, on=["video", "object_id"], how="left", suffixes=("_objects", ""))
    if order[columns].isna().any().any():
        raise MassegError("the candidate table misses validation objects", path, "delete the file and rerun tune-mss")
    return CandidateTable(order[keep].reset_index(drop=True), list(configs), order[columns].to_numpy(dtype=float))


def _scored_choices(choices: pd.DataFrame, path: Path) -> pd.DataFrame | None:
    """The saved held-out scores when they were made for exactly these choices (a resumed run), else None."""
    if not path.is_file():
        return None
    config_columns = [f"{p}_config" for p in POLICIES]
    saved = pd.read_csv(path, dtype={"video": str, "scene_type": str, **dict.fromkeys(config_columns, str)})
    needed = ["video", "object_id", *config_columns, *(f"jf_{p}" for p in POLICIES)]
    if not set(needed) <= set(saved.columns) or len(saved) != len(choices):
        return None
    merged = choices.merge(saved[needed], on=["video", "object_id"], suffixes=("", "_saved"))
    if len(merged) != len(choices):
        return None
    if not all((merged[column] == merged[f"{column}_saved"]).all() for column in config_columns):
        return None
    return merged.drop(columns=[f"{column}_saved" for column in config_columns])


def score_choices(choices: pd.DataFrame, scorer: PassScorer, path: Path) -> pd.DataFrame:
    """ONE engine pass: every held-out object under its four policies' configurations (slots 0..3)."""
    saved = _scored_choices(choices, path)
    if saved is not None:
        return saved
    pass_configs: dict[str, dict[int, list[Config]]] = {}
    for row in choices.itertuples(index=False):
        pass_configs.setdefault(row.video, {})[int(row.object_id)] = [
            parse_knobs_id(getattr(row, f"{p}_config"))[0] for p in POLICIES]
    scores = scorer(pass_configs)
    scored = choices.copy()
    for slot, name in enumerate(POLICIES):
        scored[f"jf_{name}"] = [float(scores[row.video][int(row.object_id)][slot]) for row in choices.itertuples(index=False)]
    return scored


def compare_policies(per_object: pd.DataFrame, samples: int, seed: int) -> pd.DataFrame:
    """One row per policy: held-out J&F and its interval, paired gains over fixed and per_type with intervals."""
    rows = []
    for name in POLICIES:
        values = per_object[f"jf_{name}"]
        low, high = bootstrap_ci(values, per_object["video"], samples, seed)
        row: dict[str, Any] = {"policy": name, "heldout_jf": float(values.mean()), "ci_low": low, "ci_high": high}
        for against in ("fixed", "per_type"):
            gain = values - per_object[f"jf_{against}"]
            gain_low, gain_high = bootstrap_ci(gain, per_object["video"], samples, seed)
            row.update({f"gain_over_{against}": float(gain.mean()), f"gain_over_{against}_ci_low": gain_low,
                        f"gain_over_{against}_ci_high": gain_high})
        row.update({"objects": len(per_object), "videos": int(per_object["video"].nunique()),
                    "note": ORACLE_NOTE if name == "oracle" else ""})
        rows.append(row)
    return pd.DataFrame(rows)


def folds_table(fits: dict, folds: list[list[str]]) -> pd.DataFrame:
    """Per outer fold: held-out videos, the fixed choice, the depth picked, inner-CV J&F per depth, the rules."""
    rows = []
    for fold, fitted in sorted(fits.items()):
        row: dict[str, Any] = {"fold": fold, "heldout_videos": len(folds[fold]), "fixed": knobs_id(fitted.fixed),
                               "depth": fitted.learned.depth, "leaves": len(fitted.learned.rules)}
        row.update({f"inner_jf_depth_{depth}": value for depth, value in sorted(fitted.depth_values.items())})
        row["rules"] = " | ".join(rule.text() for rule in fitted.learned.rules)
        rows.append(row)
    return pd.DataFrame(rows)


def run_policy(objects: pd.DataFrame, scorer: PassScorer, mss: MssSection, holdout: HoldoutResult, best: BestConfigs,
               out_dir: Path, study: str, model_config: str | None = None, checkpoint: str | None = None,
               seed: int | None = None, progress: bool = True, stop: StopRequest | None = None) -> PolicyResult | None:
    """Steps 1-5 of the module docstring; ``objects`` is the scene-type table of the validation objects (features
    included). Writes the policy files of :class:`MssResults`; None when stopped (rerun to resume)."""
    if holdout is None or holdout.per_object.empty:
        raise MassegError("a learned policy is compared on held-out folds, and this run has none",
                          fix="pass --cv 2 or more (mss.cv_folds) with --policy learned")
    results = MssResults(out_dir)
    settings = tree_settings(mss, seed)
    per_fold = fold_candidates(mss, holdout)
    final = final_candidates(mss, best)
    configs = _unique([*final, *(config for candidates in per_fold.values() for config in candidates)])
    table = candidate_table(objects, configs, scorer, results.policy_candidates, settings.features,
                            mss.policy.videos_per_pass, progress, stop)
    if table is None:
        return None
    per_type = {(str(video), int(obj)): knobs for video, obj, knobs
                in zip(holdout.per_object["video"], holdout.per_object["object_id"], heldout_knobs(holdout.per_object))}
    nested = nested_choices(table, holdout.folds, per_fold, lambda fold, video, obj: per_type[(video, obj)], settings)
    if stop is not None and stop.requested:
        return None
    per_object = score_choices(nested.choices, scorer, results.policy_objects)
    atomic_write_bytes(results.policy_objects, per_object.to_csv(index=False).encode())
    run_seed = mss.seed if seed is None else seed
    comparison = compare_policies(per_object, mss.bootstrap, run_seed)
    atomic_write_bytes(results.policy_comparison, comparison.to_csv(index=False).encode())
    folds = folds_table(nested.fits, holdout.folds)
    atomic_write_bytes(results.policy_folds, folds.to_csv(index=False).encode())

    policy, depth_values = fit_learned_policy(table, final, settings)
    policy.study, policy.model_config, policy.checkpoint = study, model_config, checkpoint
    policy.heldout = {
        "folds": len(holdout.folds), "depth_cv_jf": {int(depth): float(value) for depth, value in depth_values.items()},
        "comparison": {row.policy: {column: int(getattr(row, column)) if column in ("objects", "videos")
                                    else float(getattr(row, column)) for column in comparison.columns
                                    if column not in ("policy", "note")}
                       for row in comparison.itertuples(index=False)},
        "note": "held-out J&F of each policy fit on the other folds (policy_comparison.csv); the oracle is an upper bound",
    }
    save_policy(results.policy, policy)
    plot_policy(policy, comparison, results.policy_plot)
    return PolicyResult(policy, comparison, per_object, folds, table)
