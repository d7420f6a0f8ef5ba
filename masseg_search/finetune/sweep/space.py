"""The sweep's search space: ``train_sweep.space`` (dotted ``train`` keys) as Ray Tune distributions, and
each trial's config from the base config and its sampled values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from masseg_search.config import ProjectConfig, SearchDimension, TrainSection, config_from_dict, set_dotted
from masseg_search.errors import MassegError

def is_uri(text: str) -> bool:
    """A storage URI (``s3://``, ``gs://``, ...) rather than a local path."""
    return "://" in text


def _check_train_key(dotted: str) -> None:
    """A space key must name a scalar ``train`` field (``lr``, ``loss.dice``, ``augment.hflip``)."""
    model: Any = TrainSection
    parts = dotted.split(".")
    for index, part in enumerate(parts):
        fields = getattr(model, "model_fields", None)
        names = {f.alias or name: f for name, f in fields.items()} if fields else {}
        if part not in names:
            valid = ", ".join(sorted(names)) if names else "(none)"
            raise MassegError(f"train_sweep.space key {dotted!r}: {part!r} is not a train setting (valid here: {valid})",
                              fix="use dotted train keys such as lr, loss.dice, augment.grayscale")
        annotation = names[part].annotation
        model = annotation if isinstance(annotation, type) and hasattr(annotation, "model_fields") else None
        if model is not None and index == len(parts) - 1:
            raise MassegError(f"train_sweep.space key {dotted!r} names a whole section", fix=f"name one of its keys, e.g. {dotted}.<key>")


def search_space(space: dict[str, SearchDimension]) -> dict[str, Any]:
    """Ray Tune distributions for the config's space: ``choices`` -> choice (``grid`` -> grid_search, every
    choice ``samples`` times), ``log`` -> loguniform, else uniform."""
    from ray import tune

    distributions = {}
    for dotted, dimension in space.items():
        _check_train_key(dotted)
        if dimension.choices is not None and dimension.grid:
            distributions[dotted] = tune.grid_search(list(dimension.choices))
        elif dimension.choices is not None:
            distributions[dotted] = tune.choice(list(dimension.choices))
        elif dimension.log:
            distributions[dotted] = tune.loguniform(dimension.low, dimension.high)
        else:
            distributions[dotted] = tune.uniform(dimension.low, dimension.high)
    if not distributions:
        raise MassegError("train_sweep.space is empty", fix="add searched keys, e.g. loss.dice: {low: 0.5, high: 4, log: true}")
    return distributions


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> ProjectConfig:
    """The base config (as a dict) with each sampled ``train`` value set."""
    values = json.loads(json.dumps(base))
    for dotted, value in params.items():
        set_dotted(values.setdefault("train", {}), dotted, value.item() if hasattr(value, "item") else value)
    return config_from_dict(values, source=f"trial {params}")


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """The config dict with relative data / checkpoint / model-config paths made absolute: trials run in their
    own working folders (and on other machines, where these should be shared paths)."""
    data, model = values.get("data", {}), values.get("model", {})
    for key in ("root", "test_root"):
        if data.get(key) and not is_uri(data[key]):
            data[key] = str(Path(data[key]).resolve())
    for key in ("train_split", "val_split", "test_split"):  # list files given as paths (SAM2's MOSE val list)
        if data.get(key) and Path(data[key]).suffix == ".txt" and Path(data[key]).is_file():
            data[key] = str(Path(data[key]).resolve())
    if model.get("checkpoint") and not is_uri(model["checkpoint"]):
        model["checkpoint"] = str(Path(model["checkpoint"]).resolve())
    if model.get("config") and Path(model["config"]).is_file():
        model["config"] = str(Path(model["config"]).resolve())
    return values
