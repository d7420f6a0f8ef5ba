"""Fusion plans (YAML) and the rule each object gets from them (see :mod:`masseg_search.ensemble`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from masseg_search.data import layout
from masseg_search.data.scene_types import load_scene_types
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store
from masseg_search.store.best_configs import BestConfigs

# level ("video" / "object") and criterion of the label-free choice rules (masseg_search.ensemble.agreement)
CHOICE_METHODS = {
    "per-video-consensus": ("video", "consensus"),
    "per-video-confidence": ("video", "confidence"),
    "per-object-consensus": ("object", "consensus"),
    "per-object-confidence": ("object", "confidence"),
}
METHODS = ("select", "single", "mean", "logit-mean", "vote", "confidence", *CHOICE_METHODS)
UNWEIGHTED_METHODS = ("select", "single", "confidence", *CHOICE_METHODS)
PER_TYPE_FOLDER = "per_type"  # infer --per-type: each object under its own scene type's configuration
POLICY_FOLDER = "policy"  # infer --policy: each object under the configuration a learned policy gives it
PER_OBJECT_FOLDERS = (PER_TYPE_FOLDER, POLICY_FOLDER)  # store folders whose objects ran under different configs


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
    """A resolved rule for one object: a fusion method (``single``/``mean``/``logit-mean``/``vote``/``confidence``)
    or a choice method (``per-video-consensus``, ...: resolved per video by :mod:`masseg_search.ensemble.agreement`)
    over named configs."""

    method: str
    configs: tuple[str, ...]
    weights: tuple[float, ...] | None = None


@dataclass
class FusionPlan:
    """Which rule each object gets: per object, else per video, else per scene type, else ``default``."""

    default: RuleSpec
    per_type: dict[str, RuleSpec] = field(default_factory=dict)
    per_object: dict[str, RuleSpec] = field(default_factory=dict)
    per_video: dict[str, RuleSpec] = field(default_factory=dict)
    best_configs: str | None = None
    scene_types: str | None = None
    selection: dict[str, Any] | None = None

    def needed_configs(self, best: BestConfigs | None = None) -> set[str] | None:
        """Every config id some rule of this plan can read (``select``: each scene type's and the default one of
        ``best``); None when a rule reads every stored config (an empty ``configs`` list)."""
        needed: set[str] = set()
        for rule in self.rules():
            if rule.method == "select":
                if best is None:
                    raise MassegError("the plan uses 'select' but no best_configs.yaml is given", None,
                                      "pass --best-configs or set best_configs in the plan")
                needed |= {store.config_id(knobs) for knobs in [best.default, *best.types.values()]}
            elif not rule.configs:
                return None
            else:
                needed |= set(rule.configs)
        return needed

    def rules(self) -> list[RuleSpec]:
        """Every rule of the plan."""
        return [self.default, *self.per_type.values(), *self.per_video.values(), *self.per_object.values()]

    def uses_select(self) -> bool:
        """True when some rule needs best_configs.yaml and scene types."""
        return any(rule.method == "select" for rule in self.rules())

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (see the module docstring)."""
        data = self.default.to_dict()
        data.update({"best_configs": self.best_configs, "scene_types": self.scene_types,
                     "per_type": {k: v.to_dict() for k, v in self.per_type.items()},
                     "per_object": {k: v.to_dict() for k, v in self.per_object.items()}})
        if self.per_video:
            data["per_video"] = {k: v.to_dict() for k, v in self.per_video.items()}
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
    if method in UNWEIGHTED_METHODS and weights is not None:
        raise MassegError(f"{where}: weights make no sense for {method}", source, "remove weights")
    if method == "single" and len(configs) != 1:
        raise MassegError(f"{where}: single needs exactly one config", source, "write configs: [<one config id>]")
    return RuleSpec(method, tuple(str(c) for c in configs), weights)


def plan_from_dict(data: Any, source: str = "<plan>") -> FusionPlan:
    """Validate a plan mapping (the YAML form)."""
    if not isinstance(data, dict):
        raise MassegError("a plan must be a YAML mapping", source, "start from the example in masseg_search/ensemble/__init__.py")
    known = {"method", "configs", "weights", "best_configs", "scene_types", "per_type", "per_object", "per_video", "selection"}
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
    per_video = {str(k): _rule_spec(v, f"per_video.{k}", source) for k, v in (data.get("per_video") or {}).items()}
    return FusionPlan(default, per_type, per_object, per_video, data.get("best_configs"), data.get("scene_types"),
                      data.get("selection"))


def load_plan(path: str | Path) -> FusionPlan:
    """Read a plan YAML file."""
    path = Path(path)
    if not path.is_file():
        raise MassegError("plan file not found", path, "write one (see masseg_search/ensemble/__init__.py) or make it with --select-on val")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MassegError(f"not valid YAML ({exc})", path, "fix the YAML syntax") from None
    return plan_from_dict(data, str(path))


def save_plan(path: str | Path, plan: FusionPlan) -> None:
    """Write a plan YAML file atomically."""
    layout.atomic_write_bytes(Path(path), yaml.safe_dump(plan.to_dict(), sort_keys=False).encode())


# ------------------------------------------------------------------------------------------- rule resolution


def per_object_folders(predictions_root: str | Path) -> list[str]:
    """The ``per_type`` / ``policy`` folders (any view, e.g. ``per_type@flip``) under ``predictions_root``, sorted."""
    root = Path(predictions_root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.partition("@")[0] in PER_OBJECT_FOLDERS)


def per_type_views(predictions_root: str | Path) -> set[str | None]:
    """The views that have a ``per_type`` or ``policy`` folder under ``predictions_root`` (None = the base view)."""
    return {store.config_view(name) for name in per_object_folders(predictions_root)}


def load_scene_type_lookup(path: str | Path, best: BestConfigs | None = None) -> dict[tuple[str, int], str]:
    """(video, object_id) -> scene type from a scene-types CSV (columns video, object_id, scene_type); with a
    learned policy as ``best``, the policy's leaf instead (from the CSV's feature columns), which is what its
    ``types`` and a plan's ``per_type`` rules then name."""
    table = load_scene_types(path)
    keys = best.object_keys(table, path) if best is not None else [str(t) for t in table["scene_type"]]
    return {(str(v), int(o)): str(k) for v, o, k in zip(table["video"], table["object_id"], keys)}


class RuleResolver:
    """Turns a plan into a concrete :class:`FusionRule` per object of a video."""

    def __init__(self, plan: FusionPlan, available_configs: list[str],
                 scene_types: dict[tuple[str, int], str] | None = None, best: BestConfigs | None = None,
                 per_type_stored: bool = False, per_type_views: Iterable[str | None] = (),
                 predictions_root: str | Path | None = None):
        """``per_type_stored``: ``per_type/`` exists; ``per_type_views``: the views whose ``per_type@<view>/`` or
        ``policy@<view>/`` exists (None = the base view). A config missing from ``available_configs`` is then looked
        up there when loaded (and refused there if that folder holds the object under another config).
        ``predictions_root``: where ``available_configs`` were listed, named by the errors."""
        self.plan, self.available, self.scene_types, self.best = plan, list(available_configs), scene_types, best
        self.predictions_root = Path(predictions_root) if predictions_root is not None else None
        self.per_type_views = set(per_type_views) | ({None} if per_type_stored else set())
        self.per_type_stored = None in self.per_type_views
        if not self.available and not (self.per_type_views and (plan.uses_select() or plan.per_type or plan.per_object
                                                                or plan.per_video)):
            raise MassegError("no stored configurations found (no <config_id>/ folder such as s20_b-10/)",
                              self.predictions_root, "point --predictions at results/predictions/<split> written by infer")
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
        """Per object, else per video, else per scene type, else the default."""
        key = f"{video}/{object_id}"
        if key in self.plan.per_object:
            return self.plan.per_object[key]
        if video in self.plan.per_video:
            return self.plan.per_video[video]
        if self.plan.per_type:
            scene_type = self.scene_type(video, object_id)
            if scene_type in self.plan.per_type:
                return self.plan.per_type[scene_type]
        return self.plan.default

    def rule_for(self, video: str, object_id: int) -> FusionRule:
        """The resolved rule of one object."""
        spec = self.spec_for(video, object_id)
        if spec.method == "select":
            knobs = self.best.for_type(self.scene_type(video, object_id))  # type: ignore[union-attr]
            configs: tuple[str, ...] = (store.config_id(knobs),)
            method = "single"
        else:
            configs, method = spec.configs or tuple(self.available), spec.method
        # a config only per_type[@view]/ holds is checked when loaded
        missing = [c for c in configs if c not in self.available and store.config_view(c) not in self.per_type_views]
        if missing:
            raise MassegError(f"configs {missing} (object {video}/{object_id}) are not in the predictions",
                              self.predictions_root,
                              f"run `masseg-search infer` with them, or use the stored ones: {', '.join(self.available)}")
        return FusionRule(method, tuple(configs), spec.weights)

    def rules_for_video(self, video: str, object_ids: list[int]) -> dict[int, FusionRule]:
        """Every object's rule."""
        return {int(i): self.rule_for(video, int(i)) for i in object_ids}


