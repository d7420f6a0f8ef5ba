"""Trial pruning inside an engine pass: judge every trial on its per-video J&F as the pass goes, stop the losers.

A pass serves K trials of every scene-type study at once, so all of them see the videos in the same order (one
seeded shuffle per pass; every pass draws a new order). After each video the loop reports, for every running trial,
the mean J&F of its type's objects in that video with ``trial.report(value, step=<the video's id>)`` and asks the
pruner which trials to stop; a stopped trial is told PRUNED at once and its rows leave the rest of the pass.

* ``wilcoxon``: Optuna's ``WilcoxonPruner``, made for per-instance scores: the video id is the step (stable across
  passes), and a trial is stopped when the signed-rank test over the videos it shares with the study's best trial
  says it is worse (``mss.pruning.p_threshold``). Needs a finished best trial, so nothing is pruned in a study's
  first pass.
* ``sha``: successive halving over rungs of videos. After ``mss.pruning.rungs`` (fractions of the type's videos in
  the pass) the running object-mean J&F of every running trial is recorded as the user attribute
  ``sha_rung<i>_jf`` and ranked with every earlier trial of the study that reached that rung; only the top
  ``1/reduction_factor`` go on (at least the best one, Optuna's ``SuccessiveHalvingPruner`` rule).

The enqueued baselines (SAM2's 20/-10, MASSeg's 7.5/-4.0) are never pruned; they still report and rank.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import optuna
from optuna.trial import TrialState

from masseg_search.config import PruningSection
from masseg_search.errors import MassegError
from masseg_search.mss.studies import baseline_params
from masseg_search.store.knobs import Knobs

PRUNERS = ("none", "wilcoxon", "sha")
RUNG_ATTR = "sha_rung{}_jf"


def video_steps(videos: Iterable[str]) -> dict[str, int]:
    """Each video's step id for ``trial.report``: its index among the sorted video names (the same in every pass
    over the same objects, which is what pairs a trial's reports with the best trial's)."""
    return {name: index for index, name in enumerate(sorted(set(videos)))}


def is_baseline(trial: optuna.Trial) -> bool:
    """True for the enqueued baselines (marked, or with exactly a baseline's parameters, no memory knob set):
    never pruned."""
    if trial.user_attrs.get("baseline"):
        return True
    return any(dict(trial.params) == base for base in baseline_params())


@dataclass
class TrialProgress:
    """One trial of a pass: its slot, what it has scored so far, and whether it was pruned."""

    scene_type: str
    slot: int
    trial: optuna.Trial
    config: Knobs
    baseline: bool
    jf_sum: float = 0.0
    objects: int = 0
    videos: int = 0
    pruned: bool = False

    @property
    def running_mean(self) -> float:
        """Mean J&F over the objects of the videos scored so far (the objective, on part of the videos)."""
        return self.jf_sum / self.objects if self.objects else float("nan")


class PassPruner:
    """Prunes nothing (``none``); the base of the pruners: ``judge`` after each video of a study's type."""

    name = "none"

    def install(self, studies: dict[str, optuna.Study]) -> None:
        """Prepare the studies of a search (the Wilcoxon pruner sets itself as their Optuna pruner)."""

    def judge(self, study: optuna.Study, running: list[TrialProgress], videos_done: int, videos_total: int
              ) -> list[TrialProgress]:
        """The running trials to stop now; ``videos_done`` of the type's ``videos_total`` videos are scored."""
        return []


class WilcoxonPassPruner(PassPruner):
    """Optuna's WilcoxonPruner, asked through ``trial.should_prune()`` after every reported video."""

    name = "wilcoxon"

    def __init__(self, settings: PruningSection):
        self.pruner = optuna.pruners.WilcoxonPruner(p_threshold=settings.p_threshold,
                                                    n_startup_steps=settings.startup_videos)

    def install(self, studies: dict[str, optuna.Study]) -> None:
        for type_study in studies.values():
            type_study.pruner = self.pruner  # trial.should_prune() asks its study's pruner

    def judge(self, study: optuna.Study, running: list[TrialProgress], videos_done: int, videos_total: int
              ) -> list[TrialProgress]:
        if videos_done >= videos_total:
            return []  # the trial is finished anyway
        return [progress for progress in running if not progress.baseline and progress.trial.should_prune()]


class HalvingPassPruner(PassPruner):
    """Successive halving over rungs of videos, ranked against this pass's and earlier trials at each rung."""

    name = "sha"

    def __init__(self, settings: PruningSection):
        self.rungs = list(settings.rungs)
        self.reduction_factor = float(settings.reduction_factor)

    def rung_ends(self, videos_total: int) -> dict[int, int]:
        """Rung index -> the number of the type's videos after which it is judged: before the last video, and one
        rung (the first) where several fall on the same video (a second cut would judge the same scores)."""
        ends: dict[int, int] = {}
        for index, fraction in enumerate(self.rungs):
            end = math.ceil(fraction * videos_total)
            if 0 < end < videos_total and end not in ends.values():
                ends[index] = end
        return ends

    def judge(self, study: optuna.Study, running: list[TrialProgress], videos_done: int, videos_total: int
              ) -> list[TrialProgress]:
        pruned: list[TrialProgress] = []
        for rung, end in self.rung_ends(videos_total).items():
            if end == videos_done:
                pruned += self._judge_rung(study, rung, running)
        return pruned

    def _judge_rung(self, study: optuna.Study, rung: int, running: list[TrialProgress]) -> list[TrialProgress]:
        key = RUNG_ATTR.format(rung)
        for progress in running:
            progress.trial.set_user_attr(key, progress.running_mean)
        own = {progress.trial.number for progress in running}
        earlier = [trial.user_attrs[key] for trial in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
            if key in trial.user_attrs and trial.number not in own]
        competing = sorted([float(value) for value in earlier if math.isfinite(value)]
                           + [progress.running_mean for progress in running if math.isfinite(progress.running_mean)],
                           reverse=True)
        if not competing:
            return []
        keep = max(1, int(len(competing) // self.reduction_factor))
        cutoff = competing[keep - 1]
        return [progress for progress in running
                if not progress.baseline and math.isfinite(progress.running_mean) and progress.running_mean < cutoff]


def make_pass_pruner(name: str, settings: PruningSection) -> PassPruner:
    """The pruner named by ``--pruner`` / ``mss.pruner``."""
    if name == "none":
        return PassPruner()
    if name == "wilcoxon":
        return WilcoxonPassPruner(settings)
    if name == "sha":
        return HalvingPassPruner(settings)
    raise MassegError(f"unknown pruner {name!r}", fix=f"use one of {', '.join(PRUNERS)}")
