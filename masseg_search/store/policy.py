"""`policy.yaml`: a learned mask-scaling policy, each object's (scale, bias) from features of its first frame.

``tune-mss --policy learned`` writes it (masseg_search/mss/policy.py); infer, ensemble and the pipeline read it
wherever they read ``best_configs.yaml`` (:func:`masseg_search.store.best_configs.load_best_configs` accepts both).
The rules are the leaves of a shallow decision tree: disjoint, so exactly one holds for every object whose
features are numbers. Format::

    kind: mask-scaling-policy
    study: val
    model_config: tiny128
    checkpoint: path/to/ckpt.pt
    features: [area_fraction, num_objects, ...]   # first-frame features (masseg_search/data/scene_types.py)
    depth: 2
    default: {scale: 20.0, bias: -10.0}           # only for an object no rule holds for (a missing feature value)
    rules:
      - leaf: leaf_1
        when: ["area_fraction <= 0.004211", "color_similarity > 0.61"]   # all must hold; [] = every object
        scale: 7.5                                # the leaf's configuration: scale, bias and any memory knobs
        bias: -4.0                                # (store.knobs, as in best_configs.yaml)
        objects: 12                               # validation objects in this leaf
        jf: 0.713                                 # their mean J&F under this configuration (in-sample)
    heldout: {...}                                # the held-out comparison (policy_comparison.csv), informational

A feature reads as a number; ``nearest_distance`` is ``inf`` for an object alone in its frame and is read as
:data:`ALONE_DISTANCE` (farther than any rule needs). No sklearn here: reading and applying a policy needs YAML only.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import yaml

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.store.knobs import Knobs, as_knobs, knobs_from_entry, knobs_id

POLICY_KIND = "mask-scaling-policy"
ALONE_DISTANCE = 10.0  # nearest_distance of an object alone in its frame (inf in the scene-type table)
_CONDITION = re.compile(r"^\s*(?P<feature>[A-Za-z_][A-Za-z0-9_]*)\s*(?P<op><=|>)\s*"
                        r"(?P<value>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")
CONDITION_FIX = 'write each condition as "<feature> <= <number>" or "<feature> > <number>"'


def feature_value(name: str, value: Any) -> float:
    """A feature as the tree reads it: a float, ``inf`` (alone in the frame) as :data:`ALONE_DISTANCE`."""
    number = float(value)
    if math.isinf(number) and number > 0:
        return ALONE_DISTANCE
    return number


@dataclass(frozen=True)
class Condition:
    """``feature <= threshold`` (the tree's left branch) or ``feature > threshold`` (its right branch)."""

    feature: str
    op: str
    threshold: float

    def holds(self, value: float) -> bool:
        """True when ``value`` satisfies the condition (never for NaN)."""
        return value <= self.threshold if self.op == "<=" else value > self.threshold

    def text(self) -> str:
        """The YAML form, e.g. ``area_fraction <= 0.004211``."""
        return f"{self.feature} {self.op} {self.threshold!r}"  # shortest text that reads back the same

    @classmethod
    def parse(cls, text: Any, source: str | Path | None = None) -> "Condition":
        """Read ``"<feature> <= <number>"`` / ``"<feature> > <number>"``."""
        match = _CONDITION.match(str(text))
        if not match:
            raise MassegError(f"cannot read the rule condition {text!r}", source, CONDITION_FIX)
        return cls(match["feature"], match["op"], float(match["value"]))


@dataclass
class PolicyRule:
    """One leaf: the conditions that lead to it and the configuration its objects get."""

    leaf: str
    conditions: list[Condition]
    config: Knobs
    objects: int = 0
    jf: float | None = None

    def __post_init__(self) -> None:
        self.config = as_knobs(self.config)

    def holds(self, features: Mapping[str, float]) -> bool:
        """True when every condition holds for these (already numeric) features."""
        return all(condition.holds(features[condition.feature]) for condition in self.conditions)

    def text(self) -> str:
        """The rule in words: ``area_fraction <= 0.0042 and ... -> s7.5_b-4`` (the configuration's id)."""
        when = " and ".join(condition.text() for condition in self.conditions) or "every object"
        return f"{when} -> {knobs_id(self.config)}"


@dataclass
class Policy:
    """Rules over named first-frame features, and the configuration of objects no rule holds for."""

    features: list[str]
    rules: list[PolicyRule]
    default: Knobs
    depth: int = 0
    study: str | None = None
    model_config: str | None = None
    checkpoint: str | None = None
    heldout: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __post_init__(self) -> None:
        self.default = as_knobs(self.default)

    def leaf_for(self, features: Mapping[str, Any]) -> str:
        """The name of the first rule that holds (``default`` when none does)."""
        numeric = {name: feature_value(name, features[name]) for name in self.features}
        for rule in self.rules:
            if rule.holds(numeric):
                return rule.leaf
        return "default"

    def config_for(self, features: Mapping[str, Any]) -> Knobs:
        """The configuration this policy gives an object with these features."""
        return self.leaf_configs().get(self.leaf_for(features), self.default)

    def leaf_configs(self) -> dict[str, Knobs]:
        """Leaf name -> configuration."""
        return {rule.leaf: rule.config for rule in self.rules}

    def assign(self, table: pd.DataFrame, source: str | Path | None = None) -> list[str]:
        """Each row's leaf; ``table`` holds the features (a scene-type table); a missing column is an error."""
        missing = [name for name in self.features if name not in table.columns]
        if missing:
            raise MassegError(f"the scene-type table lacks the features {missing} that the policy reads", source,
                              "recompute it with this version: `masseg-search data scene-types ROOT --out FILE.csv`")
        records = table[self.features].to_dict("records")
        return [self.leaf_for(record) for record in records]

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (see the module docstring)."""
        return {
            "kind": POLICY_KIND, "study": self.study, "model_config": self.model_config, "checkpoint": self.checkpoint,
            "features": list(self.features), "depth": int(self.depth),
            "default": self.default.as_dict(),
            "rules": [{"leaf": rule.leaf, "when": [c.text() for c in rule.conditions], **rule.config.as_dict(),
                       "objects": int(rule.objects), "jf": None if rule.jf is None else float(rule.jf)}
                      for rule in self.rules],
            "heldout": self.heldout,
        }


def is_policy_data(data: Any) -> bool:
    """True for the mapping of a policy file (it has ``rules``), False for a best_configs.yaml."""
    return isinstance(data, dict) and (data.get("kind") == POLICY_KIND or "rules" in data)


def policy_from_dict(data: Any, source: str | Path = "<policy>") -> Policy:
    """Validate the mapping of a policy file."""
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list) or not data["rules"]:
        raise MassegError("a policy needs a non-empty 'rules' list", source, "write it with `tune-mss --policy learned`")
    features = data.get("features")
    if not isinstance(features, list) or not all(isinstance(name, str) for name in features):
        raise MassegError("a policy needs 'features', a list of feature names", source, "list the features its rules read")
    if "default" not in data:
        raise MassegError("a policy needs a 'default' configuration", source, "write default: {scale: 20.0, bias: -10.0}")
    rules, leaves = [], set()
    for index, entry in enumerate(data["rules"]):
        if not isinstance(entry, dict):
            raise MassegError(f"rules[{index}] must be a mapping", source, "write leaf, when, scale, bias")
        leaf = str(entry.get("leaf", f"leaf_{index + 1}"))
        if leaf in leaves or leaf == "default":
            raise MassegError(f"rules[{index}]: leaf name {leaf!r} is used twice or reserved", source, "name every leaf once")
        leaves.add(leaf)
        when = entry.get("when") or []
        if not isinstance(when, list):
            raise MassegError(f"rules[{index}].when must be a list of conditions", source, CONDITION_FIX)
        conditions = [Condition.parse(text, source) for text in when]
        unknown = sorted({c.feature for c in conditions} - set(features))
        if unknown:
            raise MassegError(f"rules[{index}] reads {unknown}, which are not in 'features'", source,
                              "add them to 'features' or fix the condition")
        jf = entry.get("jf")
        rules.append(PolicyRule(leaf, conditions, knobs_from_entry(entry, f"rules[{index}]", source),
                                int(entry.get("objects") or 0), None if jf is None else float(jf)))
    return Policy(list(features), rules, knobs_from_entry(data["default"], "default", source), int(data.get("depth") or 0),
                  data.get("study"), data.get("model_config"), data.get("checkpoint"), dict(data.get("heldout") or {}),
                  str(source))


def load_policy(path: str | Path) -> Policy:
    """Read a policy.yaml written by ``tune-mss --policy learned`` (or by hand)."""
    path = Path(path)
    if not path.is_file():
        raise MassegError("policy file not found", path, "run `masseg-search tune-mss --policy learned` or pass the right path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise MassegError(f"not valid YAML ({exc})", path, "fix the YAML syntax") from None
    return policy_from_dict(data, path)


def save_policy(path: str | Path, policy: Policy) -> None:
    """Write policy.yaml atomically."""
    atomic_write_bytes(Path(path), yaml.safe_dump(policy.to_dict(), sort_keys=False).encode())


def rules_text(rules: Iterable[PolicyRule]) -> list[str]:
    """One line per rule, for printing."""
    return [f"{rule.leaf}: {rule.text()} ({rule.objects} objects)" for rule in rules]
