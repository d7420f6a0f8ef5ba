"""The one way commands are configured: ``--config`` (a yaml path or a name under configs/) and ``--set
key.path=value`` overrides, validated by the schema (an unknown key names the closest valid one). A command's own
flags that duplicate config keys are shorthands for such overrides (:func:`load_args_config`), so a stage reads
only the resolved config."""
from __future__ import annotations

import argparse
from typing import Any

from masseg_search.config import ProjectConfig, load_config, parse_overrides

SET_HELP = ("override one config key, e.g. --set mss.trials=8 --set data.synth=null (repeatable; values are YAML; "
            "an unknown key is an error naming the closest valid one)")


def add_config_options(parser: argparse.ArgumentParser, required: bool = False,
                       default: str = "configs/demo.yaml, the embedded default") -> None:
    """Add ``--config`` and ``--set``."""
    parser.add_argument("--config", required=required,
                        help=f"project config: a yaml path or a name under configs/ (default: {default})"
                        if not required else "project config: a yaml path or a name under configs/")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def overrides_from_args(args: argparse.Namespace, shorthands: dict[str, str] | None = None) -> dict[str, Any]:
    """``--set`` values, then each shorthand flag that was given (a flag wins over ``--set`` of the same key)."""
    overrides = parse_overrides(getattr(args, "overrides", None))
    for attribute, key in (shorthands or {}).items():
        value = getattr(args, attribute, None)
        if value is not None and value is not False:
            overrides[key] = value
    return overrides


def load_args_config(args: argparse.Namespace, shorthands: dict[str, str] | None = None) -> ProjectConfig:
    """The config of ``--config`` with ``--set`` and the shorthand flags applied (``{"trials": "mss.trials"}``:
    ``--trials 8`` is ``--set mss.trials=8``)."""
    return load_config(getattr(args, "config", None), overrides_from_args(args, shorthands))
