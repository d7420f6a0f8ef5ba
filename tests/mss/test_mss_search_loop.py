"""The batched ask -> one pass -> tell loop, storages and samplers, on the synthetic objective."""
from __future__ import annotations

import math

import optuna
import pytest
from mss_synthetic_objective import SyntheticScorer, object_jf, validation_objects
from optuna.trial import TrialState

from masseg_search.config import MssSection
from masseg_search.errors import MassegError
from masseg_search.mss.search import build_pass_configs, run_batched_search
from masseg_search.store.knobs import Knobs
from masseg_search.mss.studies import journal_path, open_storage, open_type_studies, type_study_name


def _run(tmp_path, sampler="tpe", trials=10, batch=4, seed=0, url=None):
    mss = MssSection(trials=trials, batch=batch, seed=seed, sampler=sampler, grid_points=3)
    opened = open_storage(url or f"sqlite:///{tmp_path}/s.db", "val", heartbeat_interval=5)
    objects = validation_objects()
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)
    scorer = SyntheticScorer()
    report = run_batched_search(studies, opened, objects, scorer, trials, batch, space_mss=mss, progress=False)
    return studies, scorer, report, objects


def test_one_pass_serves_k_trials_of_every_study(tmp_path):
    studies, scorer, report, objects = _run(tmp_path, trials=10, batch=4)
    assert report.passes == math.ceil(10 / 4) == len(scorer.calls)
    for scene_type, type_study in studies.items():
        complete = type_study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == 10 and len(type_study.trials) == 10
        assert type_study.study_name == type_study_name("val", scene_type)
        # the two baselines ran first, once each
        assert [(t.params["scale"], t.params["bias"]) for t in complete[:2]] == [(20.0, -10.0), (7.5, -4.0)]
        rows = objects[objects.scene_type == scene_type]
        for trial in complete:  # the value told is the mean J&F over this type's objects under the trial's config
            expected = sum(object_jf(r.video, r.object_id, trial.params["scale"], trial.params["bias"])
                           for r in rows.itertuples()) / len(rows)
            assert trial.value == pytest.approx(expected)
    first_pass = scorer.calls[0]
    assert set(first_pass) == set(objects.video)
    assert all(len(configs) == 4 for video in first_pass.values() for configs in video.values())


def test_slot_pairing_and_padding():
    objects = validation_objects(videos=1)
    study_a = optuna.create_study()
    study_b = optuna.create_study()
    dist = {"scale": optuna.distributions.FloatDistribution(1, 40), "bias": optuna.distributions.FloatDistribution(-20, 0)}
    asked = {"small": [study_a.ask(dist) for _ in range(3)], "regular": [study_b.ask(dist)]}
    configs, slots = build_pass_configs(objects, asked, {})
    assert slots == 3
    small = [Knobs(t.params["scale"], t.params["bias"]) for t in asked["small"]]
    regular = Knobs(asked["regular"][0].params["scale"], asked["regular"][0].params["bias"])
    assert configs["video0"][1] == small  # object 1 is 'small'
    assert configs["video0"][2] == [regular] * 3  # padded with its only trial


def test_finished_study_objects_run_its_best(tmp_path):
    objects = validation_objects(videos=1)
    configs, slots = build_pass_configs(objects[objects.object_id == 1], {"small": [optuna.create_study().ask(
        {"scale": optuna.distributions.FloatDistribution(1, 40), "bias": optuna.distributions.FloatDistribution(-20, 0)})]},
        {"regular": (9.0, -3.0)})
    assert slots == 1 and list(configs["video0"]) == [1]
    configs, _ = build_pass_configs(objects, {"small": [optuna.create_study().ask(
        {"scale": optuna.distributions.FloatDistribution(1, 40), "bias": optuna.distributions.FloatDistribution(-20, 0)})]},
        {"regular": (9.0, -3.0)})
    assert configs["video0"][2] == [Knobs(9.0, -3.0)]


@pytest.mark.parametrize("sampler", ["tpe", "gp", "cmaes", "random", "grid"])
def test_samplers_are_seeded_and_reproducible(tmp_path, sampler):
    first, *_ = _run(tmp_path, sampler=sampler, trials=6, batch=3, seed=7, url=f"journal:{tmp_path}/a.log")
    second, *_ = _run(tmp_path, sampler=sampler, trials=6, batch=3, seed=7, url=f"journal:{tmp_path}/b.log")
    for scene_type in first:
        params_a = [t.params for t in first[scene_type].trials]
        params_b = [t.params for t in second[scene_type].trials]
        assert params_a == params_b and len(params_a) == 6
    other, *_ = _run(tmp_path, sampler=sampler, trials=6, batch=3, seed=8, url=f"journal:{tmp_path}/c.log")
    if sampler != "grid":  # a 3x3 grid may coincide; continuous samplers must differ
        assert [t.params for t in other["small"].trials][2:] != [t.params for t in first["small"].trials][2:]


def test_search_improves_on_the_baselines(tmp_path):
    studies, *_ = _run(tmp_path, trials=24, batch=8)
    for type_study in studies.values():
        baselines = [t.value for t in type_study.trials[:2]]
        assert type_study.best_value >= max(baselines)


def test_storage_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = open_storage(None, "val")
    assert default.url == "sqlite:///studies/val.db" and (tmp_path / "studies" / "val.db").is_file()
    assert str(journal_path("journal:x/y.bin")) == "x/y.bin"
    assert journal_path("studies/val.log").name == "val.log" and journal_path("sqlite:///a.db") is None
    journal = open_storage("studies/val.log", "val")
    assert not journal.native_heartbeat and default.native_heartbeat
    with pytest.raises(MassegError, match="PGPASSWORD"):
        open_storage("postgresql://user:secret@127.0.0.1:5432/db", "val")
    with pytest.raises(MassegError, match="cannot open storage"):
        open_storage("postgresql://user@127.0.0.1:1/db", "val")
    with pytest.raises(MassegError, match="not a storage URL"):
        open_storage("not a url at all", "val")


def test_resume_in_process_keeps_finished_trials(tmp_path):
    studies, *_ = _run(tmp_path, trials=6, batch=3)
    before = {t: [(tr.number, tr.value) for tr in s.trials] for t, s in studies.items()}
    again, scorer, report, _ = _run(tmp_path, trials=9, batch=3)
    assert report.passes == 1 and len(scorer.calls) == 1
    for scene_type, type_study in again.items():
        assert [(tr.number, tr.value) for tr in type_study.trials][:6] == before[scene_type]
        assert len(type_study.trials) == 9


def test_ctrl_c_stops_after_the_current_pass(tmp_path):
    import signal

    from masseg_search.mss.search import StopRequest

    mss = MssSection(trials=12, batch=3)
    opened = open_storage(f"sqlite:///{tmp_path}/s.db", "val")
    objects = validation_objects()
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)
    inner = SyntheticScorer()

    def scorer_pressing_ctrl_c(pass_configs):
        if len(inner.calls) == 1:
            signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C during the second pass
        return inner(pass_configs)

    with StopRequest() as stop:
        report = run_batched_search(studies, opened, objects, scorer_pressing_ctrl_c, 12, 3, space_mss=mss,
                                    progress=False, stop=stop)
    assert report.stopped_early and report.passes == 2 and len(inner.calls) == 2
    for type_study in studies.values():  # the interrupted pass finished and was told; nothing left running
        assert [t.state for t in type_study.trials] == [TrialState.COMPLETE] * 6


def test_a_failing_pass_fails_its_trials_and_raises(tmp_path):
    mss = MssSection(trials=6, batch=3)
    opened = open_storage(f"sqlite:///{tmp_path}/s.db", "val")
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)

    def broken(pass_configs):
        raise KeyboardInterrupt  # a second Ctrl-C, or any error inside the engine

    with pytest.raises(KeyboardInterrupt):
        run_batched_search(studies, opened, validation_objects(), broken, 6, 3, space_mss=mss, progress=False)
    for type_study in studies.values():
        assert [t.state for t in type_study.trials] == [TrialState.FAIL] * 3
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)
    report = run_batched_search(studies, opened, validation_objects(), SyntheticScorer(), 6, 3, space_mss=mss, progress=False)
    assert report.passes == 2 and all(len(s.get_trials(states=(TrialState.COMPLETE,))) == 6 for s in studies.values())


def test_cmaes_without_package_is_a_clear_error(monkeypatch):
    import importlib.util

    from masseg_search.mss.studies import make_sampler

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cmaes" else real(name, *a))
    with pytest.raises(MassegError, match="pip install cmaes"):
        make_sampler("cmaes", 0, MssSection())


def test_a_baseline_enqueued_twice_runs_once(tmp_path):
    mss = MssSection(trials=4, batch=2)
    opened = open_storage(f"sqlite:///{tmp_path}/s.db", "val")
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)
    # what two workers starting at the same instant can do: both enqueue before either sees the other's
    studies["small"].enqueue_trial({"scale": 20.0, "bias": -10.0}, user_attrs={"baseline": True})
    run_batched_search(studies, opened, validation_objects(), SyntheticScorer(), 4, 2, space_mss=mss, progress=False)
    small = studies["small"].trials
    complete = [(t.params["scale"], t.params["bias"]) for t in small if t.state == TrialState.COMPLETE]
    assert len(complete) == 4 and complete.count((20.0, -10.0)) == 1
    duplicates = [t for t in small if t.state == TrialState.FAIL]
    assert len(duplicates) == 1 and duplicates[0].user_attrs["duplicate_of"] == 0


@pytest.mark.parametrize("backend", ["sqlite", "journal"])
def test_a_trial_orphaned_before_its_first_heartbeat_is_retried(tmp_path, backend):
    import time

    url = f"sqlite:///{tmp_path}/s.db" if backend == "sqlite" else f"journal:{tmp_path}/s.log"
    mss = MssSection(trials=4, batch=2)
    opened = open_storage(url, "val", heartbeat_interval=1, grace_period=1)
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)
    orphan = studies["small"].ask()  # a worker killed inside ask: RUNNING, never a heartbeat
    time.sleep(1.5)
    report = run_batched_search(studies, opened, validation_objects(), SyntheticScorer(), 4, 2, space_mss=mss,
                                progress=False)
    assert report.stale_failed == {"small": [orphan.number]}
    states = [t.state for t in studies["small"].trials]
    assert states.count(TrialState.COMPLETE) == 4 and TrialState.RUNNING not in states
