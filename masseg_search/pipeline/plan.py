"""What `run` infers, and with which checkpoints: the planning between tune-mss, the ensemble's views and the chosen
fusion plan. Pure functions over the files earlier stages wrote (no torch), so each is tested alone.

- :func:`top_trial_checkpoints` / :func:`ensemble_views`: the base view (the best sweep trial), its mirror
  (``ensemble.flip``) and the next best trials (``ensemble.trials``) with theirs.
- :func:`validation_configs` / :func:`view_configs`: every (scale, bias) a fusion candidate of ``ensemble
  --select-on`` can name: the two baselines, the per-type choices and tune-mss's per-fold choices (so ``select`` is
  scored held out), the views running what ``select`` needs.
- :func:`needed_test_configs`: per view, only what the chosen plan reads on test (:meth:`FusionPlan.needed_configs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from masseg_search.data.layout import find_split_list
from masseg_search.ensemble.plan import FusionPlan
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT, BestConfigs
from masseg_search.store.knobs import Knobs, as_knobs
from masseg_search.store.predictions import config_id, config_view, parse_config_id

Config = Knobs | tuple[float, float]


@dataclass(frozen=True)
class View:
    """One view the ensemble can fuse: a name (None = the base view), the checkpoint that makes it, mirrored or not."""

    name: str | None
    checkpoint: str | None
    flip: bool = False

    def as_tuple(self) -> tuple[str | None, str | None, bool]:
        """(view, checkpoint, mirrored), the form :func:`ensemble_views` returns."""
        return self.name, self.checkpoint, self.flip


def top_trial_checkpoints(table_csv: str | Path, count: int) -> list[str]:
    """The checkpoints of the ``count`` sweep trials with the best validation J&F, best first (trials without a
    checkpoint are skipped)."""
    table = pd.read_csv(table_csv)
    table = table[table["checkpoint"].notna() & table["best_val_jf"].notna()]
    table = table.sort_values(["best_val_jf", "trial_id"], ascending=[False, True], kind="stable")
    return [str(path) for path in table["checkpoint"].head(count)]


def ensemble_views(best_checkpoint: str | None, ranked: list[str], flip: bool) -> list[tuple[str | None, str | None, bool]]:
    """(view, checkpoint, mirrored) for every view to infer: the best trial as the base view, ``flip`` its
    mirrored videos, and ``trial<k>`` (``trial<k>.flip``) the k-th best trial's checkpoint."""
    views: list[tuple[str | None, str | None, bool]] = [(None, best_checkpoint, False)]
    if flip:
        views.append(("flip", best_checkpoint, True))
    best = Path(best_checkpoint).resolve() if best_checkpoint else None
    others = [path for path in ranked if Path(path).resolve() != best]
    for rank, checkpoint in enumerate(others[: max(len(ranked) - 1, 0)], start=2):
        views.append((f"trial{rank}", checkpoint, False))
        if flip:
            views.append((f"trial{rank}.flip", checkpoint, True))
    return views


def _sorted(configs: set[Knobs]) -> list[Knobs]:
    return sorted(configs, key=config_id)


def validation_configs(best: BestConfigs, heldout: set[Config]) -> list[Knobs]:
    """The base view's configurations on validation: SAM2's 20/-10, MASSeg's 7.5/-4, the per-type choices and the
    per-fold choices of tune-mss's held-out estimate (``MssResults.heldout_configs``), by config id."""
    return _sorted({as_knobs(config) for config in (SAM2_DEFAULT, MASSEG_BEST, *best.types.values(), *heldout)})


def view_configs(best: BestConfigs, heldout: set[Config]) -> list[Knobs]:
    """The other views' configurations on validation: what ``select`` reads (the default, the per-type and the
    per-fold choices), so its view variants are scored held out too."""
    return _sorted({as_knobs(config) for config in (best.default, *best.types.values(), *heldout)})


def needed_test_configs(needed: set[str] | None, view: str | None, stored: list[Config]) -> list[Knobs]:
    """The configurations of ``view`` the chosen plan reads on test; ``needed`` None (a rule reads every stored
    configuration) = every configuration ``stored`` for that view on validation."""
    if needed is None:
        return _sorted({as_knobs(config) for config in stored})
    return _sorted({parse_config_id(config) for config in needed if config_view(config) == view})


def resolve_split_list(root: str | Path, split: str | None) -> Path | None:
    """The list file of a split (a list file path, or a name under ``root``); None = every video of ``root``."""
    return None if split is None else find_split_list(root, split)


def plan_summary(plan: FusionPlan) -> dict:
    """The chosen fusion plan in a few fields: the candidate chosen on validation, its J&F there, whether that score
    is held out, and how many candidates were compared."""
    selection = plan.selection or {}
    chosen = selection.get("chosen", plan.default.method)
    scores = {candidate["name"]: candidate["jf"] for candidate in selection.get("candidates", [])}
    return {"chosen": chosen, "val_jf": None if chosen not in scores else float(scores[chosen]),
            "held_out": bool(selection.get("held_out", False)), "candidates": len(scores)}
