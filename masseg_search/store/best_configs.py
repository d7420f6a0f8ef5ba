"""`best_configs.yaml`: the configuration (scale, bias and any memory knobs, see store.knobs) chosen per scene type
by tune-mss, read by infer and ensemble.

:func:`load_best_configs` also reads a learned policy (``policy.yaml``, :mod:`masseg_search.store.policy`): its
leaves then play the part of scene types (``types`` maps each leaf to its configuration) and
:meth:`BestConfigs.object_keys` sends each object to its leaf by its first-frame features instead of its scene type,
so every stage that takes a best_configs.yaml takes a policy the same way.

Format::

    study: val
    model_config: tiny256
    checkpoint: path/to/ckpt.pt
    default: {scale: 20.0, bias: -10.0}        # for scene types the study did not cover
    types:
      small: {scale: 7.5, bias: -4.0, jf: 0.71, objects: 12}
      crowded: {scale: 20.0, bias: -10.0, memory_stride: 2, admit_score: 0.0, jf: 0.64, objects: 9}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.store.knobs import KNOB_FIELDS, Knobs, knobs_from_entry
from masseg_search.store.policy import Policy, is_policy_data, policy_from_dict

SAM2_DEFAULT = (20.0, -10.0)
MASSEG_BEST = (7.5, -4.0)


@dataclass
class BestConfigs:
    """Scene type -> configuration (Knobs; (scale, bias) pairs are accepted), with a default for types without one."""

    types: dict[str, Knobs]
    default: Knobs = Knobs(*SAM2_DEFAULT)
    details: dict[str, dict[str, Any]] = field(default_factory=dict)
    study: str | None = None
    model_config: str | None = None
    checkpoint: str | None = None
    policy: Policy | None = None  # set when read from a policy.yaml: ``types`` are then its leaves

    def __post_init__(self) -> None:
        self.types = {name: _as_knobs(config) for name, config in self.types.items()}
        self.default = _as_knobs(self.default)

    def for_type(self, scene_type: str) -> Knobs:
        """The configuration for ``scene_type`` (or a policy's leaf; the default if there is none)."""
        return self.types.get(scene_type, self.default)

    def object_keys(self, table: pd.DataFrame, source: str | Path | None = None) -> list[str]:
        """Per row of a scene-type table, the key :meth:`for_type` takes: the scene type, or a policy's leaf."""
        if self.policy is not None:
            return self.policy.assign(table, source)
        return [str(value) for value in table["scene_type"]]

    def configs(self) -> set[Knobs]:
        """Every configuration an object can get (each type's or leaf's, and the default)."""
        return {self.default, *self.types.values()}


def best_configs_from_policy(policy: Policy) -> BestConfigs:
    """A policy as a BestConfigs: one entry per leaf (with its objects and J&F), the policy kept for the lookup."""
    details = {rule.leaf: {"objects": rule.objects, "jf": rule.jf, "rule": rule.text()} for rule in policy.rules}
    return BestConfigs(policy.leaf_configs(), policy.default, details, policy.study, policy.model_config,
                       policy.checkpoint, policy)


def _as_knobs(config: Any) -> Knobs:
    return config if isinstance(config, Knobs) else Knobs(*config)


def _pair(entry: Any, where: str, path: Path) -> Knobs:
    return knobs_from_entry(entry, where, path)


def load_best_configs(path: str | Path) -> BestConfigs:
    """Read a best_configs.yaml written by tune-mss (or by hand), or a policy.yaml (``tune-mss --policy learned``)."""
    path = Path(path)
    if not path.is_file():
        raise MassegError("best_configs.yaml not found", path, "run `masseg-search tune-mss` first or pass the right path")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MassegError(f"not valid YAML ({exc})", path, "fix the YAML syntax") from None
    if is_policy_data(data):
        return best_configs_from_policy(policy_from_dict(data, path))
    if not isinstance(data, dict) or not isinstance(data.get("types"), dict):
        raise MassegError("missing 'types' mapping", path, "map each scene type to {scale, bias}")
    types = {str(name): _pair(entry, f"types.{name}", path) for name, entry in data["types"].items()}
    default = _pair(data["default"], "default", path) if "default" in data else SAM2_DEFAULT
    return BestConfigs(types, default, {str(k): dict(v) for k, v in data["types"].items()},
                       data.get("study"), data.get("model_config"), data.get("checkpoint"))


def save_best_configs(path: str | Path, best: BestConfigs) -> None:
    """Write best_configs.yaml atomically."""
    types = {}
    for name, knobs in best.types.items():
        entry = knobs.as_dict()
        entry.update({k: v for k, v in best.details.get(name, {}).items() if k not in entry and k not in KNOB_FIELDS})
        types[name] = entry
    data = {"study": best.study, "model_config": best.model_config, "checkpoint": best.checkpoint,
            "default": best.default.as_dict(), "types": types}
    atomic_write_bytes(Path(path), yaml.safe_dump(data, sort_keys=False).encode())
