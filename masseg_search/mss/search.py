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
``masseg_search.mss.passes`` provides the engine one (local or as Ray tasks), which can also ``stream`` a pass
video by video; tests inject their own. As the pass goes, every trial reports its per-video J&F (Optuna
intermediate values, step = the video's id) and the pruner (``--pruner``, :mod:`masseg_search.mss.pruning`) may
stop trials: a pruned trial is told PRUNED at once and its rows leave the rest of the pass (:class:`PassRun`).
"""
from __future__ import annotations

import math
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState
from tqdm.auto import tqdm

from masseg_search.config import MssSection
from masseg_search.errors import MassegError
from masseg_search.mss.pruning import PassPruner, TrialProgress, is_baseline, make_pass_pruner, video_steps
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
    pruned: dict[str, list[int]] = field(default_factory=dict)  # scene type -> trial numbers pruned by this process
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
    """(finished: complete or pruned, running) trials of a study."""
    trials = type_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
    running = sum(trial.state == TrialState.RUNNING for trial in trials)
    return len(trials) - running, running


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


class PassRun:
    """One pass: every object's K configurations per video, the per-video reports, and pruning as it goes.

    Slot ``k`` of a study holds its ``k``-th asked trial (a study with fewer trials repeats its last one). When a
    trial is pruned, its slot runs, for the rest of the pass, the configuration of its study's first still-running
    trial (a row the engine runs anyway, so the pruned trial's rows leave the batch), or, when none of the study's
    trials is left, the study's fallback (its best finished configuration, as for a study not in the pass). A video
    none of whose objects belongs to a study with a running trial is not run at all.
    """

    def __init__(self, objects: pd.DataFrame, asked: dict[str, list[optuna.Trial]], fallback: dict[str, Config],
                 studies: dict[str, optuna.Study] | None = None, pruner: PassPruner | None = None,
                 steps: dict[str, int] | None = None, heartbeat: HeartbeatThread | None = None):
        self.objects = objects
        self.studies = studies or {}
        self.pruner = pruner or PassPruner()
        self.heartbeat = heartbeat
        self.slots = max(len(trials) for trials in asked.values())
        self.fallback = {scene_type: as_knobs(fallback.get(scene_type, SAM2_DEFAULT)) for scene_type in objects["scene_type"].unique()}
        for scene_type, trials in asked.items():  # a study whose trials are all pruned falls back to its best
            if scene_type not in fallback and scene_type in self.studies:
                self.fallback[scene_type] = _fallback_config(self.studies[scene_type])
        self.progress: dict[str, list[TrialProgress]] = {
            scene_type: [TrialProgress(scene_type, slot, trial, _config(trial.params), is_baseline(trial))
                         for slot, trial in enumerate(trials)] for scene_type, trials in asked.items()}
        active = objects[objects["scene_type"].isin(list(asked))]
        self.videos = sorted(set(active["video"]))
        self.steps = steps or video_steps(objects["video"])
        self.members = {video: [(int(row.object_id), row.scene_type) for row in group.itertuples(index=False)]
                        for video, group in objects[objects["video"].isin(self.videos)].groupby("video", sort=True)}
        self.videos_total = active.groupby("scene_type")["video"].nunique().to_dict()
        self.videos_done = {scene_type: 0 for scene_type in asked}
        self.pruned: list[TrialProgress] = []

    def running(self, scene_type: str) -> list[TrialProgress]:
        """The trials of ``scene_type`` in this pass that are not pruned."""
        return [progress for progress in self.progress.get(scene_type, []) if not progress.pruned]

    def slot_config(self, scene_type: str, slot: int) -> Config:
        """What the objects of ``scene_type`` run in ``slot`` now (see the class docstring)."""
        trials = self.progress.get(scene_type)
        if not trials:
            return self.fallback[scene_type]
        own = trials[min(slot, len(trials) - 1)]
        if not own.pruned:
            return own.config
        running = self.running(scene_type)
        return running[0].config if running else self.fallback[scene_type]

    def configs_for(self, video: str) -> dict[int, list[Config]] | None:
        """Each object's K configurations for ``video``; None when no object of it has a running trial."""
        members = self.members.get(video, [])
        if not any(self.running(scene_type) for _, scene_type in members):
            return None
        return {obj: [self.slot_config(scene_type, slot) for slot in range(self.slots)] for obj, scene_type in members}

    def record(self, video: str, per_object: dict[int, list[float]]) -> list[TrialProgress]:
        """Report every running trial's J&F on ``video`` (step = the video's id), prune as the pruner says; returns
        the trials pruned now (already told PRUNED)."""
        by_type: dict[str, list[int]] = {}
        for obj, scene_type in self.members.get(video, []):
            by_type.setdefault(scene_type, []).append(obj)
        newly: list[TrialProgress] = []
        for scene_type, object_ids in by_type.items():
            running = self.running(scene_type)
            if not running:
                continue
            for progress in running:
                values = [float(per_object[obj][progress.slot]) for obj in object_ids]
                progress.jf_sum += sum(values)
                progress.objects += len(values)
                progress.videos += 1
                progress.trial.report(sum(values) / len(values), step=self.steps[video])
            self.videos_done[scene_type] += 1
            study = self.studies.get(scene_type)
            if study is None:
                continue
            for progress in self.pruner.judge(study, running, self.videos_done[scene_type], self.videos_total[scene_type]):
                self._prune(study, progress)
                newly.append(progress)
        return newly

    def _prune(self, study: optuna.Study, progress: TrialProgress) -> None:
        progress.pruned = True
        progress.trial.set_user_attr("videos_scored", progress.videos)
        progress.trial.set_user_attr("jf_so_far", progress.running_mean)
        study.tell(progress.trial, state=TrialState.PRUNED)
        if self.heartbeat is not None:
            self.heartbeat.discard(progress.trial._trial_id)
        self.pruned.append(progress)

    def pass_order(self, seed: int) -> list[str]:
        """The videos in this pass's order: sorted without pruning, else a seeded shuffle (new for every pass)."""
        if self.pruner.name == "none":
            return list(self.videos)
        numbers = sorted(progress.trial.number for trials in self.progress.values() for progress in trials)
        order = np.random.default_rng([int(seed), *numbers]).permutation(len(self.videos))
        return [self.videos[index] for index in order]


def build_pass_configs(objects: pd.DataFrame, asked: dict[str, list[optuna.Trial]],
                       fallback: dict[str, Config]) -> tuple[PassConfigs, int]:
    """Each object's K configurations for one pass (slot k = k-th trial of its study); returns (configs, K)."""
    run = PassRun(objects, asked, fallback)
    return {video: run.configs_for(video) for video in run.videos}, run.slots


def stream_pass(scorer: PassScorer, videos: list[str],
                configs_for: Callable[[str], dict[int, list[Config]] | None]) -> Iterator[tuple[str, dict[int, list[float]]]]:
    """Run a pass video by video, asking ``configs_for`` when a video starts (so pruned rows leave); yields each
    video's scores as it finishes. Scorers with a ``stream`` method (the engine ones) run it; a plain PassScorer
    is called once per video."""
    stream = getattr(scorer, "stream", None)
    if stream is not None:
        yield from stream(videos, configs_for)
        return
    for video in videos:
        configs = configs_for(video)
        if configs is not None:
            yield video, scorer({video: configs})[video]


def objective_value(objects: pd.DataFrame, scores: PassScores, scene_type: str, slot: int) -> float:
    """Mean J&F over the objects of ``scene_type`` in ``slot`` of a pass (the value told to Optuna)."""
    rows = objects[objects["scene_type"] == scene_type]
    try:
        jf = [scores[row.video][int(row.object_id)][slot] for row in rows.itertuples(index=False)]
    except (KeyError, IndexError):
        raise MassegError(f"the engine pass returned no score for an object of type {scene_type!r} (slot {slot})",
                          fix="this is a bug in the pass scorer: it must score every object it was given") from None
    return float(sum(jf) / len(jf))


def objective_values(objects: pd.DataFrame, scores: PassScores, scene_type: str, slots: int) -> list[float]:
    """Mean J&F over the objects of ``scene_type``, for each slot of a pass."""
    return [objective_value(objects, scores, scene_type, slot) for slot in range(slots)]


def run_batched_search(studies: dict[str, optuna.Study], opened: StudyStorage, objects: pd.DataFrame,
                       scorer: PassScorer, trials: int, batch: int, *, space_mss: MssSection, progress: bool = True,
                       stop: StopRequest | None = None, max_passes: int | None = None, pruner: str | None = None,
                       seed: int | None = None, budget_seconds: float | None = None) -> SearchReport:
    """Run passes until every study has ``trials`` finished (complete or pruned) trials, counting other workers'
    in-flight ones.

    ``objects``: DataFrame with ``video, object_id, scene_type`` (the validation objects); ``studies``: scene type
    -> its study; ``space_mss``: the MssSection whose ``space`` defines the searched knobs and their
    ranges and whose ``pruning`` holds
    the pruner settings; ``pruner``: none | wilcoxon | sha (None = ``space_mss.pruner``, see
    :mod:`masseg_search.mss.pruning`); ``seed``: the pass-order seed (None = ``space_mss.seed``);
    ``budget_seconds``: start no pass after this many seconds (the benchmark's equal wall budget).
    """
    if objects.empty:
        raise MassegError("no validation objects to search on", fix="check the split named by mss.split / data.val_split")
    pass_pruner = make_pass_pruner(pruner or space_mss.pruner, space_mss.pruning)
    pass_pruner.install(studies)
    order_seed = space_mss.seed if seed is None else seed
    steps = video_steps(objects["video"])
    started = time.monotonic()
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
            if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
                break
            asked: dict[str, list[optuna.Trial]] = {}
            waiting_on_others = False
            for scene_type, type_study in studies.items():
                failed = fail_stale_trials(opened, type_study)
                if failed:
                    report.stale_failed.setdefault(scene_type, []).extend(failed)
                    tqdm.write(f"tune-mss: {scene_type}: trials {failed} had no heartbeat (a killed worker); "
                               "failed and re-enqueued")
                finished, running = _counts(type_study)
                needed = min(batch, trials - finished - running)
                waiting_on_others |= running > 0 and needed <= 0 and finished < trials
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
            for scene_type, trials_ in asked.items():
                for trial in trials_:
                    trial.set_user_attr("worker", worker)
                    trial.set_user_attr("objects", int((objects["scene_type"] == scene_type).sum()))
            fallback = {t: _fallback_config(s) for t, s in studies.items() if t not in asked}
            trial_ids = [trial._trial_id for trials_ in asked.values() for trial in trials_]
            with HeartbeatThread(opened, trial_ids) as heartbeat:
                run = PassRun(objects, asked, fallback, studies, pass_pruner, steps, heartbeat)
                try:
                    scores = _run_pass(scorer, run, order_seed)
                except BaseException:
                    for scene_type in asked:
                        for progress in run.running(scene_type):
                            studies[scene_type].tell(progress.trial, state=TrialState.FAIL)
                    raise
            for scene_type, trials_ in asked.items():
                for progress in run.progress[scene_type]:
                    trial = progress.trial
                    if progress.pruned:
                        report.pruned.setdefault(scene_type, []).append(trial.number)
                        continue
                    trial.set_user_attr("videos_scored", progress.videos)
                    value = objective_value(objects, scores, scene_type, progress.slot)
                    if not math.isfinite(value):
                        studies[scene_type].tell(trial, state=TrialState.FAIL)
                        continue
                    studies[scene_type].tell(trial, value)
                    report.told.setdefault(scene_type, []).append(trial.number)
                bar.update(len(trials_))
            report.passes += 1
            bar.set_postfix_str(f"best {_best_text(studies)}")
    finally:
        bar.close()
    return report


def _run_pass(scorer: PassScorer, run: PassRun, order_seed: int) -> PassScores:
    """The engine pass of ``run``: video by video with reports and pruning, or, for a plain PassScorer without
    pruning, one call over every video (each video's reports follow the call)."""
    if run.pruner.name == "none" and getattr(scorer, "stream", None) is None:
        pass_configs = {video: run.configs_for(video) for video in run.videos}
        scores = scorer(pass_configs)
        for video in run.videos:
            if video in scores:  # a missing one is reported when the trial is told
                run.record(video, scores[video])
        return scores
    scores: PassScores = {}
    for video, per_object in stream_pass(scorer, run.pass_order(order_seed), run.configs_for):
        scores[video] = per_object
        run.record(video, per_object)
    return scores
