"""Choosing a member per video (or per object) without labels: consensus between members, or their own confidence.

A *choice rule* names members (config ids, usually one per model or view: ``s20_b-10``, ``s20_b-10@flip``,
``s20_b-10@cutie``) and, when a video is fused, gives each object one member's logits unchanged (``single``):

- ``per-video-consensus``: the video takes the member that agrees most with the others: for each member, the IoU
  of its mask with every other member's, per object and frame (low-res masks ``logit > 0``, empty vs empty = 1;
  frames after the object's given frame), averaged over the other members, frames and objects. With two members
  the agreement is symmetric and the first listed member is kept; it needs three or more to choose.
- ``per-video-confidence``: the member with the highest estimated J: a SAM2 member that stored its IoU head's
  output (``predicted_iou``; infer writes it) estimates its own J per frame from it and its object score
  ``s``: ``sigmoid(s) * predicted_iou`` where it shows the object (``s > 0``: right if the object is there, with
  the mask's predicted IoU), ``1 - sigmoid(s)`` where it does not (right if the object is gone); any other member
  (another family, imported masks, or a store without predicted IoUs) is scored by its agreement, as above.
- ``per-object-consensus`` / ``per-object-confidence``: the same scores, chosen per object instead of per video.

Ties go to the member listed first. Everything is read from the stored low-res logits of the split being fused:
no ground truth. No torch here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from masseg_search.ensemble.fuse import load_config_prediction
from masseg_search.ensemble.plan import CHOICE_METHODS, FusionRule
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store


@dataclass
class MemberScores:
    """Per member (rows, in the rule's order) and object (columns): agreement and confidence, both J estimates."""

    members: tuple[str, ...]
    object_ids: list[int]
    agreement: np.ndarray  # (M, N) mean IoU with the other members
    confidence: np.ndarray  # (M, N) the member's own J estimate where it has one, else its agreement
    own_confidence: list[bool]  # per member: its confidence comes from its own scores (a SAM2 member)


def frame_ious(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(T,) IoU per frame of two (T, h, w) boolean masks; a frame where both are empty counts 1."""
    intersection = np.logical_and(first, second).sum(axis=(1, 2))
    union = np.logical_or(first, second).sum(axis=(1, 2))
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def _own_confidence(prediction: store.VideoPrediction, object_id: int, frames: slice) -> float | None:
    """A SAM2 member's own J estimate of one object (mean over ``frames``), None without stored predicted IoUs."""
    if prediction.family != "sam2" or object_id not in prediction.predicted_ious:
        return None
    scores = np.asarray(prediction.object_scores[object_id][frames], np.float64)
    ious = np.clip(np.asarray(prediction.predicted_ious[object_id][frames], np.float64), 0.0, 1.0)
    if not len(scores):
        return None
    present = 1.0 / (1.0 + np.exp(-np.clip(scores, -50.0, 50.0)))
    return float(np.mean(np.where(scores > 0, present * ious, 1.0 - present)))


def member_scores(predictions: list[store.VideoPrediction], members: tuple[str, ...], object_ids: list[int]) -> MemberScores:
    """Agreement and confidence of each member's prediction (one per member, same video) for ``object_ids``."""
    count = len(predictions)
    agreement = np.ones((count, len(object_ids)))
    confidence = np.ones((count, len(object_ids)))
    own = [True] * count
    for column, object_id in enumerate(object_ids):
        start = predictions[0].first_frames.get(object_id, 0)
        frames = slice(start + 1, None) if start + 1 < len(predictions[0].frame_names) else slice(None)
        masks = []
        for prediction, member in zip(predictions, members):
            if object_id not in prediction.logits:
                raise MassegError(f"object {object_id} is not stored under {member}", None,
                                  "choose among members that hold every object of the video")
            masks.append(np.asarray(prediction.logits[object_id][frames]) > 0)
        if count > 1:
            pair = np.eye(count)
            for a in range(count):
                for b in range(a + 1, count):
                    pair[a, b] = pair[b, a] = float(frame_ious(masks[a], masks[b]).mean())
            agreement[:, column] = (pair.sum(axis=1) - 1.0) / (count - 1)
        for row, prediction in enumerate(predictions):
            value = _own_confidence(prediction, object_id, frames)
            own[row] = own[row] and value is not None
            confidence[row, column] = agreement[row, column] if value is None else value
    for row in range(count):  # a member is judged one way for every object: its own estimate only if it has all
        if not own[row]:
            confidence[row] = agreement[row]
    return MemberScores(tuple(members), list(object_ids), agreement, confidence, own)


def choose(scores: MemberScores, method: str) -> dict[int, str]:
    """Object id -> the member a choice method takes (per video: one member for every object)."""
    level, criterion = CHOICE_METHODS[method]
    values = scores.agreement if criterion == "consensus" else scores.confidence
    if not scores.object_ids:
        return {}
    if level == "video":
        member = scores.members[int(np.argmax(values.mean(axis=1)))]
        return {object_id: member for object_id in scores.object_ids}
    return {object_id: scores.members[int(np.argmax(values[:, column]))] for column, object_id in enumerate(scores.object_ids)}


def score_members(predictions_root: str | Path, video: str, members: tuple[str, ...], object_ids: list[int],
                  cache: dict[str, store.VideoPrediction] | None = None) -> MemberScores:
    """:func:`member_scores` of one stored video (``cache``: config id -> prediction, shared with the fusion)."""
    loaded = [load_config_prediction(Path(predictions_root), video, member, list(object_ids), cache) for member in members]
    names = loaded[0].frame_names
    for member, prediction in zip(members, loaded):
        if prediction.frame_names != names:
            raise MassegError(f"member {member} has other frames than {members[0]}", Path(predictions_root) / member / video,
                              "rerun infer (or the import) for this video so every member covers the same frames")
    return member_scores(loaded, members, list(object_ids))


def resolve_choices(predictions_root: str | Path, video: str, rules: dict[int, FusionRule],
                    cache: dict[str, store.VideoPrediction] | None = None) -> tuple[dict[int, FusionRule], dict[int, str]]:
    """Replace every choice rule of a video's objects by ``single`` over the member it chooses; returns the new rules
    and object id -> chosen member (objects under choice rules only). Objects sharing a rule are chosen together
    (per video: one member for all of them)."""
    resolved = dict(rules)
    chosen: dict[int, str] = {}
    groups: dict[FusionRule, list[int]] = {}
    for object_id, rule in rules.items():
        if rule.method in CHOICE_METHODS:
            groups.setdefault(rule, []).append(object_id)
    for rule, object_ids in groups.items():
        if len(rule.configs) < 1:
            raise MassegError(f"{rule.method} has no members", None, "list the members' config ids in the rule")
        picks = choose(score_members(predictions_root, video, rule.configs, sorted(object_ids), cache), rule.method)
        for object_id, member in picks.items():
            resolved[object_id] = FusionRule("single", (member,))
            chosen[object_id] = member
    return resolved, chosen


def count_choices(choices: dict[str, dict[int, str]], label: Callable[[str], str] | None = None) -> dict[str, dict[str, int]]:
    """How often each member was chosen: ``{"videos": {member: n}, "objects": {member: n}}`` (a video whose objects
    took different members counts under ``mixed``); ``label`` names a member otherwise than by its config id."""
    videos: dict[str, int] = {}
    objects: dict[str, int] = {}
    if label is not None:
        choices = {video: {i: label(member) for i, member in picks.items()} for video, picks in choices.items()}
    for picks in choices.values():
        members = set(picks.values())
        if members:
            key = next(iter(members)) if len(members) == 1 else "mixed"
            videos[key] = videos.get(key, 0) + 1
        for member in picks.values():
            objects[member] = objects.get(member, 0) + 1
    return {"videos": dict(sorted(videos.items())), "objects": dict(sorted(objects.items()))}


def format_choice_counts(counts: dict[str, dict[str, int]]) -> str:
    """``videos: s20_b-10 12, s20_b-10@base 8; objects: ...`` from :func:`count_choices`'s mapping."""
    return "; ".join(f"{unit}: " + ", ".join(f"{member} {count}" for member, count in per_member.items())
                     for unit, per_member in counts.items() if per_member)
