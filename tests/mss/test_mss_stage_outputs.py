"""tune_mss end to end on the synthetic dataset (objective injected): outputs, held-out folds, dashboard."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from mss_synthetic_objective import SyntheticScorer, object_jf

from masseg_search.config import config_from_dict
from masseg_search.errors import MassegError
from masseg_search.mss.holdout import bootstrap_ci, video_folds
from masseg_search.mss.studies import open_storage
from masseg_search.mss.tune import tune_mss
from masseg_search.store.best_configs import load_best_configs


def _config(tmp_path: Path, data_root: Path, **mss):
    values = {"model": {"config": "tiny64", "device": "cpu"}, "data": {"root": str(data_root)},
              "scene_types": {"default": "regular", "types": [{"name": "crowded", "when": {"num_objects": {"min": 4}}}]},
              "mss": {"trials": 6, "batch": 3, "cv_folds": 2, "bootstrap": 100, "results_dir": str(tmp_path / "results"),
                      "artifact_dir": str(tmp_path / "artifacts"), **mss}}
    return config_from_dict(values)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_dataset):
    tmp_path = tmp_path_factory.mktemp("tune_mss")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        scorer = SyntheticScorer()
        result = tune_mss(_config(tmp_path, tiny_dataset), study="val", scorer=scorer, progress=False)
    return tmp_path, result, scorer


def test_outputs_and_honest_heldout_estimate(finished_run, tiny_dataset, monkeypatch):
    tmp_path, result, scorer = finished_run
    monkeypatch.chdir(tmp_path)
    assert result.storage_url == "sqlite:///studies/val.db" and (tmp_path / "studies" / "val.db").is_file()
    out = tmp_path / "results" / "val"
    best = load_best_configs(out / "best_configs.yaml")
    objects = pd.read_csv(out / "scene_types.csv")
    assert set(best.types) == set(objects.scene_type) and best.study == "val"
    folds = json.loads((out / "folds.json").read_text())
    val_videos = (tiny_dataset / "val.txt").read_text().split()
    assert sorted(v for fold in folds.values() for v in fold) == sorted(val_videos)  # disjoint, complete
    held = pd.read_csv(out / "holdout_objects.csv")
    assert len(held) == len(objects)  # every object scored once, on the fold it was held out in
    for row in held.itertuples():
        assert row.video in folds[str(row.fold)]
        # the chosen config came from the studies of the OTHER folds only
        cv_study = optuna.load_study(study_name=f"val/cv{row.fold}/{row.scene_type}", storage=result.storage_url) \
            if row.chosen_from == "search" else None
        if cv_study is not None:
            assert (cv_study.best_params["scale"], cv_study.best_params["bias"]) == (row.chosen_scale, row.chosen_bias)
            tuned_on = {t.user_attrs.get("objects") for t in cv_study.trials}
            assert tuned_on == {int(((objects.scene_type == row.scene_type) & ~objects.video.isin(folds[str(row.fold)])).sum())}
        assert row.jf_chosen == pytest.approx(object_jf(row.video, row.object_id, row.chosen_scale, row.chosen_bias))
        assert row.jf_sam2_default == pytest.approx(object_jf(row.video, row.object_id, 20.0, -10.0))
        assert row.jf_masseg == pytest.approx(object_jf(row.video, row.object_id, 7.5, -4.0))
    summary = pd.read_csv(out / "holdout_summary.csv")
    overall = summary[summary.scene_type == "all"].set_index("method")
    assert overall.loc["chosen", "jf"] == pytest.approx(held.jf_chosen.mean())
    assert overall.loc["chosen", "ci_low"] <= overall.loc["chosen", "jf"] <= overall.loc["chosen", "ci_high"]
    per_type = pd.read_csv(out / "per_type.csv").set_index("scene_type")
    for scene_type, detail in best.details.items():  # the reported J&F is the held-out one, not the in-sample best
        assert detail["jf_source"] == "heldout"
        assert detail["jf"] == pytest.approx(per_type.loc[scene_type, "heldout_chosen"])
        assert detail["jf_in_sample"] == pytest.approx(per_type.loc[scene_type, "jf_in_sample"])
    trials = pd.read_csv(out / "trials.csv")
    assert (trials.groupby("scene_type").size() == 6).all()
    for name in ["history.png", "gains.png", *[f"landscape_{t}.png" for t in best.types]]:
        assert (out / name).stat().st_size > 1000


def test_rerun_resumes_without_new_trials(finished_run, tiny_dataset, monkeypatch):
    tmp_path, first, _ = finished_run
    monkeypatch.chdir(tmp_path)
    scorer = SyntheticScorer()
    again = tune_mss(_config(tmp_path, tiny_dataset), study="val", scorer=scorer, progress=False)
    assert again.report.passes == 0
    assert len(scorer.calls) == 2  # only the two held-out scoring passes, no search pass
    assert again.best.types == first.best.types


def test_study_annotations_and_dashboard_server(finished_run, monkeypatch):
    tmp_path, result, _ = finished_run
    monkeypatch.chdir(tmp_path)
    storage = open_storage(result.storage_url, "val").storage
    study = optuna.load_study(study_name="val/crowded", storage=storage)
    assert study.user_attrs["scene_type_rule"] == "num_objects >= 4"
    assert study.user_attrs["objects"] > 0 and study.user_attrs["videos"] > 0
    assert study.user_attrs["checkpoint"] == "random weights"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    server = subprocess.Popen([str(dashboard), result.storage_url, "--artifact-dir", str(tmp_path / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--quiet"], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        listing = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    listing = json.load(response)
                break
            except OSError:
                time.sleep(0.2)
        assert listing is not None, server.stderr.read1().decode() if server.poll() is not None else "no answer"
        names = {s["study_name"]: s["study_id"] for s in listing["study_summaries"]}
        assert {"val/crowded", "val/regular"} <= set(names)
        assert any(name.startswith("val/cv0/") for name in names) and any(name.startswith("val/cv1/") for name in names)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{names['val/crowded']}", timeout=5) as response:
            detail = json.load(response)
        attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
        assert attrs["scene_type_rule"] == "num_objects >= 4"
        assert "Held-out estimate" in detail["note"]["body"] and "Chosen configuration" in detail["note"]["body"]
        artifact_names = {a["filename"] for a in detail["artifacts"]}
        assert {"landscape_crowded.png", "history.png", "gains.png"} <= artifact_names
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_folds_and_bootstrap():
    videos = [f"v{i}" for i in range(7)]
    folds = video_folds(videos, 3, seed=0)
    assert sorted(sum(folds, [])) == videos and [len(f) for f in folds] in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
    assert folds == video_folds(list(reversed(videos)), 3, seed=0)
    with pytest.raises(MassegError, match="at least 3"):
        video_folds(["a", "b"], 3, seed=0)
    values = pd.Series([0.2, 0.4, 0.6, 0.8])
    low, high = bootstrap_ci(values, pd.Series(["a", "a", "b", "c"]), samples=2000, seed=0)
    assert 0.2 - 1e-9 <= low < values.mean() < high <= 0.8 + 1e-9
    same = bootstrap_ci(pd.Series([0.5] * 4), pd.Series(["a", "b", "c", "d"]), 100, 0)
    assert np.allclose(same, 0.5)
