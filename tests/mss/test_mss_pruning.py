"""Trial pruning inside the batched search (--pruner wilcoxon|sha), on the synthetic objective."""
from __future__ import annotations

import optuna
import pytest
from mss_synthetic_objective import SyntheticScorer, object_jf, validation_objects
from optuna.trial import TrialState

from masseg_search.cli import build_parser
from masseg_search.config import MssSection, config_from_dict
from masseg_search.errors import MassegError
from masseg_search.mss.pruning import HalvingPassPruner, make_pass_pruner, video_steps
from masseg_search.mss.search import run_batched_search
from masseg_search.mss.studies import open_storage, open_type_studies
from masseg_search.store.knobs import Knobs

BASELINES = {Knobs(20.0, -10.0), Knobs(7.5, -4.0)}


def _config(trial: optuna.trial.FrozenTrial) -> Knobs:
    return Knobs(**trial.params)


def _search(tmp_path, pruner, objects, trials, batch, name="s", seed=0, max_passes=None, enqueue=()):
    mss = MssSection(trials=trials, batch=batch, seed=seed)
    opened = open_storage(f"sqlite:///{tmp_path}/{name}.db", "val", heartbeat_interval=5)
    studies = open_type_studies(opened, "val", sorted(objects.scene_type.unique()), mss)
    scorer = SyntheticScorer()
    report = run_batched_search(studies, opened, objects, scorer, trials, batch, space_mss=mss, progress=False,
                                pruner=pruner, max_passes=max_passes)
    for params in enqueue:
        for type_study in studies.values():
            type_study.enqueue_trial(params)
    if enqueue:
        report = run_batched_search(studies, opened, objects, scorer, trials + batch, batch, space_mss=mss,
                                    progress=False, pruner=pruner)
    return studies, scorer, report


def test_sha_prunes_at_rungs_and_pruned_rows_leave_the_pass(tmp_path):
    objects = validation_objects(videos=9)  # every video holds one 'small' and one 'regular' object
    studies, scorer, report = _search(tmp_path, "sha", objects, trials=16, batch=8)
    steps = video_steps(objects.video)
    pruned_numbers = []
    for scene_type, type_study in studies.items():
        trials = type_study.trials
        assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 16
        pruned = [t for t in trials if t.state == TrialState.PRUNED]
        assert pruned, "successive halving must stop some trials of a batch of 8"
        pruned_numbers += [(scene_type, t.number) for t in pruned]
        for trial in pruned:
            # judged after the rungs: ceil(9/9) = 1 and ceil(9/3) = 3 videos; its reports are per video, by video id
            assert trial.user_attrs["videos_scored"] in (1, 3)
            assert len(trial.intermediate_values) == trial.user_attrs["videos_scored"]
            assert set(trial.intermediate_values) <= set(steps.values())
            assert "sha_rung0_jf" in trial.user_attrs
            # its rows left the pass: its configuration ran on exactly the videos it reported
            runs = [call for call in scorer.calls if any(_config(trial) in configs
                                                         for video in call.values() for configs in video.values())]
            assert len(runs) == trial.user_attrs["videos_scored"]
        for trial in trials:
            if _config(trial) in BASELINES:
                assert trial.state == TrialState.COMPLETE and len(trial.intermediate_values) == 9
        for trial in (t for t in trials if t.state == TrialState.COMPLETE):
            rows = objects[objects.scene_type == scene_type]
            expected = sum(object_jf(r.video, r.object_id, *_config(trial).pair) for r in rows.itertuples()) / len(rows)
            assert trial.value == pytest.approx(expected)  # a finished trial's value is unchanged by pruning
            assert trial.user_attrs["videos_scored"] == 9
    assert sorted(pruned_numbers) == sorted((t, n) for t, numbers in report.pruned.items() for n in numbers)
    assert sum(len(call) for call in scorer.calls) <= 2 * 9  # both passes ran at most every video once


def test_baselines_are_never_pruned_even_when_worst(tmp_path):
    objects = validation_objects(videos=9, objects_per_video=1)  # one type: 'small'
    mss = MssSection(trials=16, batch=8)
    opened = open_storage(f"sqlite:///{tmp_path}/s.db", "val", heartbeat_interval=5)
    # eight trials next to the optimum are queued before the baselines: they run in pass 1, and in pass 2 the
    # baselines are at the bottom of every rung
    first = optuna.create_study(storage=opened.storage, study_name="val/small", direction="maximize")
    for factor, offset in ((1.0, 0.0), (1.02, 0.1), (0.98, -0.1), (1.01, 0.05), (0.99, -0.05), (1.03, 0.0),
                           (0.97, 0.0), (1.0, 0.2)):
        first.enqueue_trial({"scale": 8.25 * factor, "bias": -5.0 + offset})
    studies = open_type_studies(opened, "val", ["small"], mss)
    run_batched_search(studies, opened, objects, SyntheticScorer(), 16, 8, space_mss=mss, progress=False, pruner="sha")
    trials = studies["small"].trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials[:8])
    baselines = [t for t in trials if _config(t) in BASELINES]
    assert [t.number for t in baselines] == [8, 9] and all(t.state == TrialState.COMPLETE for t in baselines)
    cutoff = sorted((t.user_attrs["sha_rung0_jf"] for t in trials), reverse=True)[16 // 3 - 1]
    assert all(t.user_attrs["sha_rung0_jf"] < cutoff for t in baselines)  # they ranked below the cut and ran on
    assert all(len(t.intermediate_values) == 9 for t in baselines)


def test_a_study_with_every_trial_pruned_skips_the_rest_of_its_videos(tmp_path):
    objects = validation_objects(videos=9, objects_per_video=1)
    bad = [{"scale": 1.0 + 0.01 * i, "bias": -20.0 + 0.01 * i} for i in range(4)]  # far from the optimum
    studies, scorer, report = _search(tmp_path, "sha", objects, trials=4, batch=4, enqueue=bad)
    bad_trials = [t for t in studies["small"].trials if t.number >= 4]
    assert len(bad_trials) == 4 and all(t.state == TrialState.PRUNED for t in bad_trials)
    assert all(t.user_attrs["videos_scored"] == 1 for t in bad_trials)  # stopped at the first rung (1 of 9 videos)
    # pass 1 ran its 9 videos; pass 2 stopped after the first one: no trial of the only type was left running
    assert report.passes == 1 and len(scorer.calls) == 9 + 1


def test_wilcoxon_pairs_per_video_reports_with_the_best_trial(tmp_path):
    objects = validation_objects(videos=12)
    studies, scorer, report = _search(tmp_path, "wilcoxon", objects, trials=16, batch=8)
    assert all(isinstance(s.pruner, optuna.pruners.WilcoxonPruner) for s in studies.values())
    any_pruned = False
    for type_study in studies.values():
        first_pass = type_study.trials[:8]
        assert all(t.state == TrialState.COMPLETE for t in first_pass)  # no finished best trial yet: no pruning
        assert all(sorted(t.intermediate_values) == list(range(12)) for t in first_pass)  # every video, by its id
        for trial in type_study.trials[8:]:
            if trial.state == TrialState.PRUNED:
                any_pruned = True
                # the signed-rank test cannot reach p < 0.1 on fewer than 4 paired videos
                assert 4 <= trial.user_attrs["videos_scored"] < 12
                assert trial.user_attrs["jf_so_far"] < type_study.best_value
    assert any_pruned
    # the video order is shuffled per pass (the same for all trials of the pass), reproducibly
    orders = _pass_orders(scorer, 12)
    assert len(orders) == 2 and orders[0] != orders[1] and sorted(orders[0]) == sorted(orders[1])
    _, again, _ = _search(tmp_path, "wilcoxon", objects, trials=16, batch=8, name="again")
    assert _pass_orders(again, 12) == orders


def _pass_orders(scorer: SyntheticScorer, videos: int) -> list[list[str]]:
    names = [next(iter(call)) for call in scorer.calls]
    orders, current = [], []
    for name in names:
        if name in current:
            orders.append(current)
            current = []
        current.append(name)
    orders.append(current)
    return [order for order in orders if len(order) == videos]


def test_unpruned_trials_score_the_same_with_and_without_pruning(tmp_path):
    objects = validation_objects(videos=9)
    plain, _, _ = _search(tmp_path, "none", objects, trials=8, batch=8, name="plain", max_passes=1)
    pruned, _, _ = _search(tmp_path, "sha", objects, trials=8, batch=8, name="pruned", max_passes=1)
    for scene_type in plain:
        pairs = list(zip(plain[scene_type].trials, pruned[scene_type].trials))
        assert all(a.params == b.params for a, b in pairs)  # same seeds: the same trials asked
        assert all(a.state == TrialState.COMPLETE for a, _ in pairs)
        assert any(b.state == TrialState.PRUNED for _, b in pairs)
        for a, b in pairs:
            if b.state == TrialState.COMPLETE:
                assert b.value == a.value and b.intermediate_values == a.intermediate_values
            else:  # a pruned trial's reports are the first of the plain run's
                assert all(a.intermediate_values[step] == value for step, value in b.intermediate_values.items())


def test_halving_rungs_and_pruner_names():
    pruner = HalvingPassPruner(MssSection().pruning)
    assert pruner.rung_ends(36) == {0: 4, 1: 12}
    assert pruner.rung_ends(2) == {0: 1}  # a rung at or after the last video is no rung
    assert make_pass_pruner("none", MssSection().pruning).judge(None, [], 1, 2) == []
    with pytest.raises(MassegError, match="unknown pruner"):
        make_pass_pruner("median", MssSection().pruning)


def test_pruner_config_key_and_cli_flag():
    config = config_from_dict({"mss": {"pruner": "sha", "pruning": {"rungs": [0.25, 0.5], "reduction_factor": 2}}})
    assert config.mss.pruner == "sha" and config.mss.pruning.rungs == [0.25, 0.5]
    assert config_from_dict({}).mss.pruner == "none"
    with pytest.raises(MassegError, match="mss.pruner"):
        config_from_dict({"mss": {"pruner": "median"}})
    with pytest.raises(MassegError, match="rungs"):
        config_from_dict({"mss": {"pruning": {"rungs": [0.5, 0.25]}}})
    args = build_parser().parse_args(["tune-mss", "--pruner", "wilcoxon"])
    assert args.pruner == "wilcoxon"
    assert build_parser().parse_args(["tune-mss"]).pruner is None  # None: mss.pruner decides
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tune-mss", "--pruner", "median"])
