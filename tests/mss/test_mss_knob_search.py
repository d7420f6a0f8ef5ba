"""tune-mss searching memory knobs besides (scale, bias): mss.space, --knobs, seeding, outputs, importances."""
from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from mss_synthetic_objective import object_jf, validation_objects
from optuna.trial import TrialState

from masseg_search.cli import build_parser
from masseg_search.config import MssSection, config_from_dict
from masseg_search.errors import MassegError
from masseg_search.mss.outputs import knob_importances, trials_table
from masseg_search.mss.search import PassConfigs, PassScores, run_batched_search
from masseg_search.mss.studies import make_sampler, open_storage, open_type_studies, search_distributions
from masseg_search.mss.tune import tune_mss
from masseg_search.store.best_configs import load_best_configs
from masseg_search.store.knobs import Knobs, knobs_id

SPACE = {"admit_score": {"type": "float", "low": -2.0, "high": 2.0},
         "memory_stride": {"type": "int", "low": 1, "high": 3},
         "multimask": {"choices": [None, 0, 1]}}


class KnobScorer:
    """A PassScorer whose J&F depends on admit_score and memory_stride too (peak at admit_score 0.5, stride 2), so
    a search over them has something to find; records every configuration the pass received."""

    def __init__(self) -> None:
        self.received: list[Knobs] = []

    def __call__(self, pass_configs: PassConfigs) -> PassScores:
        scores: PassScores = {}
        for video, objects in pass_configs.items():
            scores[video] = {}
            for obj, configs in objects.items():
                self.received.extend(configs)
                scores[video][obj] = [self.jf(video, obj, config) for config in configs]
        return scores

    @staticmethod
    def jf(video: str, obj: int, knobs: Knobs) -> float:
        admit = -1.0 if knobs.admit_score is None else knobs.admit_score
        stride = 1 if knobs.memory_stride is None else knobs.memory_stride
        return object_jf(video, obj, knobs.scale, knobs.bias) * math.exp(-((admit - 0.5) ** 2) - 0.2 * (stride - 2) ** 2)


def _search(tmp_path, trials=12, batch=4, sampler="tpe", space=SPACE):
    mss = MssSection(trials=trials, batch=batch, seed=0, sampler=sampler, grid_points=3, space=space)
    opened = open_storage(f"sqlite:///{tmp_path}/s.db", "val", heartbeat_interval=5)
    studies = open_type_studies(opened, "val", ["regular", "small"], mss)
    scorer = KnobScorer()
    report = run_batched_search(studies, opened, validation_objects(), scorer, trials, batch, space_mss=mss,
                                progress=False)
    return studies, scorer, report, mss, opened


def test_a_study_with_knobs_searches_them_and_the_engine_receives_them(tmp_path):
    studies, scorer, _, mss, _ = _search(tmp_path)
    assert list(search_distributions(mss)) == ["scale", "bias", "memory_stride", "multimask", "admit_score"]
    for type_study in studies.values():
        complete = type_study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == 12
        searched = [t for t in complete if not t.user_attrs.get("baseline")]
        assert len(searched) == 10
        for trial in searched:
            assert set(trial.params) == {"scale", "bias", "admit_score", "memory_stride", "multimask"}
            assert -2.0 <= trial.params["admit_score"] <= 2.0 and trial.params["memory_stride"] in (1, 2, 3)
            assert isinstance(trial.distributions["memory_stride"], optuna.distributions.IntDistribution)
            assert trial.params["multimask"] in (None, 0, 1)
            knobs = Knobs(trial.params["scale"], trial.params["bias"], memory_stride=trial.params["memory_stride"],
                          multimask=trial.params["multimask"], admit_score=trial.params["admit_score"])
            assert knobs in scorer.received  # the pass ran exactly the trial's configuration
        # the value told is the objective of the trial's full configuration, not of (scale, bias) alone
        objects = validation_objects()
        rows = objects[objects.scene_type == type_study.study_name.split("/")[-1]]
        trial = searched[-1]
        knobs = Knobs(**trial.params)
        expected = sum(KnobScorer.jf(r.video, r.object_id, knobs) for r in rows.itertuples()) / len(rows)
        assert trial.value == pytest.approx(expected)
    assert all(isinstance(config, Knobs) for config in scorer.received)


def test_baselines_are_seeded_once_at_default_knobs(tmp_path):
    studies, scorer, _, mss, opened = _search(tmp_path, trials=6, batch=3)
    for type_study in studies.values():
        baselines = [t for t in type_study.trials if t.user_attrs.get("baseline")]
        assert [t.params for t in baselines] == [{"scale": 20.0, "bias": -10.0}, {"scale": 7.5, "bias": -4.0}]
        assert [t.number for t in baselines] == [0, 1]
    assert Knobs(20.0, -10.0) in scorer.received and Knobs(7.5, -4.0) in scorer.received
    table = trials_table(studies)
    assert set(table[table.baseline].config) == {"s20_b-10", "s7.5_b-4"}
    assert table[table.baseline].admit_score.isna().all()  # absent, i.e. the policy off
    # reopening (a rerun, a second worker) enqueues nothing new
    again = open_type_studies(opened, "val", ["regular", "small"], mss)
    assert all(len(s.get_trials(states=(TrialState.WAITING,))) == 0 for s in again.values())


def test_resuming_a_study_with_other_knobs_is_refused(tmp_path):
    _, _, _, _, opened = _search(tmp_path, trials=2, batch=2)
    with pytest.raises(MassegError, match="--knobs scale,bias,memory_stride,multimask,admit_score"):
        open_type_studies(opened, "val", ["regular"], MssSection())


@pytest.mark.parametrize("sampler", ["random", "grid"])
def test_grid_and_random_samplers_take_mixed_spaces(tmp_path, sampler):
    grid = make_sampler("grid", 0, MssSection(grid_points=3, space=SPACE))._search_space
    assert grid["memory_stride"] == [1, 2, 3] and grid["multimask"] == [None, 0, 1] and grid["admit_score"] == [-2.0, 0.0, 2.0]
    grid = make_sampler("grid", 0, MssSection(grid_points=2, space=SPACE))._search_space
    assert grid["memory_stride"] == [1, 3] and grid["admit_score"] == [-2.0, 2.0]  # a longer int range: spaced values
    studies, *_ = _search(tmp_path, trials=5, batch=5, sampler=sampler)
    assert all(len(s.get_trials(states=(TrialState.COMPLETE,))) == 5 for s in studies.values())


def test_importances_name_the_knobs_and_flag_few_trials(tmp_path):
    studies, *_ = _search(tmp_path, trials=12, batch=4)
    importances = knob_importances(studies)
    assert set(importances.knob) == {"scale", "bias", "admit_score", "memory_stride", "multimask"}
    for scene_type, group in importances.groupby("scene_type"):
        assert group.importance.sum() == pytest.approx(1.0)
        assert group.reliable.all() and (group.complete_trials == 12).all()
    few, *_ = _search(tmp_path / "few", trials=4, batch=4)
    assert not knob_importances(few).reliable.any()


def _config(tmp_path, data_root, space=None):
    mss = {"trials": 6, "batch": 3, "cv_folds": 2, "bootstrap": 50, "results_dir": str(tmp_path / "results"),
           "artifact_dir": str(tmp_path / "artifacts"), "storage": f"sqlite:///{tmp_path}/studies.db"}
    if space is not None:
        mss["space"] = space
    return config_from_dict({"model": {"config": "tiny64", "device": "cpu"}, "data": {"root": str(data_root)},
                             "mss": mss})


def test_tune_mss_with_knobs_writes_them_to_best_configs_and_plots(tmp_path, tiny_dataset, monkeypatch):
    monkeypatch.chdir(tmp_path)
    scorer = KnobScorer()
    result = tune_mss(_config(tmp_path, tiny_dataset, {"admit_score": {"low": -1.0, "high": 1.5}}), study="knobs",
                      scorer=scorer, progress=False, knobs=["scale", "bias", "admit_score", "memory_stride"])
    out = tmp_path / "results" / "knobs"
    best = load_best_configs(out / "best_configs.yaml")
    assert best.types == result.best.types
    trials = pd.read_csv(out / "trials.csv")
    per_type = pd.read_csv(out / "per_type.csv")
    for row in per_type.itertuples():
        chosen = best.types[row.scene_type]
        assert knobs_id(chosen) == row.config
        complete = trials[(trials.scene_type == row.scene_type) & (trials.state == "COMPLETE")]
        assert row.config == complete.loc[complete.jf.idxmax(), "config"]
    searched = trials[~trials.baseline & (trials.state == "COMPLETE")]
    assert searched.admit_score.between(-1.0, 1.5).all()  # the declared range, not the default -2..2
    assert searched.memory_stride.between(1, 4).all()  # not declared: the built-in default range
    held = pd.read_csv(out / "holdout_objects.csv")
    assert {"chosen_config", "chosen_scale", "chosen_bias"} <= set(held.columns)
    for name in ("importance.png", "importance.csv", *(f"slices_{t}.png" for t in best.types)):
        assert (out / name).is_file(), name
    with pytest.raises(MassegError, match="searches the knobs"):  # the same study with other knobs
        tune_mss(_config(tmp_path, tiny_dataset), study="knobs", scorer=KnobScorer(), progress=False)


def test_cli_knobs_flag_and_its_errors(tmp_path, tiny_dataset, monkeypatch):
    args = build_parser().parse_args(["tune-mss", "--knobs", "scale, bias,admit_score", "--study", "x"])
    assert args.knobs == ["scale", "bias", "admit_score"]
    config = _config(tmp_path, tiny_dataset)
    with pytest.raises(MassegError, match="did you mean 'admit_score'"):
        tune_mss(config, knobs=["scale", "bias", "admit_scor"], scorer=KnobScorer(), progress=False)
    with pytest.raises(MassegError, match="--knobs scale,bias,admit_score"):
        tune_mss(config, knobs=["admit_score"], scorer=KnobScorer(), progress=False)


def test_config_space_errors_name_the_key_and_the_fix():
    with pytest.raises(MassegError, match=r"unknown key 'mss.space.memory_strid' \(did you mean 'mss.space.memory_stride'\?\)"):
        config_from_dict({"mss": {"space": {"memory_strid": {"type": "int", "low": 1, "high": 2}}}})
    with pytest.raises(MassegError, match="memory_stride is an integer knob"):
        config_from_dict({"mss": {"space": {"memory_stride": {"type": "float", "low": 1, "high": 2}}}})
    with pytest.raises(MassegError, match="obj_ptrs must be >= 2"):
        config_from_dict({"mss": {"space": {"obj_ptrs": {"type": "int", "low": 1, "high": 8}}}})
    with pytest.raises(MassegError, match="multimask must be 0 or 1"):
        config_from_dict({"mss": {"space": {"multimask": {"choices": [0, 2]}}}})
    with pytest.raises(MassegError, match="low 2.0 is above high 1.0"):
        config_from_dict({"mss": {"space": {"admit_iou": {"low": 2, "high": 1}}}})
    space = config_from_dict({"mss": {"space": {"keep_present": {"low": 0, "high": 2}}}}).mss.space
    assert space.keep_present.type == "int" and list(space.searched()) == ["scale", "bias", "keep_present"]


def test_a_searched_trial_at_baseline_scale_and_bias_is_not_a_baseline():
    from masseg_search.mss.pruning import is_baseline

    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"scale": 20.0, "bias": -10.0, "admit_score": 0.5})
    searched = study.ask()
    for name in ("scale", "bias", "admit_score"):
        searched.suggest_float(name, -100, 100)
    study.enqueue_trial({"scale": 20.0, "bias": -10.0})
    plain = study.ask()
    plain.suggest_float("scale", 1, 40)
    plain.suggest_float("bias", -20, 0)
    assert not is_baseline(searched) and is_baseline(plain)  # only the knob-less 20/-10 is SAM2's default
