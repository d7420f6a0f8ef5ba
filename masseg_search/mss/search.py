"""The batched search loop: ask K trials per scene-type study, run ONE engine pass serving all of them, tell.

Pairing of configurations within a pass (documented choice): trial slot ``k`` of every study runs together.
Each validation object gets the list of its own study's K configurations; in slot ``k`` every object runs its
study's ``k``-th trial, so the id mask scored for slot ``k`` merges all objects under the configurations they
would have if slot ``k``'s trials were the chosen per-type configurations - the deployment situation. A study that
asked fewer than K trials repeats its last one in the spare slots (not told twice); objects of a study that is
already finished run its best configuration so far (or SAM2's default before any trial finished).

A configuration is a :class:`~masseg_search.store.knobs.Knobs` (scale, bias and the memory knobs the study searches,
``mss.space``); a trial's parameters hold the knobs it set (baselines: scale and bias only, at default knobs).
The pass itself is a ``PassScorer``: ``{video: {object_id: [K Knobs]}} -> {video: {object_id: [K J&F]}}``.
``masseg_search.mss.passes`` provides the engine one (local or as Ray tasks); tests inject their own.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import optuna
import pandas as pd
from optuna.trial import TrialState
from tqdm.auto import tqdm

from masseg_search.config import MssSection
from masseg_search.errors import MassegError
from masseg_search.mss.studies import (
    HeartbeatThread,
    StudyStorage,
    ask_trial,
    fail_stale_trials,
    knobs_from_params,
    start_heartbeat,
)
from masseg_search.store.best_configs import SAM2_DEFAULT
from masseg_search.store.knobs import Knobs, as_knobs

Config = Knobs
PassConfigs = dict[str, dict[int, list[Config]]]
PassScores = dict[str, dict[int, list[float]]]
PassScorer = Callable[[PassConfigs], PassScores]


@dataclass
class SearchReport:
    """What one run of the loop did."""

    passes: int = 0
    told: dict[str, list[int]] = field(default_factory=dict)  # scene type -> trial numbers told by this process
    stale_failed: dict[str, list[int]] = field(default_factory=dict)
    stopped_early: bool = False


class StopRequest:
    """Ctrl-C once: finish the current pass, tell its trials, stop. Ctrl-C twice: interrupt now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("tune-mss: stopping after the current pass (Ctrl-C again to interrupt now)")

    def __exit__(self, *exc_info: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _config(params: dict[str, float]) -> Config:
    return knobs_from_params(params)


def _fallback_config(type_study: optuna.Study) -> Config:
    """The best finished configuration of a study, or SAM2's default before any trial finished."""
    complete = type_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return as_knobs(SAM2_DEFAULT)
    return _config(max(complete, key=lambda trial: trial.value).params)


def _counts(type_study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of a study."""
    trials = type_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(trial.state == TrialState.COMPLETE for trial in trials)
    return complete, len(trials) - complete


def _drop_duplicate_baseline(type_study: optuna.Study, trial: optuna.Trial) -> bool:
    """Two workers that start together may both enqueue the baselines; run each baseline once, fail the copy."""
    if not trial.user_attrs.get("baseline"):
        return False
    for other in type_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)):
        if other.number < trial.number and other.user_attrs.get("baseline") and other.params == trial.params:
            trial.set_user_attr("duplicate_of", other.number)
            type_study.tell(trial, state=TrialState.FAIL)
            return True
    return False


def _best_text(studies: dict[str, optuna.Study]) -> str:
    parts = []
    for scene_type, type_study in studies.items():
        complete = type_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if complete:
            parts.append(f"{scene_type}={max(trial.value for trial in complete):.3f}")
    return " ".join(parts)


def build_pass_configs(objects: pd.DataFrame, asked: dict[str, list[optuna.Trial]],
                       fallback: dict[str, Config]) -> tuple[PassConfigs, int]:
    """Each object's K configurations for one pass (slot k = k-th trial of its study); returns (configs, K)."""
    slots = max(len(trials) for trials in asked.values())
    per_type: dict[str, list[Config]] = {}
    fallback = {scene_type: as_knobs(config) for scene_type, config in fallback.items()}
    for scene_type, trials in asked.items():
        configs = [_config(trial.params) for trial in trials]
        per_type[scene_type] = configs + [configs[-1]] * (slots - len(configs))
    active_videos = set(objects.loc[objects["scene_type"].isin(list(asked)), "video"])
    pass_configs: PassConfigs = {}
    for row in objects.itertuples(index=False):
        if row.video not in active_videos:
            continue
        configs = per_type.get(row.scene_type) or [fallback.get(row.scene_type, as_knobs(SAM2_DEFAULT))] * slots
        pass_configs.setdefault(row.video, {})[int(row.object_id)] = list(configs)
    return pass_configs, slots


def objective_values(objects: pd.DataFrame, scores: PassScores, scene_type: str, slots: int) -> list[float]:
    """Mean J&F over the objects of ``scene_type``, for each slot of a pass."""
    rows = objects[objects["scene_type"] == scene_type]
    values = []
    for slot in range(slots):
        try:
            jf = [scores[row.video][int(row.object_id)][slot] for row in rows.itertuples(index=False)]
        except (KeyError, IndexError):
            raise MassegError(f"the engine pass returned no score for an object of type {scene_type!r} (slot {slot})",
                              fix="this is a bug in the pass scorer: it must score every object it was given") from None
        values.append(float(sum(jf) / len(jf)))
    return values


def run_batched_search(studies: dict[str, optuna.Study], opened: StudyStorage, objects: pd.DataFrame,
                       scorer: PassScorer, trials: int, batch: int, *, space_mss: MssSection, progress: bool = True,
                       stop: StopRequest | None = None, max_passes: int | None = None) -> SearchReport:
    """Run passes until every study has ``trials`` finished trials (counting other workers' in-flight ones).

    ``objects``: DataFrame with ``video, object_id, scene_type`` (the validation objects); ``studies``: scene type
    -> its study; ``space_mss``: the MssSection whose ``space`` defines the searched knobs and their ranges.
    """
    if objects.empty:
        raise MassegError("no validation objects to search on", fix="check the split named by mss.split / data.val_split")
    report = SearchReport()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    total = trials * len(studies)
    bar = tqdm(total=total, desc="tune-mss trials", unit="trial", disable=not progress, dynamic_ncols=True)
    bar.update(sum(min(_counts(s)[0], trials) for s in studies.values()))
    try:
        while max_passes is None or report.passes < max_passes:
            if stop is not None and stop.requested:
                report.stopped_early = True
                break
            asked: dict[str, list[optuna.Trial]] = {}
            waiting_on_others = False
            for scene_type, type_study in studies.items():
                failed = fail_stale_trials(opened, type_study)
                if failed:
                    report.stale_failed.setdefault(scene_type, []).extend(failed)
                    tqdm.write(f"tune-mss: {scene_type}: trials {failed} had no heartbeat (a killed worker); "
                               "failed and re-enqueued")
                complete, running = _counts(type_study)
                needed = min(batch, trials - complete - running)
                waiting_on_others |= running > 0 and needed <= 0 and complete < trials
                if needed > 0:
                    trials_ = []
                    for _ in range(needed):
                        trials_.append(ask_trial(type_study, space_mss))
                        start_heartbeat(opened, trials_[-1]._trial_id)
                    trials_ = [trial for trial in trials_ if not _drop_duplicate_baseline(type_study, trial)]
                    if trials_:
                        asked[scene_type] = trials_
            if not asked:
                if waiting_on_others:  # trials of other (or dead) workers still in flight
                    time.sleep(min(opened.heartbeat_interval, 2))
                    continue
                break
            fallback = {t: _fallback_config(s) for t, s in studies.items() if t not in asked}
            pass_configs, slots = build_pass_configs(objects, asked, fallback)
            trial_ids = [trial._trial_id for trials_ in asked.values() for trial in trials_]
            try:
                with HeartbeatThread(opened, trial_ids):
                    scores = scorer(pass_configs)
            except BaseException:
                for scene_type, trials_ in asked.items():
                    for trial in trials_:
                        studies[scene_type].tell(trial, state=TrialState.FAIL)
                raise
            for scene_type, trials_ in asked.items():
                values = objective_values(objects, scores, scene_type, slots)
                for slot, trial in enumerate(trials_):
                    trial.set_user_attr("worker", worker)
                    trial.set_user_attr("objects", int((objects["scene_type"] == scene_type).sum()))
                    if not math.isfinite(values[slot]):
                        studies[scene_type].tell(trial, state=TrialState.FAIL)
                        continue
                    studies[scene_type].tell(trial, values[slot])
                    report.told.setdefault(scene_type, []).append(trial.number)
                bar.update(len(trials_))
            report.passes += 1
            bar.set_postfix_str(f"best {_best_text(studies)}")
    finally:
        bar.close()
    return report
