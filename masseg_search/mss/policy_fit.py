"""Fitting mask-scaling policies on a candidate table (object x configuration -> J&F), nested over video folds.

A *policy* maps an object's first-frame features to one (scale, bias). Four are compared, each fit on training
videos only and applied to held-out ones:

- ``fixed``: the one candidate with the best mean J&F over the training objects.
- ``per_type``: the hand-written scene types, each with its own tuned configuration (tune-mss's per-fold Optuna
  choices: today's result; given, not fit here).
- ``learned``: a shallow tree over the features (:func:`fit_tree_policy`), its depth chosen by an inner CV over the
  training videos (:func:`choose_depth`), at most ``max_leaves`` leaves.
- ``oracle``: each object's own best candidate (it reads the held-out J&F: the upper bound, never a result).

How the tree is fit to maximise mean J&F rather than class accuracy: a multi-output regression tree
(scikit-learn's ``DecisionTreeRegressor``) on each object's *relative* J&F vector, its J&F under every candidate
minus its mean over the candidates; each leaf then takes the candidate with the best mean J&F of its training
objects. The leaf choice is exactly the mean-J&F optimum for the leaf's objects, and every candidate's J&F steers
the splits, not only the winner's: a candidate that is a close second everywhere can win a leaf, and near-ties
(frequent: many configurations score alike) do not become noisy class labels, as they would for a classifier on
the argmax label even with gap weights. Subtracting each object's mean removes how hard the object is (which no
configuration changes) so the squared-error splits follow how the configurations' ranking changes with the
features. Depth is chosen by held-out mean J&F, the objective itself, with ties to the shallower tree; depth 0 is
the fixed policy, so the tree is used only where the inner CV finds that splitting pays.

Thresholds are rounded to 4 significant digits and the rounded policy is what is scored and written, so
``policy.yaml`` is exactly the evaluated policy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from sklearn.tree import DecisionTreeRegressor

from masseg_search.data.scene_types import FEATURES
from masseg_search.errors import MassegError
from masseg_search.mss.holdout import video_folds
from masseg_search.store.knobs import Knobs, as_knobs, knobs_id
from masseg_search.store.policy import Condition, Policy, PolicyRule, feature_value

Config = Knobs  # a candidate configuration: scale, bias and any memory knobs (as tune-mss's studies search them)
POLICIES = ("fixed", "per_type", "learned", "oracle")


@dataclass
class CandidateTable:
    """Validation objects (``video, object_id, scene_type`` and features) and their J&F under each candidate."""

    objects: pd.DataFrame
    configs: list[Config]
    jf: np.ndarray  # (objects, configs)

    def __post_init__(self) -> None:
        self.configs = [as_knobs(config) for config in self.configs]  # (scale, bias) pairs are accepted

    def subset(self, mask: np.ndarray) -> "CandidateTable":
        """The rows where ``mask`` holds."""
        return CandidateTable(self.objects[mask].reset_index(drop=True), list(self.configs), self.jf[mask])

    def columns(self, configs: list) -> list[int]:
        """The column index of each configuration, matched by config id (a clear error for one that is not a
        candidate)."""
        index = {knobs_id(config): i for i, config in enumerate(self.configs)}
        wanted = [knobs_id(as_knobs(config)) for config in configs]
        missing = [name for name in wanted if name not in index]
        if missing:
            raise MassegError(f"configurations {missing} are not in the candidate table",
                              fix="rerun tune-mss --policy learned so the candidate pass covers them")
        return [index[name] for name in wanted]


@dataclass
class TreeSettings:
    """How the learned policy's tree is grown and its depth chosen."""

    features: list[str]
    max_depth: int = 3
    max_leaves: int = 8
    min_leaf_objects: int = 4
    inner_folds: int = 3
    seed: int = 0


@dataclass
class FoldPolicies:
    """What one outer fold fit on its training videos: the fixed configuration and the learned policy."""

    fixed: Config
    learned: Policy
    depth_values: dict[int, float] = field(default_factory=dict)  # inner-CV mean J&F per tree depth


def check_features(features: list[str] | None) -> list[str]:
    """The features a tree may read (all scene-type features by default); an unknown name is an error."""
    import difflib

    names = list(features) if features else list(FEATURES)
    for name in names:
        if name not in FEATURES:
            close = difflib.get_close_matches(name, FEATURES, n=1)
            raise MassegError(f"mss.policy.features names unknown feature {name!r}", None,
                              f"did you mean {close[0]!r}?" if close else f"use some of {', '.join(FEATURES)}")
    return names


def feature_matrix(objects: pd.DataFrame, features: list[str]) -> np.ndarray:
    """(objects, features) floats as a policy reads them (``inf`` distance = alone, see store.policy)."""
    missing = [name for name in features if name not in objects.columns]
    if missing:
        raise MassegError(f"the objects table lacks the features {missing}", fix="recompute the scene-type table")
    rows = [[feature_value(name, value) for name, value in zip(features, row)]
            for row in objects[features].itertuples(index=False, name=None)]
    return np.array(rows, dtype=np.float64).reshape(len(objects), len(features))


def best_column(jf: np.ndarray, columns: list[int]) -> int:
    """The column (of ``columns``) with the best mean J&F; ties to the first listed."""
    means = jf[:, columns].mean(axis=0)
    return columns[int(np.argmax(means))]


def _round_threshold(value: float) -> float:
    return float(f"{value:.4g}")


def _tree_rules(tree, features: list[str]) -> list[list[Condition]]:
    """Each leaf's conditions, leaves left to right (scikit-learn: ``x <= threshold`` goes left)."""
    structure = tree.tree_
    leaves: list[list[Condition]] = []

    def walk(node: int, conditions: list[Condition]) -> None:
        left, right = structure.children_left[node], structure.children_right[node]
        if left == right:  # a leaf
            leaves.append(conditions)
            return
        name, threshold = features[structure.feature[node]], _round_threshold(float(structure.threshold[node]))
        walk(left, [*conditions, Condition(name, "<=", threshold)])
        walk(right, [*conditions, Condition(name, ">", threshold)])

    walk(0, [])
    return leaves


def _simplify(conditions: list[Condition]) -> list[Condition]:
    """One upper and one lower bound per feature (a path may test a feature twice)."""
    upper: dict[str, float] = {}
    lower: dict[str, float] = {}
    for condition in conditions:
        if condition.op == "<=":
            upper[condition.feature] = min(upper.get(condition.feature, math.inf), condition.threshold)
        else:
            lower[condition.feature] = max(lower.get(condition.feature, -math.inf), condition.threshold)
    order = list(dict.fromkeys(condition.feature for condition in conditions))
    simplified = []
    for name in order:
        if name in lower:
            simplified.append(Condition(name, ">", lower[name]))
        if name in upper:
            simplified.append(Condition(name, "<=", upper[name]))
    return simplified


def fit_tree_policy(train: CandidateTable, allowed: list[Config], depth: int, settings: TreeSettings) -> Policy:
    """The learned policy of one depth, fit on ``train`` (see the module docstring); depth 0 = the fixed policy."""
    columns = train.columns(allowed)
    fixed = train.configs[best_column(train.jf, columns)]
    if depth == 0 or len(train.objects) < 2 * settings.min_leaf_objects or settings.max_leaves < 2:
        leaves: list[list[Condition]] = [[]]
    else:
        features = feature_matrix(train.objects, settings.features)
        relative = train.jf[:, columns] - train.jf[:, columns].mean(axis=1, keepdims=True)
        tree = DecisionTreeRegressor(max_depth=depth, max_leaf_nodes=settings.max_leaves,
                                     min_samples_leaf=settings.min_leaf_objects, random_state=settings.seed)
        tree.fit(features, relative)
        leaves = [_simplify(conditions) for conditions in _tree_rules(tree, settings.features)]
    rules = [PolicyRule(f"leaf_{index + 1}", conditions, fixed) for index, conditions in enumerate(leaves)]
    policy = Policy(list(settings.features), rules, fixed, depth=depth if len(leaves) > 1 else 0)
    # each leaf: the best candidate for the training objects the (rounded) rules send there
    assigned = np.array(policy.assign(train.objects)) if len(train.objects) else np.array([], dtype=str)
    for rule in rules:
        members = assigned == rule.leaf
        rule.objects = int(members.sum())
        if rule.objects:
            column = best_column(train.jf[members], columns)
            rule.config = train.configs[column]
            rule.jf = float(train.jf[members, column].mean())
    return policy


def policy_columns(policy: Policy, table: CandidateTable) -> np.ndarray:
    """Per row of ``table``, the candidate column the policy chooses."""
    leaf_configs = policy.leaf_configs()
    chosen = [leaf_configs.get(leaf, policy.default) for leaf in policy.assign(table.objects)]
    return np.array(table.columns(chosen), dtype=int)


def policy_value(policy: Policy, table: CandidateTable) -> float:
    """Mean J&F over the table's objects under the policy's choices (read from the candidate table)."""
    if not len(table.objects):
        return float("nan")
    columns = policy_columns(policy, table)
    return float(table.jf[np.arange(len(columns)), columns].mean())


def choose_depth(train: CandidateTable, allowed: list[Config], settings: TreeSettings,
                 fit: Callable[..., Policy] | None = None) -> tuple[int, dict[int, float]]:
    """The tree depth with the best mean J&F on inner folds over ``train``'s videos (ties: the shallower), and the
    value of every depth. Only ``train`` is read."""
    fit = fit or fit_tree_policy
    videos = sorted(train.objects["video"].unique())
    folds = min(settings.inner_folds, len(videos))
    if folds < 2 or settings.max_depth == 0:
        return 0, {0: float("nan")}
    inner = video_folds(videos, folds, settings.seed)
    values: dict[int, float] = {}
    for depth in range(settings.max_depth + 1):
        scores, counts = 0.0, 0
        for held in inner:
            held_mask = train.objects["video"].isin(held).to_numpy()
            policy = fit(train.subset(~held_mask), allowed, depth, settings)
            part = train.subset(held_mask)
            scores += policy_value(policy, part) * len(part.objects)
            counts += len(part.objects)
        values[depth] = scores / counts
    best = max(values.values())
    return min(depth for depth, value in values.items() if value >= best - 1e-12), values


def fit_learned_policy(train: CandidateTable, allowed: list[Config], settings: TreeSettings,
                       fit: Callable[..., Policy] | None = None) -> tuple[Policy, dict[int, float]]:
    """Depth by inner CV on ``train``, then the tree of that depth fit on all of ``train``."""
    fit = fit or fit_tree_policy
    depth, values = choose_depth(train, allowed, settings, fit)
    return fit(train, allowed, depth, settings), values


def fit_fold_policies(train: CandidateTable, allowed: list[Config], settings: TreeSettings) -> FoldPolicies:
    """The fixed and learned policies of one outer fold, from its training objects only."""
    fixed = train.configs[best_column(train.jf, train.columns(allowed))]
    learned, values = fit_learned_policy(train, allowed, settings)
    return FoldPolicies(fixed, learned, values)


@dataclass
class NestedResult:
    """Per held-out object the configuration of every policy (fit on the other folds), and per fold its fit."""

    choices: pd.DataFrame  # fold, video, object_id, scene_type, leaf, <policy>_config, <policy>_scale, <policy>_bias
    fits: dict[int, FoldPolicies]


def nested_choices(table: CandidateTable, folds: list[list[str]], fold_candidates: dict[int, list[Config]],
                   per_type: Callable[[int, str, int], Config], settings: TreeSettings,
                   fit_fold: Callable[[CandidateTable, list[Config], TreeSettings], FoldPolicies] | None = None) -> NestedResult:
    """For every outer fold: fit the policies on the other folds' objects only, and choose each held-out object's
    configuration under each policy. ``per_type(fold, video, object_id)`` gives the per-type choice made on the
    other folds; the oracle takes the held-out object's own best of the fold's candidates."""
    fit_fold = fit_fold or fit_fold_policies
    rows, fits = [], {}
    videos = table.objects["video"].to_numpy()
    for fold, held_videos in enumerate(folds):
        held_mask = np.isin(videos, held_videos)
        if not held_mask.any():
            continue
        allowed = fold_candidates[fold]
        fitted = fit_fold(table.subset(~held_mask), allowed, settings)  # the held-out rows are never passed
        fits[fold] = fitted
        held = table.subset(held_mask)
        columns = table.columns(allowed)
        learned_columns = policy_columns(fitted.learned, held)
        leaves = fitted.learned.assign(held.objects)
        for index, row in enumerate(held.objects.itertuples(index=False)):
            oracle = table.configs[columns[int(np.argmax(held.jf[index, columns]))]]
            learned = table.configs[learned_columns[index]]
            own_type = as_knobs(per_type(fold, str(row.video), int(row.object_id)))
            record = {"fold": fold, "video": str(row.video), "object_id": int(row.object_id),
                      "scene_type": str(row.scene_type), "leaf": leaves[index]}
            for name, config in (("fixed", fitted.fixed), ("per_type", own_type), ("learned", learned), ("oracle", oracle)):
                record.update({f"{name}_config": knobs_id(config), f"{name}_scale": config.scale, f"{name}_bias": config.bias})
            rows.append(record)
    columns_out = ["fold", "video", "object_id", "scene_type", "leaf"] + [
        f"{p}_{k}" for p in POLICIES for k in ("config", "scale", "bias")]
    return NestedResult(pd.DataFrame(rows, columns=columns_out), fits)
