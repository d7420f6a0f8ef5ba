"""Fusion of stored per-configuration logits into final id masks, written as an ``Annotations``-style tree.

Per object, a *rule* fuses that object's low-res logits over one or more stored configurations into one score
map (positive = foreground) at low resolution. Then, per frame, the objects are merged with SAM2's non-overlap rule
(highest score wins where it is above 0) after ONE bilinear upsampling to the video size (half-pixel centres, as
``torch`` ``align_corners=False``); frames where an object is given (``first_frames`` in the store) take the given
mask from the dataset's annotation. Methods:

- ``single``: one configuration's logits, unchanged.
- ``select``: ``single`` with the configuration of the object's scene type in ``best_configs.yaml``, read from
  that configuration's folder or, failing that, from ``per_type/`` (``infer --per-type``) when it holds the object
  under that configuration.
- ``mean``: weighted mean of the probabilities ``sigmoid(logit)``; score = ``logit(mean)`` (p clipped to
  [1e-6, 1 - 1e-6]; computed as ``2 artanh(mean(tanh(logit / 2)))``), so ``mean`` over one configuration is that
  configuration.
- ``logit-mean``: weighted mean of the logits.
- ``vote``: weighted share of the configurations whose logit is > 0, minus 0.5: foreground on a strict
  (weighted) majority; between objects the larger share wins.

Plan file (YAML; ``masseg-search ensemble --plan``; ``--select-on val`` writes one)::

    method: mean                 # select | single | mean | logit-mean | vote (objects without a narrower rule)
    configs: [s20_b-10, s7.5_b-4, s10_b-5]   # config ids; empty or absent = every config in the store
    weights: [0.5, 0.3, 0.2]     # optional, one per config (mean, logit-mean, vote)
    best_configs: results/mss/val/best_configs.yaml   # needed by select (relative paths: from the working dir)
    scene_types: null            # CSV video,object_id,scene_type; better passed per split on the command line
    per_type:                    # optional: a rule per scene type
      small: {method: vote, configs: [s20_b-10, s7.5_b-4, s10_b-5]}
    per_object:                  # optional: a rule per object, keyed "<video>/<object id>" (wins over per_type)
      "0a1b2c3d/2": {method: single, configs: [s7.5_b-4]}
    selection: {...}             # written by --select-on: every candidate's J&F and the choice (informational)

Outputs: ``<out>/<video>/<frame>.png`` (each video written to a hidden temp folder and renamed when complete, so a
rerun resumes at the first unfinished video), ``<out>.plan.yaml`` (the plan and inputs applied; a rerun with a
different plan is refused), and ``<out>.zip`` once the submission check passes. No torch here.
"""
from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from masseg_search import predictions as store
from masseg_search.best_configs import BestConfigs, load_best_configs
from masseg_search.data import layout
from masseg_search.errors import MassegError

METHODS = ("select", "single", "mean", "logit-mean", "vote")
PROBABILITY_EPS = 1e-6
PARTIAL_PREFIX = ".partial-"
PER_TYPE_FOLDER = "per_type"  # infer --per-type: each object under its own scene type's configuration


# ----------------------------------------------------------------------------------------------- plan file


@dataclass(frozen=True)
class RuleSpec:
    """A rule as written in a plan: ``select`` or a method over configs (empty = every stored config)."""

    method: str
    configs: tuple[str, ...] = ()
    weights: tuple[float, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The YAML form."""
        data: dict[str, Any] = {"method": self.method, "configs": list(self.configs)}
        if self.weights is not None:
            data["weights"] = [float(w) for w in self.weights]
        return data


@dataclass(frozen=True)
class FusionRule:
    """A resolved rule for one object: ``single``/``mean``/``logit-mean``/``vote`` over named configs."""

    method: str
    configs: tuple[str, ...]
    weights: tuple[float, ...] | None = None


@dataclass
class FusionPlan:
    """Which rule each object gets: per object, else per scene type, else ``default``."""

    default: RuleSpec
    per_type: dict[str, RuleSpec] = field(default_factory=dict)
    per_object: dict[str, RuleSpec] = field(default_factory=dict)
    best_configs: str | None = None
    scene_types: str | None = None
    selection: dict[str, Any] | None = None

    def uses_select(self) -> bool:
        """True when some rule needs best_configs.yaml and scene types."""
        rules = [self.default, *self.per_type.values(), *self.per_object.values()]
        return any(rule.method == "select" for rule in rules)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (see the module docstring)."""
        data = self.default.to_dict()
        data.update({"best_configs": self.best_configs, "scene_types": self.scene_types,
                     "per_type": {k: v.to_dict() for k, v in self.per_type.items()},
                     "per_object": {k: v.to_dict() for k, v in self.per_object.items()}})
        if self.selection is not None:
            data["selection"] = self.selection
        return data


def _rule_spec(entry: Any, where: str, source: str) -> RuleSpec:
    if not isinstance(entry, dict):
        raise MassegError(f"{where} must be a mapping with 'method'", source, "write e.g. {method: mean, configs: [s20_b-10]}")
    unknown = set(entry) - {"method", "configs", "weights"}
    if unknown:
        raise MassegError(f"{where} has unknown keys {sorted(unknown)}", source, "use only method, configs, weights")
    method = entry.get("method")
    if method not in METHODS:
        raise MassegError(f"{where}.method is {method!r}", source, f"use one of {', '.join(METHODS)}")
    configs = entry.get("configs") or []
    if isinstance(configs, str) or not isinstance(configs, list):
        raise MassegError(f"{where}.configs must be a list of config ids", source, "write e.g. configs: [s20_b-10, s7.5_b-4]")
    for config in configs:
        store.parse_config_id(str(config))
    weights = entry.get("weights")
    if weights is not None:
        try:
            weights = tuple(float(w) for w in weights)
        except (TypeError, ValueError):
            raise MassegError(f"{where}.weights must be numbers", source, "write e.g. weights: [0.5, 0.5]") from None
        if not configs or len(weights) != len(configs):
            raise MassegError(f"{where}.weights needs one weight per listed config", source, "list configs and give as many weights")
        if min(weights) < 0 or sum(weights) <= 0:
            raise MassegError(f"{where}.weights must be >= 0 with a positive sum", source, "fix the weights")
    if method in ("select", "single") and weights is not None:
        raise MassegError(f"{where}: weights make no sense for {method}", source, "remove weights")
    if method == "single" and len(configs) != 1:
        raise MassegError(f"{where}: single needs exactly one config", source, "write configs: [<one config id>]")
    return RuleSpec(method, tuple(str(c) for c in configs), weights)


def plan_from_dict(data: Any, source: str = "<plan>") -> FusionPlan:
    """Validate a plan mapping (the YAML form)."""
    if not isinstance(data, dict):
        raise MassegError("a plan must be a YAML mapping", source, "start from the example in masseg_search/ensemble.py")
    known = {"method", "configs", "weights", "best_configs", "scene_types", "per_type", "per_object", "selection"}
    unknown = set(data) - known
    if unknown:
        raise MassegError(f"unknown plan keys {sorted(unknown)}", source, f"use only {', '.join(sorted(known))}")
    default = _rule_spec({k: data[k] for k in ("method", "configs", "weights") if k in data}, "plan", source)
    per_type = {str(k): _rule_spec(v, f"per_type.{k}", source) for k, v in (data.get("per_type") or {}).items()}
    per_object = {}
    for key, value in (data.get("per_object") or {}).items():
        video, _, object_id = str(key).rpartition("/")
        if not video or not object_id.isdigit():
            raise MassegError(f"per_object key {key!r} is not '<video>/<object id>'", source, 'write e.g. "0a1b2c3d/2"')
        per_object[f"{video}/{int(object_id)}"] = _rule_spec(value, f"per_object.{key}", source)
    return FusionPlan(default, per_type, per_object, data.get("best_configs"), data.get("scene_types"), data.get("selection"))


def load_plan(path: str | Path) -> FusionPlan:
    """Read a plan YAML file."""
    path = Path(path)
    if not path.is_file():
        raise MassegError("plan file not found", path, "write one (see masseg_search/ensemble.py) or make it with --select-on val")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MassegError(f"not valid YAML ({exc})", path, "fix the YAML syntax") from None
    return plan_from_dict(data, str(path))


def save_plan(path: str | Path, plan: FusionPlan) -> None:
    """Write a plan YAML file atomically."""
    layout.atomic_write_bytes(Path(path), yaml.safe_dump(plan.to_dict(), sort_keys=False).encode())


# ------------------------------------------------------------------------------------------- rule resolution


def load_scene_type_lookup(path: str | Path) -> dict[tuple[str, int], str]:
    """(video, object_id) -> scene type from a scene-types CSV (columns video, object_id, scene_type)."""
    from masseg_search.data.scene_types import load_scene_types

    table = load_scene_types(path)
    return {(str(v), int(o)): str(t) for v, o, t in zip(table["video"], table["object_id"], table["scene_type"])}


class RuleResolver:
    """Turns a plan into a concrete :class:`FusionRule` per object of a video."""

    def __init__(self, plan: FusionPlan, available_configs: list[str],
                 scene_types: dict[tuple[str, int], str] | None = None, best: BestConfigs | None = None,
                 per_type_stored: bool = False):
        self.plan, self.available, self.scene_types, self.best = plan, list(available_configs), scene_types, best
        self.per_type_stored = per_type_stored
        if not self.available and not (per_type_stored and plan.uses_select()):
            raise MassegError("no stored configurations found", None, "point --predictions at results/predictions/<split> written by infer")
        if plan.uses_select() and best is None:
            raise MassegError("the plan uses 'select' but no best_configs.yaml is given", None, "pass --best-configs or set best_configs in the plan")
        if (plan.uses_select() or plan.per_type) and scene_types is None:
            raise MassegError("the plan needs scene types (select or per_type)", None, "pass --scene-types CSV for this split")

    def scene_type(self, video: str, object_id: int) -> str:
        """The object's scene type (a clear error when the CSV does not list it)."""
        try:
            return self.scene_types[(video, object_id)]  # type: ignore[index]
        except (KeyError, TypeError):
            raise MassegError(f"object {video}/{object_id} has no scene type", self.plan.scene_types,
                              "make the scene types CSV for the same split as the predictions") from None

    def spec_for(self, video: str, object_id: int) -> RuleSpec:
        """Per object, else per scene type, else the default."""
        key = f"{video}/{object_id}"
        if key in self.plan.per_object:
            return self.plan.per_object[key]
        if self.plan.per_type:
            scene_type = self.scene_type(video, object_id)
            if scene_type in self.plan.per_type:
                return self.plan.per_type[scene_type]
        return self.plan.default

    def rule_for(self, video: str, object_id: int) -> FusionRule:
        """The resolved rule of one object."""
        spec = self.spec_for(video, object_id)
        if spec.method == "select":
            scale, bias = self.best.for_type(self.scene_type(video, object_id))  # type: ignore[union-attr]
            configs: tuple[str, ...] = (store.config_id(scale, bias),)
            method = "single"
        else:
            configs, method = spec.configs or tuple(self.available), spec.method
        missing = [c for c in configs if c not in self.available]
        if missing and not (spec.method == "select" and self.per_type_stored):  # per_type/ is checked when loaded
            raise MassegError(f"configs {missing} (object {video}/{object_id}) are not in the predictions", None,
                              f"run `masseg-search infer` with them, or use the stored ones: {', '.join(self.available)}")
        return FusionRule(method, tuple(configs), spec.weights)

    def rules_for_video(self, video: str, object_ids: list[int]) -> dict[int, FusionRule]:
        """Every object's rule."""
        return {int(i): self.rule_for(video, int(i)) for i in object_ids}


# ------------------------------------------------------------------------------------------------ fusion math


def fuse_logits(logits: list[np.ndarray], method: str, weights: tuple[float, ...] | None = None) -> np.ndarray:
    """Fuse one object's logits over configurations (each (T, h, w)) into a float32 score (positive = foreground)."""
    if not logits:
        raise ValueError("fuse_logits needs at least one array")
    if method == "single" or len(logits) == 1 and method in ("mean", "logit-mean"):
        return np.asarray(logits[0], dtype=np.float32)
    if method not in ("mean", "logit-mean", "vote"):
        raise ValueError(f"unknown fusion method {method!r}")
    w = np.ones(len(logits), np.float32) if weights is None else np.asarray(weights, np.float32)
    w = w / w.sum()
    total = np.zeros(np.shape(logits[0]), np.float32)
    term = np.empty_like(total)  # in place: a few passes per configuration
    for weight, values in zip(w, logits):
        if method == "vote":
            np.multiply(_positive(np.asarray(values)), weight, out=term)
        else:
            np.copyto(term, values, casting="unsafe")  # float16 -> float32, exact
            if method == "logit-mean":
                term *= weight
            else:  # sigmoid(x) = (1 + tanh(x / 2)) / 2: total = 2 * mean(p) - 1
                term *= np.float32(0.5)
                np.tanh(term, out=term)
                term *= weight
        total += term
    if method == "mean":  # logit(p) = 2 * artanh(2p - 1), with p clipped to [eps, 1 - eps]
        np.clip(total, 2 * PROBABILITY_EPS - 1.0, 1.0 - 2 * PROBABILITY_EPS, out=total)
        np.arctanh(total, out=total)
        total *= np.float32(2.0)
        return total
    if method == "vote":
        total -= np.float32(0.5)
    return total


def _positive(values: np.ndarray) -> np.ndarray:
    """``values > 0``; float16 compared through its bits (sign clear, not +0), much faster than as floats."""
    if values.dtype == np.float16:
        return values.view(np.int16) > 0
    return values > 0


class FusedVideo:
    """One video's objects with the stored logits their rules fuse; fused frame by frame at low resolution.

    The fused score can be positive only where some configuration is (a mean, logit mean or majority of
    non-positive values is not positive), and an upsampled pixel only where one of its taps is. So each frame's
    fusion runs only on the box of every configuration's positive pixels grown by one low-res pixel, which holds
    every tap :class:`FrameRenderer` reads for that object; nothing else is computed (nor kept in memory).
    """

    def __init__(self, video: str, frame_names: list[str], object_ids: list[int], first_frames: dict[int, int],
                 rules: dict[int, FusionRule], sources: dict[int, list[np.ndarray]]):
        self.video, self.frame_names, self.object_ids = video, frame_names, object_ids
        self.first_frames, self.rules, self.sources = first_frames, rules, sources
        self.extents: dict[int, np.ndarray] = {}  # id -> (T, 4) low-res first/last positive row and col, -1 if none
        self._scratch: dict[int, np.ndarray] = {}
        for object_id in object_ids:
            arrays = sources[object_id]
            extents = positive_extents(*_positive_rows_cols(arrays))
            extents[: first_frames.get(object_id, 0)] = -1  # not there before it is given
            self.extents[object_id] = extents
            if not self._single(object_id):
                self._scratch[object_id] = np.empty(arrays[0].shape[1:], np.float32)

    def _single(self, object_id: int) -> bool:
        rule = self.rules[object_id]
        return rule.method == "single" or len(self.sources[object_id]) == 1 and rule.method in ("mean", "logit-mean")

    def frame(self, t: int) -> list[tuple[int, np.ndarray]]:
        """``(object_id, score (h, w))`` of the objects that can be present at frame ``t``, in merge order.

        The score is exact on the positive extent grown by one pixel (all the renderer reads); elsewhere undefined.
        """
        objects = []
        for object_id in self.object_ids:
            row_first, row_last, col_first, col_last = (int(v) for v in self.extents[object_id][t])
            if row_first < 0:
                continue
            arrays = self.sources[object_id]
            if self._single(object_id):
                score = arrays[0][t]  # float16 as stored: the renderer widens it exactly
            else:
                height, width = arrays[0].shape[1:]
                r0, r1 = max(row_first - 1, 0), min(row_last + 2, height)
                c0, c1 = max(col_first - 1, 0), min(col_last + 2, width)
                rule = self.rules[object_id]
                score = self._scratch[object_id]
                score[r0:r1, c0:c1] = fuse_logits([values[t, r0:r1, c0:c1] for values in arrays], rule.method, rule.weights)
            objects.append((object_id, score))
        return objects


def _positive_rows_cols(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(T, h) and (T, w) flags of rows / columns where some of the (T, h, w) arrays is > 0, from maxima."""
    if all(values.dtype == np.float16 for values in arrays):
        keys = [values.view(np.int16) for values in arrays]  # float16 > 0 <=> its int16 bits > 0; integer max is faster
    else:
        keys = [np.asarray(values, np.float32) for values in arrays]
    highest = keys[0]
    if len(keys) > 1:
        highest = highest.copy()
        for key in keys[1:]:
            np.maximum(highest, key, out=highest)
    return highest.max(axis=2) > 0, highest.max(axis=1) > 0


def positive_extents(positive_rows: np.ndarray, positive_cols: np.ndarray) -> np.ndarray:
    """(T, 4) first and last positive row and column per frame from (T, h) / (T, w) flags; -1 where none."""
    present = positive_rows.any(axis=1)
    height, width = positive_rows.shape[1], positive_cols.shape[1]
    extents = np.stack([np.argmax(positive_rows, axis=1), height - 1 - np.argmax(positive_rows[:, ::-1], axis=1),
                        np.argmax(positive_cols, axis=1), width - 1 - np.argmax(positive_cols[:, ::-1], axis=1)], axis=1)
    extents[~present] = -1
    return extents


def _load_config(predictions_root: Path, video: str, config: str, object_ids: list[int],
                 cache: dict[str, store.VideoPrediction] | None) -> store.VideoPrediction:
    """A video's prediction under ``config``: its own folder, else ``per_type/`` (infer --per-type) when that
    folder stored these objects under ``config``."""
    folder = predictions_root / config / video
    per_type = predictions_root / PER_TYPE_FOLDER / video
    use_per_type = not (folder / store.META_FILE).is_file() and (per_type / store.META_FILE).is_file()
    key = PER_TYPE_FOLDER if use_per_type else config
    if cache is not None and key not in cache:
        cache[key] = store.load_video_prediction(per_type if use_per_type else folder, mmap=True)
    if cache is not None:
        prediction = cache[key]
    else:
        prediction = store.load_video_prediction(per_type if use_per_type else folder, object_ids, mmap=True)
    if use_per_type:
        stored = {i: store.config_id(*pair) for i, pair in (prediction.object_configs or {}).items()}
        wrong = [i for i in object_ids if stored.get(i) != config]
        if wrong:
            raise MassegError(f"objects {wrong} of {video} are stored under {sorted({stored.get(i) for i in wrong}, key=str)}, "
                              f"not {config}", per_type, "select with the best_configs.yaml that infer --per-type used, or run "
                              f"infer --configs with {config}")
    return prediction


def fuse_video(predictions_root: Path, video: str, rules: dict[int, FusionRule],
               cache: dict[str, store.VideoPrediction] | None = None) -> FusedVideo:
    """Load what the rules need from the store (fusion then runs per frame, see :class:`FusedVideo`).

    ``cache`` (config id -> a prediction of this video holding every object) avoids reloading when one video is
    fused under several rule sets, as ``--select-on`` does.
    """
    needed: dict[str, list[int]] = {}
    for object_id, rule in rules.items():
        for config in rule.configs:
            needed.setdefault(config, []).append(object_id)
    loaded = {config: _load_config(Path(predictions_root), video, config, ids, cache) for config, ids in needed.items()}
    reference = next(iter(loaded.values()))
    for config, prediction in loaded.items():
        if prediction.frame_names != reference.frame_names:
            raise MassegError(f"config {config} has other frames than {next(iter(loaded))}", Path(predictions_root) / config / video,
                              "rerun infer for this video so every config covers the same frames")
    sources = {}
    for object_id, rule in rules.items():
        for config in rule.configs:
            if object_id not in loaded[config].logits:
                raise MassegError(f"object {object_id} is not stored under {config}", Path(predictions_root) / config / video,
                                  "run infer with this config for every object, or fuse only the configs that hold it")
        arrays = [loaded[config].logits[object_id] for config in rule.configs]
        if len({a.shape for a in arrays}) != 1:
            raise MassegError(f"object {object_id} has logits of different shapes across {rule.configs}",
                              Path(predictions_root), "store every config at the same low resolution")
        sources[object_id] = arrays
    object_ids = [i for i in reference.object_ids if i in rules] + sorted(set(rules) - set(reference.object_ids))
    return FusedVideo(video, reference.frame_names, object_ids, {i: reference.first_frames.get(i, 0) for i in rules}, rules, sources)


# ---------------------------------------------------------------------------- one upsampling + non-overlap merge


def _axis_table(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps along one axis, half-pixel centres, clamped at the borders: (index0, index1, weight0, weight1)."""
    position = ((np.arange(target) + 0.5) * (source / target) - 0.5).astype(np.float32)
    index0 = np.floor(position).astype(np.int64)
    fraction = (position - index0).astype(np.float32)
    low, high = index0 < 0, index0 >= source - 1
    fraction[low | high] = 0.0
    index0 = np.clip(index0, 0, source - 1)
    index1 = np.minimum(index0 + 1, source - 1)
    return index0, index1, (np.float32(1.0) - fraction).astype(np.float32), fraction


class FrameRenderer:
    """Upsamples object scores and merges them, touching only the boxes where an object can be positive.

    A bilinear sample is a convex combination of its 4 low-res taps, so it can be > 0 only if a tap is: the box of
    an object's positive low-res pixels, grown by the taps, holds all its foreground. Only boxes are upsampled; an
    object whose box meets no other box is thresholded at 0, overlapping ones are merged with SAM2's rule
    (highest score wins if > 0; ties to the earlier object). The result is the full-frame upsampling + merge of
    :func:`masseg_search.predictions.merge_objects` up to float rounding (OpenCV's resize may round differently).
    (Painting from the signs of each pixel's 4 taps and interpolating only mixed cells was tried: slower.)
    """

    def __init__(self, low_height: int, low_width: int, height: int, width: int):
        self.height, self.width = height, width
        self.rows = _axis_table(low_height, height)
        self.cols = _axis_table(low_width, width)
        self.best = np.zeros((height, width), np.float32)
        self._top = np.empty(height * width, np.float32)
        self._bottom = np.empty(height * width, np.float32)
        self._wins = np.empty(height * width, bool)

    def boxes(self, extents: np.ndarray) -> np.ndarray:
        """Video-resolution boxes (y0, y1, x0, x1) that can hold foreground, from (T, 4) low-res positive extents.

        A pixel is in the box when one of its taps is inside the extent; rows without an extent get an empty box.
        """
        extents = np.atleast_2d(extents)
        boxes = np.stack([np.searchsorted(self.rows[1], extents[:, 0], "left"), np.searchsorted(self.rows[0], extents[:, 1], "right"),
                          np.searchsorted(self.cols[1], extents[:, 2], "left"), np.searchsorted(self.cols[0], extents[:, 3], "right")], axis=1)
        boxes[extents[:, 0] < 0] = 0
        return boxes

    def box(self, positive_rows: np.ndarray, positive_cols: np.ndarray) -> tuple[int, int, int, int] | None:
        """The box of one frame from its low-res positive rows (h,) and columns (w,); None if nothing is positive."""
        y0, y1, x0, x1 = (int(v) for v in self.boxes(positive_extents(positive_rows[None], positive_cols[None]))[0])
        return (y0, y1, x0, x1) if y1 > y0 and x1 > x0 else None

    def upsample_box(self, score: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The bilinear upsampling of a (h, w) score restricted to ``box``: horizontal taps, then vertical.

        Returns a view of an internal buffer, valid until the next call. (Gathers run along rows: the horizontal
        pass works on the transposed band.)
        """
        y0, y1, x0, x1 = box
        r0, r1, rw0, rw1 = (t[y0:y1] for t in self.rows)
        c0, c1, cw0, cw1 = (t[x0:x1] for t in self.cols)
        low_top, low_bottom = int(r0[0]), int(r1[-1]) + 1
        low_left, low_right = int(c0[0]), int(c1[-1]) + 1
        band = np.ascontiguousarray(score[low_top:low_bottom, low_left:low_right].T, dtype=np.float32)
        horizontal = band[c0 - low_left] * cw0[:, None]
        horizontal += band[c1 - low_left] * cw1[:, None]
        horizontal = np.ascontiguousarray(horizontal.T)
        shape = (y1 - y0, x1 - x0)
        top = self._top[: shape[0] * shape[1]].reshape(shape)
        bottom = self._bottom[: shape[0] * shape[1]].reshape(shape)
        np.take(horizontal, r0 - low_top, axis=0, out=top, mode="clip")
        np.take(horizontal, r1 - low_top, axis=0, out=bottom, mode="clip")
        np.multiply(top, rw0[:, None], out=top)
        np.multiply(bottom, rw1[:, None], out=bottom)
        return np.add(top, bottom, out=top)

    def render(self, objects: list[tuple[int, np.ndarray, tuple[int, int, int, int] | None]]) -> np.ndarray:
        """Id mask from ``(object_id, score (h, w), box)`` in merge order (box from :meth:`boxes`; None/empty = absent).

        Only the score's taps of the box are read.
        """
        mask = np.zeros((self.height, self.width), np.uint8)
        boxes = [(object_id, score, box) for object_id, score, box in objects
                 if box is not None and box[1] > box[0] and box[3] > box[2]]
        shared = [any(_overlap(box, other[2]) for other in boxes if other is not item) for item in boxes for box in [item[2]]]
        for (_, _, (y0, y1, x0, x1)), overlapping in zip(boxes, shared):
            if overlapping:
                self.best[y0:y1, x0:x1] = 0.0
        for (object_id, score, box), overlapping in zip(boxes, shared):
            y0, y1, x0, x1 = box
            region = mask[y0:y1, x0:x1]
            upsampled = self.upsample_box(score, box)
            wins = self._wins[: upsampled.size].reshape(upsampled.shape)
            if overlapping:
                best = self.best[y0:y1, x0:x1]
                np.greater(upsampled, best, out=wins)  # strict: a tie keeps the earlier object, as argmax does
                np.maximum(best, upsampled, out=best)
                region[...] = np.where(wins, np.uint8(object_id), region)
            else:  # no other object can claim these pixels (still 0): the rule reduces to > 0
                np.greater(upsampled, 0.0, out=wins)
                np.multiply(wins.view(np.uint8), np.uint8(object_id), out=region)
        return mask


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two (y0, y1, x0, x1) boxes share a pixel."""
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


def video_masks(fused: FusedVideo, video: layout.Video, height: int, width: int,
                exact_given: set[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """(frame name, id mask) for every frame; frames where objects are given take the dataset's annotation.

    ``exact_given``, when passed, collects the names of frames whose mask is exactly the given annotation PNG (a
    writer may copy that file instead of encoding the mask).
    """
    object_ids = fused.object_ids
    if not object_ids:
        for name in fused.frame_names:
            yield name, np.zeros((height, width), np.uint8)
        return
    some = fused.sources[object_ids[0]][0]
    renderer = FrameRenderer(some.shape[1], some.shape[2], height, width)
    boxes = {i: [tuple(int(v) for v in box) for box in renderer.boxes(fused.extents[i])] for i in object_ids}
    given_at: dict[int, list[int]] = {}
    for object_id in object_ids:
        given_at.setdefault(fused.first_frames.get(object_id, 0), []).append(object_id)
    for t, name in enumerate(fused.frame_names):
        starting = given_at.get(t, [])
        if len(starting) == len(object_ids):
            mask = None
        else:
            mask = renderer.render([(i, score, boxes[i][t]) for i, score in fused.frame(t)])
        if starting:
            given = layout.read_mask(video.annotation_path(name))
            if given.shape != (height, width):
                raise MassegError(f"given mask is {given.shape[1]}x{given.shape[0]}, frames are {width}x{height}",
                                  video.annotation_path(name), "use the dataset the predictions were made on")
            if mask is None and given.size and set(range(1, int(given.max()) + 1)) <= set(starting):
                mask = given  # every value is 0 or a starting object (MOSE's first frame): the given mask as it is
                if exact_given is not None:
                    exact_given.add(name)
                yield name, mask
                continue
            keep = np.isin(given, np.asarray(starting, np.uint8))
            if mask is None:
                mask = np.where(keep, given, 0).astype(np.uint8)
            else:
                mask[np.isin(mask, np.asarray(starting, np.uint8))] = 0
                mask[keep] = given[keep]
        yield name, mask


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
    for name, mask in video_masks(fused, video, height, width, exact_given):
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


def _applied_record(plan: FusionPlan, predictions_root: Path, data_root: Path, scene_types: Path | None, best: Path | None,
                    videos: list[str]) -> dict:
    return {"plan": plan.to_dict(), "predictions": str(predictions_root), "data": str(data_root),
            "scene_types": str(scene_types) if scene_types else None, "best_configs": str(best) if best else None,
            "videos": len(videos), "first_video": videos[0] if videos else None, "last_video": videos[-1] if videos else None}


def run_ensemble(predictions_root: str | Path, plan: FusionPlan | str | Path, data_root: str | Path, out_dir: str | Path,
                 split_list: str | Path | None = None, workers: int = 1, scene_types: str | Path | None = None,
                 best_configs: str | Path | None = None, videos: list[str] | None = None, write_zip: bool = True,
                 progress: bool = True) -> EnsembleResult:
    """Fuse every video of the split by the plan, write the PNG tree, check it, and zip it when the check passes.

    ``scene_types`` / ``best_configs`` override the plan's. Resumes: finished videos are kept.
    """
    from tqdm import tqdm

    from masseg_search.submission import check_submission, write_submission_zip

    started = time.perf_counter()
    predictions_root, data_root, out_dir = Path(predictions_root), Path(data_root), Path(out_dir)
    plan = plan if isinstance(plan, FusionPlan) else load_plan(plan)
    scene_types_path = Path(scene_types) if scene_types else (Path(plan.scene_types) if plan.scene_types else None)
    best_path = Path(best_configs) if best_configs else (Path(plan.best_configs) if plan.best_configs else None)
    lookup = load_scene_type_lookup(scene_types_path) if scene_types_path else None
    best = load_best_configs(best_path) if best_path else None
    resolver = RuleResolver(plan, store.list_config_ids(predictions_root), lookup, best,
                            per_type_stored=(predictions_root / PER_TYPE_FOLDER).is_dir())
    dataset = layout.open_dataset(data_root, split_list=split_list)
    names = list(videos) if videos is not None else dataset.video_names
    jobs = []
    for name in names:
        object_ids = _stored_object_ids(predictions_root, resolver.available, name)
        jobs.append((predictions_root, dataset.video(name), resolver.rules_for_video(name, object_ids), out_dir))

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
    if workers <= 1:
        for job in jobs:
            written += _write_one_video(job)[1]
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for future in as_completed([pool.submit(_write_one_video, job) for job in jobs]):
                written += future.result()[1]
                bar.update()
    bar.close()

    problems = check_submission(out_dir, dataset.image_root, dataset.annotation_root, videos=names, workers=workers)
    zip_path = out_dir.with_name(out_dir.name + ".zip")
    if problems:
        zip_path.unlink(missing_ok=True)  # an older zip must not pass for this run's result
    if problems or not write_zip:
        zip_path = None
    else:
        write_submission_zip(out_dir, zip_path)
    return EnsembleResult(out_dir, zip_path, len(jobs), written, time.perf_counter() - started, problems)


def _stored_object_ids(predictions_root: Path, configs: list[str], video: str) -> list[int]:
    """Object ids of a video: the union over the configs that hold it complete (a clear error if none does)."""
    object_ids: list[int] = []
    for config in [*configs, PER_TYPE_FOLDER]:
        video_dir = predictions_root / config / video
        if store.is_complete(video_dir):
            meta = store.load_video_prediction(video_dir, object_ids=[])
            object_ids += [i for i in meta.object_ids if i not in object_ids]
    if not object_ids and not any((predictions_root / c / video / store.META_FILE).is_file() for c in [*configs, PER_TYPE_FOLDER]):
        raise MassegError(f"video {video} has no complete prediction under any config", predictions_root,
                          "run (or resume) `masseg-search infer` on this split")
    return sorted(object_ids)
