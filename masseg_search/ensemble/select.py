"""`ensemble --select-on val`: score each fusion candidate on validation predictions and write the chosen plan.

Like nnU-Net's ``find_best_configuration``: every candidate is scored with the DAVIS J&F (per object, in memory,
frames 1..T-2) and the plan records all of them next to the choice, so a test run applies a choice made on
validation only. Candidates:

- ``best-single``: the one stored configuration with the best J&F;
- ``select``: each object takes its scene type's configuration from ``best_configs.yaml`` (needs it and scene
  types);
- ``mean-top<k>`` / ``logit-mean-top<k>``: the mean of probabilities / logits of the k best configurations;
- ``vote-all``: majority vote of every stored configuration (with 3 or more).

Views (``infer --view NAME`` / ``--flip``: another checkpoint, or the mirrored video) add a second axis. The
candidates above use the base view only; when views are stored, ``best-single``, ``select`` and ``mean-top<k>`` are
also scored fused over views (``+<view>`` for each view alone, ``+views`` for all of them): each configuration the
candidate names is taken under the base view and under those views, and everything is averaged as probabilities
(``mean``). A view variant is scored only when every configuration it needs is stored under its views.

Members of other model families (``infer --import-masks``, ``infer --engine cutie``, stored as views) and the
other views are also *chosen between* (:func:`family_members`: the best base configuration and the best one stored
under each view; with no view, the top-k base configurations):

- ``per-video-consensus`` / ``per-video-confidence`` / ``per-object-consensus`` / ``per-object-confidence``: each
  validation video (or object) takes one member by a label-free rule (:mod:`masseg_search.ensemble.agreement`);
  the labels only score the outcome. The record counts how often each member was chosen (``member_choices``: by
  view, as each fold may take another configuration under a view; by configuration when there is no view);
- ``pixel-confidence``: per pixel, the member with the largest ``|logit|`` (CGFSeg-style confidence fusion).

Choices inside a candidate (which config is best, which k are top) are made on training folds and scored on the
held-out fold when a folds file exists (``{fold: [videos]}``, e.g. tune-mss's ``results/mss/<study>/folds.json``);
without one, choice and score use the same videos and the record says ``held_out: false``. ``select`` is scored
held out with tune-mss's per-fold choices when ``holdout_objects.csv`` sits beside the folds file and its
configurations are stored; otherwise ``best_configs.yaml`` is taken as given (optimistic if it was tuned on these
videos; the plan's notes say which). Ties go to the simpler candidate (the order above).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from masseg_search.data import layout
from masseg_search.ensemble.agreement import choose, count_choices, score_members
from masseg_search.ensemble.fuse import fuse_video
from masseg_search.ensemble.plan import (
    CHOICE_METHODS,
    FusionPlan,
    FusionRule,
    RuleResolver,
    RuleSpec,
    load_scene_type_lookup,
    per_type_views,
    save_plan,
)
from masseg_search.ensemble.render import video_masks
from masseg_search.errors import MassegError
from masseg_search.evaluation import FrameScorer, first_frame_object_ids
from masseg_search.store import predictions as store
from masseg_search.store.best_configs import load_best_configs
from masseg_search.store.mss_results import MssResults, load_folds


@dataclass
class _VideoJob:
    predictions_root: Path
    video: layout.Video
    assignments: dict[str, dict[int, FusionRule]]  # candidate key -> rule per object


def _score_video(job: _VideoJob) -> dict[str, dict[int, float]]:
    """Per candidate key: object id -> J&F mean on one video (GT of every frame read once)."""
    video = job.video
    names = video.frame_names
    gt = []
    for name in names:
        path = video.annotation_path(name)
        if not path.is_file():
            raise MassegError("ground truth missing for a frame", path, "select on a split with full annotations (a held-out train split)")
        gt.append(layout.read_mask(path))
    if len(gt) < 3:
        raise MassegError(f"video {video.name} has {len(gt)} frames; J&F needs at least 3", video.image_dir, "leave it out of the validation list")
    height, width = gt[0].shape
    # the objects the candidates predict; the official set's other ids would add one value to every candidate
    object_ids = first_frame_object_ids(gt[0])
    cache: dict[str, store.VideoPrediction] = {}
    scores = {}
    for key, rules in job.assignments.items():
        fused = fuse_video(job.predictions_root, video.name, rules, cache)
        scorer = FrameScorer(height, width, object_ids)
        for index, (_, mask) in enumerate(video_masks(fused, video, height, width)):
            if 0 < index < len(names) - 1:
                scorer.add(gt[index], mask)
        scores[key] = scorer.result(video.name, names[1:-1]).object_j_and_f_means()
    return scores


def _run_jobs(jobs: list[_VideoJob], workers: int, progress: bool, description: str) -> dict[str, dict[str, dict[int, float]]]:
    """video -> candidate key -> object -> J&F, over a process pool."""
    from tqdm import tqdm

    results = {}
    bar = tqdm(total=len(jobs), desc=description, unit="video", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for job, scores in zip(jobs, pool.map(_score_video, jobs)):
                results[job.video.name] = scores
                bar.update()
    else:
        for job in jobs:
            results[job.video.name] = _score_video(job)
            bar.update()
    bar.close()
    return results



def _mean_jf(table: dict[str, dict[str, dict[int, float]]], key_of_video: Any, videos: list[str]) -> float:
    """Mean J&F over every object of ``videos``; ``key_of_video(video)`` names the candidate key scored there."""
    values = [jf for video in videos for jf in table[video][key_of_video(video)].values()]
    return float(np.mean(values)) if values else float("nan")


def _rule_key(rule: FusionRule) -> str:
    """The table key of a fused candidate (``mean:s20_b-10,s20_b-10@flip``)."""
    return f"{rule.method}:{','.join(rule.configs)}"


def _rank_configs(table: dict, configs: list[str], videos: list[str]) -> list[str]:
    """Configs by mean single-config J&F over ``videos``, best first (ties: list order)."""
    means = [_mean_jf(table, lambda _v, c=config: f"single:{c}", videos) for config in configs]
    order = sorted(range(len(configs)), key=lambda i: (-means[i], i))
    return [configs[i] for i in order]


def _fold_select_rules(path: Path, fold_map: dict[str, list[str]], object_ids: dict[str, list[int]],
                       available: list[str], prefix: str = "chosen") -> dict[str, dict[int, FusionRule]] | None:
    """Per held-out video, each object's configuration as tune-mss chose it on the other folds: ``path`` is its
    ``holdout_objects.csv`` (``prefix`` ``chosen``) or, selecting with a learned policy, its ``policy_objects.csv``
    (``prefix`` ``learned``), read from ``<prefix>_config`` (its id, with any memory knobs), or ``<prefix>_scale``
    and ``<prefix>_bias`` in tables written before the knobs. None when that file is absent or does not cover every
    scored object with a stored configuration."""
    import pandas as pd

    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"video": str, f"{prefix}_config": str})
    if f"{prefix}_config" in table.columns:
        chosen = {(str(video), int(obj)): str(text)
                  for video, obj, text in zip(table["video"], table["object_id"], table[f"{prefix}_config"])}
    elif {"video", "object_id", f"{prefix}_scale", f"{prefix}_bias"} <= set(table.columns):
        chosen = {(str(video), int(obj)): store.config_id(scale, bias) for video, obj, scale, bias
                  in zip(table["video"], table["object_id"], table[f"{prefix}_scale"], table[f"{prefix}_bias"])}
    else:
        return None
    rules: dict[str, dict[int, FusionRule]] = {}
    for members in fold_map.values():
        for video in members:
            configs = {i: chosen.get((video, i)) for i in object_ids[video]}
            # per_type/ holds the final choice, not the per-fold ones: each fold's config must be stored itself
            if any(c is None or c not in available for c in configs.values()):
                return None
            rules[video] = {i: FusionRule("single", (c,)) for i, c in configs.items()}
    return rules


def with_views(rule: FusionRule, views: tuple[str, ...]) -> FusionRule:
    """``rule``'s configurations under the base view and under each of ``views``, fused by the mean of
    probabilities (``logit-mean`` stays a logit mean); ``rule`` itself without views."""
    if not views:
        return rule
    configs = tuple(rule.configs) + tuple(store.config_id(store.parse_config_id(c), view=v) for v in views for c in rule.configs)
    return FusionRule("logit-mean" if rule.method == "logit-mean" else "mean", configs)


BASE_VIEW_LABEL = "base view"  # how the choice counts name the base view's member (the others: their view)


def family_members(ranked: list[str], views: list[str], stored: list[str], top_k: int) -> tuple[str, ...]:
    """The members the choice rules and ``pixel-confidence`` pick from: the best base configuration, then under
    each stored view (another model, imported masks, the mirrored video) its best-ranked configuration stored
    there, so one member per model or view; with no view stored, the ``top_k`` best base configurations."""
    members = [ranked[0]]
    for view in views:
        under = [store.config_id(store.parse_config_id(c), view=view) for c in ranked]
        members += [c for c in under if c in stored][:1]
    return tuple(members) if len(members) > 1 else tuple(ranked[:max(top_k, 2)])


def _view_sets(views: list[str]) -> list[tuple[str, ...]]:
    """Each stored view alone, then all of them (when there are several)."""
    sets = [(view,) for view in views]
    return sets + [tuple(views)] if len(views) > 1 else sets


def _view_suffix(view_set: tuple[str, ...], views: list[str]) -> str:
    """A candidate's name suffix: ``+flip``, ``+trial2+flip``, or ``+views`` for all stored views."""
    return "+views" if len(view_set) > 1 and len(view_set) == len(views) else "+" + "+".join(view_set)


def _spec_with_views(spec: RuleSpec, views: tuple[str, ...]) -> RuleSpec:
    rule = with_views(FusionRule(spec.method, spec.configs, spec.weights), views)
    return RuleSpec(rule.method, rule.configs, rule.weights)


def _select_plan_with_views(best: Any, views: tuple[str, ...], best_configs: str | Path | None = None) -> FusionPlan:
    """``select`` fused over views, written out as per-scene-type rules (the default config for other types). With
    a learned policy the rules name its leaves, and the plan keeps the policy's path so that applying it sends each
    object to its leaf."""
    def rule(knobs: store.Knobs) -> RuleSpec:
        return _spec_with_views(RuleSpec("single", (store.config_id(knobs),)), views)

    return FusionPlan(rule(best.default), {scene_type: rule(pair) for scene_type, pair in sorted(best.types.items())},
                      best_configs=str(best_configs) if best.policy is not None else None)


def select_fusion(predictions_root: str | Path, data_root: str | Path, out_plan: str | Path, split_list: str | Path | None = None,
                  scene_types: str | Path | None = None, best_configs: str | Path | None = None, folds: str | Path | None = None,
                  top_k: int = 3, workers: int = 1, videos: list[str] | None = None, progress: bool = True) -> FusionPlan:
    """Score every candidate on validation predictions (held-out folds when given), write and return the chosen plan."""
    predictions_root, data_root = Path(predictions_root), Path(data_root)
    dataset = layout.open_dataset(data_root, split_list=split_list)
    names = list(videos) if videos is not None else dataset.video_names
    if not names:
        raise MassegError("no validation videos", data_root, "pass a split list with videos")
    if not predictions_root.is_dir():
        raise MassegError("predictions folder not found", predictions_root,
                          "pass --predictions results/predictions/<split> as written by `masseg-search infer`")
    available = store.list_config_ids(predictions_root)
    complete_any = [c for c in available if all(store.is_complete(predictions_root / c / v) for v in names)]
    complete = [c for c in complete_any if store.config_view(c) is None]  # the base view's configurations
    views = sorted({store.config_view(c) for c in complete_any} - {None})
    view_sets = _view_sets(views)

    def stored_under(rule: FusionRule, view_set: tuple[str, ...]) -> bool:
        return all(c in complete_any for c in with_views(rule, view_set).configs)

    if not complete:
        raise MassegError("no stored configuration covers every validation video", predictions_root,
                          "run (or resume) `masseg-search infer` on the validation split")
    top_k = max(1, min(top_k, len(complete)))
    best = load_best_configs(best_configs) if best_configs else None
    lookup = load_scene_type_lookup(scene_types, best) if scene_types else None  # a policy's leaves with a policy
    object_ids = {v: store.load_video_prediction(predictions_root / complete[0] / v, object_ids=[]).object_ids for v in names}

    def uniform(rule: FusionRule) -> dict[str, dict[int, FusionRule]]:
        return {v: {i: rule for i in object_ids[v]} for v in names}

    fixed: dict[str, dict[str, dict[int, FusionRule]]] = {f"single:{c}": uniform(FusionRule("single", (c,))) for c in complete}
    notes: list[str] = []
    if folds is not None:
        fold_map = load_folds(folds, names)
        if not fold_map:
            raise MassegError("no fold holds a validation video", folds, "pass the folds file of the same split")
        held_out = True
        left_out = sorted(set(names) - {v for members in fold_map.values() for v in members})
        if left_out:
            notes.append(f"{len(left_out)} videos are in no fold and are not scored")
    else:
        fold_map, held_out = {"all": list(names)}, False
    if best is not None and lookup is not None:
        per_type_stored = None in per_type_views(predictions_root)
        choices_file, prefix = MssResults(Path(folds).parent).heldout_choices(best.policy is not None) if held_out \
            else (None, None)
        fold_choices = _fold_select_rules(choices_file, fold_map, object_ids, available, prefix) if held_out else None
        if fold_choices is not None:
            fixed["select"] = fold_choices
            notes.append(f"select scored with tune-mss's per-fold choices ({choices_file.name}): held out")
        else:
            select_plan = FusionPlan(RuleSpec("select"), best_configs=str(best_configs))
            resolver = RuleResolver(select_plan, available, lookup, best, per_type_stored=per_type_stored,
                                    predictions_root=predictions_root)
            fixed["select"] = {v: resolver.rules_for_video(v, object_ids[v]) for v in names}
            notes.append("select scored with best_configs.yaml as given: optimistic if it was tuned on these videos")
    else:
        notes.append("select not scored: pass --best-configs and --scene-types")
    if "select" in fixed:
        for view_set in view_sets:
            if all(stored_under(r, view_set) for per_object in fixed["select"].values() for r in per_object.values()):
                fixed["select" + _view_suffix(view_set, views)] = {
                    v: {i: with_views(r, view_set) for i, r in per_object.items()} for v, per_object in fixed["select"].items()}
            else:
                notes.append(f"select{_view_suffix(view_set, views)} not scored: its configurations are not all stored "
                             f"under {', '.join(view_set)}")
    if len(complete) >= 3:
        fixed["vote-all"] = uniform(FusionRule("vote", tuple(complete)))
    else:
        notes.append(f"vote-all not scored: needs 3 or more configurations, found {len(complete)}")
    stage_one = [_VideoJob(predictions_root, dataset.video(v), {key: per_video[v] for key, per_video in fixed.items() if v in per_video})
                 for v in names]
    table = _run_jobs(stage_one, workers, progress, "select-on: single configs")

    def training(fold: str) -> list[str]:
        if not held_out:
            return fold_map[fold]
        return [v for other, members in fold_map.items() if other != fold for v in members] or fold_map[fold]

    ranking = {fold: _rank_configs(table, complete, training(fold)) for fold in fold_map}
    overall_rank = _rank_configs(table, complete, names)
    fold_members = {fold: family_members(ranking[fold], views, complete_any, top_k) for fold in fold_map}
    choosing = all(len(m) > 1 for m in fold_members.values())
    if not choosing:
        notes.append("per-video / per-object choices and pixel-confidence not scored: they need two or more members "
                     "(configurations or views)")
    combos: dict[str, dict[str, FusionRule]] = {}  # video -> combo key -> rule
    per_object_jobs: dict[str, dict[str, dict[int, FusionRule]]] = {}  # video -> key -> rule per object
    choice_keys: dict[str, dict[str, str]] = {method: {} for method in CHOICE_METHODS}  # method -> video -> table key
    choices: dict[str, dict[str, dict[int, str]]] = {method: {} for method in CHOICE_METHODS}  # method -> video -> picks
    if choosing:
        for fold, videos_in_fold in fold_map.items():
            rules = [FusionRule("single", (m,)) for m in fold_members[fold] if m not in complete]
            rules.append(FusionRule("confidence", fold_members[fold]))
            for video in videos_in_fold:
                for rule in rules:
                    combos.setdefault(video, {})[_rule_key(rule)] = rule
                scores = score_members(predictions_root, video, fold_members[fold], object_ids[video])  # no labels
                for method in CHOICE_METHODS:
                    picks = choose(scores, method)
                    choices[method][video] = picks
                    if len(set(picks.values())) <= 1:  # one member for the whole video: its own masks
                        choice_keys[method][video] = f"single:{next(iter(picks.values()), fold_members[fold][0])}"
                    else:
                        per_object_jobs.setdefault(video, {})[method] = {i: FusionRule("single", (m,)) for i, m in picks.items()}
                        choice_keys[method][video] = method
    for fold, videos_in_fold in fold_map.items():
        chosen = tuple(ranking[fold][:top_k])
        rules = [FusionRule("mean", chosen), FusionRule("logit-mean", chosen)]
        rules += [with_views(FusionRule(method, configs), view_set) for view_set in view_sets
                  for method, configs in (("single", chosen[:1]), ("mean", chosen))
                  if stored_under(FusionRule(method, configs), view_set)]
        for rule in rules:
            for video in videos_in_fold:
                combos.setdefault(video, {})[_rule_key(rule)] = rule
    stage_two = [_VideoJob(predictions_root, dataset.video(v),
                           {**{k: {i: r for i in object_ids[v]} for k, r in combos.get(v, {}).items()}, **per_object_jobs.get(v, {})})
                 for v in names if v in combos or v in per_object_jobs]
    for video, scores in _run_jobs(stage_two, workers, progress, "select-on: fused candidates").items():
        table[video].update(scores)

    candidates: list[dict[str, Any]] = []

    def add(name: str, key_for_fold: Any, rule: RuleSpec | dict[str, Any], key_for_video: Any = None,
            extra: dict[str, Any] | None = None) -> None:
        """Record a candidate scored with table key ``key_for_fold(fold)`` on every video of the fold (or
        ``key_for_video(video)``: a per-video choice)."""
        def key(fold: str, video: str) -> str:
            return key_for_video(video) if key_for_video is not None else key_for_fold(fold)

        per_fold = {fold: _mean_jf(table, lambda v, f=fold: key(f, v), members) for fold, members in fold_map.items()}
        scored = [v for members in fold_map.values() for v in members]
        pooled = [jf for fold, members in fold_map.items() for v in members for jf in table[v][key(fold, v)].values()]
        candidates.append({"name": name, "jf": float(np.mean(pooled)), "per_fold": per_fold, "videos": len(scored), "objects": len(pooled),
                           "rule": rule if isinstance(rule, dict) else rule.to_dict(), **(extra or {})})

    add("best-single", lambda fold: f"single:{ranking[fold][0]}", RuleSpec("single", (overall_rank[0],)))
    if "select" in fixed:
        add("select", lambda fold: "select", RuleSpec("select"))
    top = tuple(overall_rank[:top_k])
    add(f"mean-top{top_k}", lambda fold: f"mean:{','.join(ranking[fold][:top_k])}", RuleSpec("mean", top))
    add(f"logit-mean-top{top_k}", lambda fold: f"logit-mean:{','.join(ranking[fold][:top_k])}", RuleSpec("logit-mean", top))
    if "vote-all" in fixed:
        add("vote-all", lambda fold: "vote-all", RuleSpec("vote", tuple(complete)))
    plans: dict[str, FusionPlan] = {}  # candidates whose plan is more than one rule
    for view_set in view_sets:
        suffix = _view_suffix(view_set, views)
        for name, method, count in (("best-single", "single", 1), (f"mean-top{top_k}", "mean", top_k)):
            # per fold: the configs chosen on its training folds, under the views; the plan: those chosen on all
            keys = {fold: _rule_key(with_views(FusionRule(method, tuple(ranking[fold][:count])), view_set)) for fold in fold_map}
            if all(keys[fold] in table[v] for fold, members in fold_map.items() for v in members):
                add(name + suffix, lambda fold, keys=keys: keys[fold],
                    _spec_with_views(RuleSpec(method, tuple(overall_rank[:count])), view_set))
        if f"select{suffix}" in fixed:  # scored only with best_configs.yaml and scene types
            plans[f"select{suffix}"] = _select_plan_with_views(best, view_set, best_configs)
            add(f"select{suffix}", lambda fold, key=f"select{suffix}": key,
                {"method": "select", "configs": [], "views": list(view_set)})

    if choosing:  # label-free choices between members, and CGFSeg's pixel-level confidence fusion over them
        overall_members = family_members(overall_rank, views, complete_any, top_k)
        # one member per view: counted by view (each fold may take another configuration under it)
        by_view = (lambda c: store.config_view(c) or BASE_VIEW_LABEL) if views else None
        for method in CHOICE_METHODS:
            held = {v: choices[method][v] for videos_in_fold in fold_map.values() for v in videos_in_fold}
            add(method, None, RuleSpec(method, overall_members), key_for_video=lambda v, m=method: choice_keys[m][v],
                extra={"member_choices": count_choices(held, by_view)})
        add("pixel-confidence", lambda fold: f"confidence:{','.join(fold_members[fold])}", RuleSpec("confidence", overall_members))

    winner = max(range(len(candidates)), key=lambda i: (candidates[i]["jf"], -i))
    chosen = candidates[winner]
    if chosen["name"] in plans:  # select over views: one mean rule per scene type
        plan = plans[chosen["name"]]
    else:
        plan = FusionPlan(RuleSpec(chosen["rule"]["method"], tuple(chosen["rule"]["configs"]), None),
                          best_configs=str(best_configs) if chosen["name"] == "select" else None)
    # the chosen plan's members under other views, scored alone too: the report sets the fusion against them
    view_members = sorted(c for c in (plan.needed_configs(best) or []) if c in complete_any and c not in complete)
    stage_three = [_VideoJob(predictions_root, dataset.video(v), {f"single:{c}": uniform(FusionRule("single", (c,)))[v]
                                                                  for c in view_members if f"single:{c}" not in table[v]})
                   for v in names]
    stage_three = [job for job in stage_three if job.assignments]
    if stage_three:
        for video, scores in _run_jobs(stage_three, workers, progress, "select-on: members under views").items():
            table[video].update(scores)
    singles = {c: _mean_jf(table, lambda _v, c=c: f"single:{c}", names) for c in [*complete, *view_members]}
    plan.selection = {
        "chosen": chosen["name"], "jf": chosen["jf"], "metric": "J&F mean over objects (DAVIS, frames 1..T-2)",
        "held_out": held_out, "folds": {fold: len(members) for fold, members in fold_map.items()},
        "predictions": str(predictions_root), "data": str(data_root), "top_k": top_k,
        "candidates": candidates, "single_configs": singles, "views": views, "notes": notes,
    }
    save_plan(out_plan, plan)
    return plan
