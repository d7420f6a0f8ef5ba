"""tune-mss's output folder (``results/mss/<study>/``): its file names and the readers later stages use.

One owner for these names: tune-mss writes through :class:`MssResults`, and the ensemble stage, the pipeline and
the CLI find the folds and the per-fold choices through it, instead of spelling the file names themselves.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.store.knobs import Knobs, parse_knobs_id

FOLDS_FIX = 'write {"0": [videos...], "1": [...]}'


@dataclass(frozen=True)
class MssResults:
    """The files of one tune-mss output folder."""

    folder: Path

    @classmethod
    def beside(cls, best_configs: str | Path) -> MssResults:
        """The results folder that holds ``best_configs`` (its other files sit beside it)."""
        return cls(Path(best_configs).parent)

    @property
    def best_configs(self) -> Path:
        """Per scene type, the chosen configuration (:mod:`masseg_search.store.best_configs`)."""
        return self.folder / "best_configs.yaml"

    @property
    def folds(self) -> Path:
        """``{fold: [videos]}`` of the held-out estimate (written with ``--cv``)."""
        return self.folder / "folds.json"

    @property
    def holdout_objects(self) -> Path:
        """Per fold, each held-out object's configuration chosen on the other folds (fold, video, object_id,
        chosen_config (its id), chosen_scale, chosen_bias, ...)."""
        return self.folder / "holdout_objects.csv"

    @property
    def holdout_summary(self) -> Path:
        """Per scene type, the held-out J&F of the chosen configurations against the baselines."""
        return self.folder / "holdout_summary.csv"

    @property
    def trials(self) -> Path:
        """Every trial of every scene-type study."""
        return self.folder / "trials.csv"

    @property
    def per_type(self) -> Path:
        """Per scene type: chosen configuration, in-sample and held-out J&F, the two baselines."""
        return self.folder / "per_type.csv"

    @property
    def importance(self) -> Path:
        """Per scene type, how much each searched knob mattered (scene_type, knob, importance, complete_trials,
        reliable)."""
        return self.folder / "importance.csv"

    @property
    def policy(self) -> Path:
        """The learned policy (``tune-mss --policy learned``, :mod:`masseg_search.store.policy`): rules over
        first-frame features, each leaf's configuration and objects; read wherever best_configs.yaml is."""
        return self.folder / "policy.yaml"

    @property
    def policy_comparison(self) -> Path:
        """Held-out J&F of the fixed, per_type, learned and oracle policies with bootstrap intervals over videos and
        paired gains over fixed and per_type (one row each)."""
        return self.folder / "policy_comparison.csv"

    @property
    def policy_candidates(self) -> Path:
        """Per validation object: first-frame features and its J&F under every candidate configuration (one engine
        pass per configuration slot; the table the policies are fit on)."""
        return self.folder / "policy_candidates.csv"

    @property
    def policy_objects(self) -> Path:
        """Per held-out object: its fold and, per policy, the configuration fit on the other folds and its J&F
        (``learned_config``, ``learned_scale``, ``learned_bias``, ``jf_learned``, ...)."""
        return self.folder / "policy_objects.csv"

    @property
    def policy_folds(self) -> Path:
        """Per outer fold: the tree depth the inner CV chose, its inner-CV J&F per depth, and the fold's rules."""
        return self.folder / "policy_folds.csv"

    @property
    def policy_plot(self) -> Path:
        """The final policy's rules beside the held-out J&F and paired gains of every policy."""
        return self.folder / "policy.png"

    def folds_or_none(self) -> Path | None:
        """The folds file when tune-mss wrote one (``--cv``), else None."""
        return self.folds if self.folds.is_file() else None

    def heldout_configs(self) -> set[Knobs]:
        """The configurations chosen on each fold's training videos (empty without ``--cv``): what inference must
        store so that the ensemble can score ``select`` held out. Tables written before the memory knobs (no
        ``chosen_config`` column) give their (scale, bias)."""
        if not self.holdout_objects.is_file():
            return set()
        table = pd.read_csv(self.holdout_objects)
        if "chosen_config" in table:
            return {parse_knobs_id(str(text))[0] for text in table["chosen_config"]}
        return {Knobs(float(scale), float(bias)) for scale, bias in zip(table["chosen_scale"], table["chosen_bias"])}

    def heldout_choices(self, learned: bool) -> tuple[Path, str]:
        """Where the per-fold choices are: (file, column prefix) with the columns ``<prefix>_config`` (the config
        id) or ``<prefix>_scale`` and ``<prefix>_bias``: the learned policy's (``learned``: the ensemble selects
        with a policy.yaml; ``policy_objects.csv``, prefix ``learned``), else the per-type search's
        (``holdout_objects.csv``, prefix ``chosen``)."""
        if learned:
            return self.policy_objects, "learned"
        return self.holdout_objects, "chosen"


def write_folds(path: str | Path, folds: list[list[str]]) -> None:
    """``{fold index: [videos]}`` as JSON (read back by :func:`load_folds`)."""
    atomic_write_bytes(Path(path), json.dumps({str(i): fold for i, fold in enumerate(folds)}, indent=1).encode())


def load_folds(path: str | Path, videos: list[str]) -> dict[str, list[str]]:
    """``{fold: [videos]}`` restricted to ``videos``; folds left empty are dropped."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MassegError(f"cannot read folds ({exc})", path, FOLDS_FIX) from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise MassegError("folds must map a fold name to a list of videos", path, FOLDS_FIX)
    wanted = set(videos)
    folds = {str(fold): [str(v) for v in members if str(v) in wanted] for fold, members in data.items()}
    return {fold: members for fold, members in folds.items() if members}
