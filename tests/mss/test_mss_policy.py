"""Learned mask-scaling policies: the tree finds a known split, nested CV never sees the held-out fold, the policy
file round-trips and is read wherever best_configs.yaml is, and tune-mss --policy learned writes its outputs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mss_synthetic_objective import SyntheticScorer

from masseg_search.config import config_from_dict
from masseg_search.data.scene_types import FEATURES
from masseg_search.errors import MassegError
from masseg_search.mss import policy_fit
from masseg_search.mss.holdout import video_folds
from masseg_search.mss.policy_fit import CandidateTable, TreeSettings, fit_learned_policy, nested_choices, policy_value
from masseg_search.mss.tune import tune_mss
from masseg_search.store.best_configs import load_best_configs
from masseg_search.store.mss_results import MssResults
from masseg_search.store.policy import ALONE_DISTANCE, load_policy, policy_from_dict, save_policy

CONFIG_A, CONFIG_B, CONFIG_C = (7.5, -4.0), (20.0, -10.0), (2.0, -1.0)
THRESHOLD = 0.01


def known_split_table(videos: int = 40, objects_per_video: int = 3, seed: int = 0) -> CandidateTable:
    """Objects larger than THRESHOLD do best under A, the others under B; C is never best. Every other feature is
    noise; each object's difficulty (a shift shared by every configuration) varies more than the gaps."""
    rng = np.random.default_rng(seed)
    rows, jf = [], []
    for video in range(videos):
        for object_id in range(1, objects_per_video + 1):
            features = {name: float(rng.uniform(0, 1)) for name in FEATURES}
            features["area_fraction"] = float(rng.uniform(0, 2 * THRESHOLD))
            features["num_objects"] = objects_per_video
            features["nearest_distance"] = math.inf if rng.uniform() < 0.2 else float(rng.uniform(0, 3))
            rows.append({"video": f"video{video:02d}", "object_id": object_id, "scene_type": "regular", **features})
            difficulty = rng.uniform(0.2, 0.7)
            large = features["area_fraction"] > THRESHOLD
            noise = rng.normal(0, 0.01, size=3)
            jf.append([difficulty + (0.1 if large else 0.0) + noise[0], difficulty + (0.0 if large else 0.1) + noise[1],
                       difficulty + 0.03 + noise[2]])
    return CandidateTable(pd.DataFrame(rows), [CONFIG_A, CONFIG_B, CONFIG_C], np.array(jf))


def settings(**overrides) -> TreeSettings:
    values = {"features": list(FEATURES), "max_depth": 3, "max_leaves": 8, "min_leaf_objects": 4, "inner_folds": 3, "seed": 0}
    return TreeSettings(**(values | overrides))


def test_tree_finds_the_known_split_and_maximises_jf() -> None:
    table = known_split_table()
    policy, depth_values = fit_learned_policy(table, table.configs, settings())
    assert policy.depth >= 1 and depth_values[policy.depth] > depth_values[0]  # splitting pays on inner folds
    # every object is sent where it does best: the leaves split area_fraction at the threshold
    first_splits = {rule.conditions[0].feature for rule in policy.rules if rule.conditions}
    assert first_splits == {"area_fraction"}
    for rule in policy.rules:
        area = [c for c in rule.conditions if c.feature == "area_fraction"]
        assert area, rule.text()
        if any(c.op == ">" and c.threshold >= THRESHOLD * 0.9 for c in area):
            assert rule.config.pair == CONFIG_A
        if any(c.op == "<=" and c.threshold <= THRESHOLD * 1.1 for c in area):
            assert rule.config.pair == CONFIG_B
    split = [c.threshold for rule in policy.rules for c in rule.conditions if c.feature == "area_fraction"]
    assert any(abs(t - THRESHOLD) < 0.001 for t in split)
    oracle = table.jf.max(axis=1).mean()
    fixed = table.jf.mean(axis=0).max()
    assert policy_value(policy, table) > fixed + 0.03 and policy_value(policy, table) == pytest.approx(oracle, abs=0.01)
    assert sum(rule.objects for rule in policy.rules) == len(table.objects)


def test_noise_features_give_the_fixed_policy() -> None:
    """No feature tells the configurations apart: the inner CV keeps depth 0, one configuration for all."""
    table = known_split_table()
    rng = np.random.default_rng(1)
    table.jf = table.jf.mean(axis=1, keepdims=True) + rng.normal(0, 0.01, size=table.jf.shape) + np.array([0.0, 0.02, 0.0])
    policy, _ = fit_learned_policy(table, table.configs, settings())
    assert policy.depth == 0 and len(policy.rules) == 1 and policy.rules[0].config.pair == CONFIG_B


def test_leaves_are_capped_and_restricted_to_the_allowed_candidates() -> None:
    table = known_split_table()
    policy = policy_fit.fit_tree_policy(table, [CONFIG_B, CONFIG_C], 6, settings(max_leaves=3, min_leaf_objects=2))
    assert len(policy.rules) <= 3 and {rule.config.pair for rule in policy.rules} <= {CONFIG_B, CONFIG_C}


def test_nested_cv_never_sees_the_heldout_fold(monkeypatch) -> None:
    """A spy on every fit (the outer fold's and each inner-CV tree): no fit during outer fold f gets a row of f."""
    table = known_split_table(videos=12)
    folds = video_folds(table.objects["video"].tolist(), 3, seed=0)
    current = {"fold": None}
    outer_calls, tree_calls = [], []
    real_fold_fit, real_tree_fit = policy_fit.fit_fold_policies, policy_fit.fit_tree_policy

    def spy_fold(train, allowed, tree_settings):
        current["fold"] = next(f for f, held in enumerate(folds) if not set(held) & set(train.objects["video"]))
        outer_calls.append((current["fold"], set(train.objects["video"])))
        return real_fold_fit(train, allowed, tree_settings)

    def spy_tree(train, allowed, depth, tree_settings):
        tree_calls.append((current["fold"], set(train.objects["video"])))
        return real_tree_fit(train, allowed, depth, tree_settings)

    monkeypatch.setattr(policy_fit, "fit_tree_policy", spy_tree)
    candidates = {fold: table.configs for fold in range(3)}
    result = nested_choices(table, folds, candidates, lambda fold, video, obj: CONFIG_B, settings(), fit_fold=spy_fold)
    assert [fold for fold, _ in outer_calls] == [0, 1, 2]
    for fold, videos in outer_calls:
        assert videos == set(table.objects["video"]) - set(folds[fold])
    assert len(tree_calls) >= 3 * 4  # every depth on every inner fold, then the final tree, per outer fold
    for fold, videos in tree_calls:
        assert not videos & set(folds[fold]), f"a fit in outer fold {fold} saw its held-out videos"
    # each object is chosen for exactly once, in the fold that holds it out
    assert len(result.choices) == len(table.objects)
    for row in result.choices.itertuples():
        assert row.video in folds[row.fold]
        assert (row.per_type_scale, row.per_type_bias) == CONFIG_B


def test_policy_file_round_trips_and_reads_as_best_configs(tmp_path: Path) -> None:
    table = known_split_table()
    policy, _ = fit_learned_policy(table, table.configs, settings())
    policy.study, policy.heldout = "val", {"comparison": {"learned": {"heldout_jf": 0.5}}}
    path = tmp_path / "policy.yaml"
    save_policy(path, policy)
    again = load_policy(path)
    assert again.to_dict() == policy.to_dict()
    assert again.assign(table.objects) == policy.assign(table.objects)
    best = load_best_configs(path)  # wherever a best_configs.yaml is read
    assert best.policy is not None and set(best.types) == {rule.leaf for rule in policy.rules}
    keys = best.object_keys(table.objects)
    chosen = [best.for_type(key) for key in keys]
    assert chosen == [policy.config_for(row) for row in table.objects.to_dict("records")]
    alone = table.objects.assign(nearest_distance=math.inf).iloc[:1]
    assert policy.leaf_for(alone.iloc[0].to_dict()) == policy.leaf_for(alone.iloc[0].to_dict() | {"nearest_distance": ALONE_DISTANCE})
    with pytest.raises(MassegError, match="lacks the features"):
        best.object_keys(table.objects.drop(columns=["area_fraction"]), "types.csv")


@pytest.mark.parametrize("broken, message", [
    ({"rules": []}, "non-empty 'rules'"),
    ({"rules": [{"when": ["area_fraction < 0.1"], "scale": 1, "bias": 0}]}, "cannot read the rule condition"),
    ({"rules": [{"when": ["clutter <= 0.1"], "scale": 1, "bias": 0}]}, "not in 'features'"),
    ({"rules": [{"when": [], "scale": "x", "bias": 0}]}, "numeric 'scale' and 'bias'"),
    ({"rules": [{"when": [], "scale": 7.5, "bias": -4, "memory_stride": 0}]}, "memory_stride must be >= 1"),
])
def test_bad_policy_files_name_the_problem(broken, message) -> None:
    """Each mistake is a MassegError naming the file and what is wrong (a leaf's memory knobs are checked too)."""
    data = {"features": ["area_fraction"], "default": {"scale": 20, "bias": -10}} | broken
    with pytest.raises(MassegError, match=message):
        policy_from_dict(data, "policy.yaml")


def _config(tmp_path: Path, data_root: Path):
    values = {"model": {"config": "tiny64", "device": "cpu"}, "data": {"root": str(data_root)},
              "scene_types": {"default": "regular", "types": [{"name": "crowded", "when": {"num_objects": {"min": 4}}}]},
              "mss": {"trials": 4, "batch": 2, "cv_folds": 2, "bootstrap": 100, "results_dir": str(tmp_path / "results"),
                      "artifact_dir": str(tmp_path / "artifacts"),
                      "policy": {"grid_points": 2, "min_leaf_objects": 1, "inner_folds": 2, "videos_per_pass": 1}}}
    return config_from_dict(values)


def test_tune_mss_policy_learned_writes_the_comparison(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    scorer = SyntheticScorer()
    result = tune_mss(_config(tmp_path, tiny_dataset), study="val", scorer=scorer, progress=False, policy="learned")
    results = MssResults(tmp_path / "results" / "val")
    comparison = pd.read_csv(results.policy_comparison)
    assert list(comparison["policy"]) == ["fixed", "per_type", "learned", "oracle"]
    for column in ("heldout_jf", "ci_low", "ci_high", "gain_over_fixed", "gain_over_fixed_ci_low",
                   "gain_over_fixed_ci_high", "gain_over_per_type", "gain_over_per_type_ci_low", "gain_over_per_type_ci_high"):
        assert comparison[column].notna().all(), column
    per_object = pd.read_csv(results.policy_objects)
    holdout = pd.read_csv(results.holdout_objects)
    merged = per_object.merge(holdout, on=["video", "object_id"])
    assert len(merged) == len(holdout)  # every validation object, scored on the fold that held it out
    # per_type is today's held-out result: the per-fold Optuna choices, scored the same way
    assert np.allclose(merged.per_type_scale, merged.chosen_scale) and np.allclose(merged.jf_per_type, merged.jf_chosen)
    assert (per_object.jf_oracle >= per_object[["jf_fixed", "jf_learned"]].max(axis=1) - 1e-9).all()
    rows = comparison.set_index("policy")
    assert rows.loc["learned", "gain_over_per_type"] == pytest.approx(rows.loc["learned", "heldout_jf"] - rows.loc["per_type", "heldout_jf"])
    candidates = pd.read_csv(results.policy_candidates)
    assert len(candidates) == len(holdout) and "s20_b-10" in candidates.columns and "s7.5_b-4" in candidates.columns
    policy = load_policy(results.policy)
    assert set(policy.heldout["comparison"]) == {"fixed", "per_type", "learned", "oracle"}
    assert sum(rule.objects for rule in policy.rules) == len(holdout)
    assert results.policy_plot.is_file() and results.policy_folds.is_file()
    assert result.policy is not None and result.policy.policy.to_dict() == policy.to_dict()
    # a rerun resumes: the candidate table and the policies' held-out pass are read back (the only passes are the
    # per-type holdout's own, three slots each: chosen, 20/-10, 7.5/-4)
    calls = len(scorer.calls)
    tune_mss(_config(tmp_path, tiny_dataset), study="val", scorer=scorer, progress=False, policy="learned")
    for call in scorer.calls[calls:]:
        assert {len(configs) for objects in call.values() for configs in objects.values()} == {3}
    assert pd.read_csv(results.policy_comparison).equals(comparison)


def test_policy_needs_heldout_folds(tmp_path: Path, tiny_dataset: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MassegError, match="--cv"):
        tune_mss(_config(tmp_path, tiny_dataset), study="val", scorer=SyntheticScorer(), progress=False, cv=0,
                 policy="learned")


def test_candidates_keep_full_precision_and_one_column_per_config_id() -> None:
    """The per-fold choices come with their knobs from chosen_config and their exact scale and bias; a choice that
    equals another up to its id's digits is one candidate (the table's columns are named by id)."""
    from masseg_search.config import MssSection
    from masseg_search.mss.holdout import HoldoutResult
    from masseg_search.mss.policy import _unique, fold_candidates

    held = pd.DataFrame({"fold": [0, 1], "video": ["a", "b"], "object_id": [1, 1],
                         "chosen_config": ["s5.26694_b-1.1037_as0.5", "s20_b-10"],
                         "chosen_scale": [5.26694456611062, 20.0], "chosen_bias": [-1.1037030452106258, -10.0]})
    mss = MssSection.model_validate({"policy": {"grid_points": 0}})
    candidates = fold_candidates(mss, HoldoutResult([["a"], ["b"]], held, pd.DataFrame()))
    chosen = candidates[0][-1]
    assert (chosen.scale, chosen.bias, chosen.admit_score) == (5.26694456611062, -1.1037030452106258, 0.5)
    assert [c.pair for c in candidates[1]] == [(20.0, -10.0), (7.5, -4.0)]  # SAM2's default once
    assert len(_unique([(5.26694456611062, -1.1037030452106258), (5.26694, -1.1037)])) == 1
