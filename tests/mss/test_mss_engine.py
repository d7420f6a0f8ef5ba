"""tune-mss on the real engine with the tiny model: slot scoring, the CLI end to end, and Ray passes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from masseg_search.cli import main
from masseg_search.cluster import start_local_ray
from masseg_search.config import load_config
from masseg_search.data.layout import open_dataset
from masseg_search.errors import MassegError
from masseg_search.evaluation import score_video
from masseg_search.mss.passes import EnginePassWorker, LocalPassScorer, RayPassScorer, load_ground_truth
from masseg_search.mss.tune import tune_mss
from masseg_search.store.best_configs import load_best_configs
from masseg_search.store.predictions import config_id, logits_to_mask


@pytest.fixture(scope="module")
def visible_checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny random checkpoint with the object-score head biased to 'present' (+10), so masks are non-empty
    and depend on (scale, bias); with plain random weights every object is predicted absent (J&F 0)."""
    import torch

    checkpoint = torch.load(tiny_checkpoint, weights_only=True)
    checkpoint["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 10.0
    path = tmp_path_factory.mktemp("mss_checkpoint") / "tiny64_visible.pt"
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def worker(visible_checkpoint, tiny_dataset) -> EnginePassWorker:
    return EnginePassWorker("tiny64", str(visible_checkpoint), str(tiny_dataset), "cpu", feature_cache_mb=64, threads=1)


def _pass_configs(tiny_dataset: Path) -> dict[str, dict[int, list[tuple[float, float]]]]:
    configs = {}
    for name in open_dataset(tiny_dataset, split="val").video_names:
        ids = sorted(int(i) for i in np.unique(open_dataset(tiny_dataset).video(name).first_annotation()[1]) if i)
        # objects get different configurations in the same slot, as different scene types do
        configs[name] = {obj: [(20.0, -10.0), (7.5, -4.0), (2.0 + obj, -1.0 * obj)] if obj % 2 else
                         [(3.0, -1.0), (20.0, -10.0), (40.0, -20.0)] for obj in ids}
    return configs


def test_each_slot_scores_like_its_own_run(worker, tiny_dataset):
    configs = _pass_configs(tiny_dataset)
    scores = LocalPassScorer(worker, progress=False)(configs)
    values = []
    for video_name, per_object in configs.items():
        video = worker.dataset.video(video_name)
        gt = load_ground_truth(video)
        for slot in range(3):  # the same slot, run alone: each object under only its slot-th configuration
            alone = worker.engine.predict_video(video, {obj: [c[slot]] for obj, c in per_object.items()})
            ids = sorted(per_object)
            logits = np.stack([alone[config_id(*per_object[obj][slot])].logits[obj] for obj in ids], axis=1)
            masks = np.stack([logits_to_mask(frame, ids, *gt.shape[1:]) for frame in logits])
            expected = score_video(gt, masks, ids).object_j_and_f_means()
            for obj in ids:
                assert scores[video_name][obj][slot] == pytest.approx(expected[obj], abs=1e-6)
                values.append(expected[obj])
    assert max(values) > 0.01 and len(set(np.round(values, 6))) > 3  # real, configuration-dependent scores
    hits = worker.cache_stats()["hits"]
    assert LocalPassScorer(worker, progress=False)(configs) == scores  # a second pass: same scores ...
    assert worker.cache_stats()["hits"] > hits  # ... with the image features reused from the first


@pytest.mark.slow  # starting Ray and two model actors: ~25 s on the shared 2-core machine
def test_ray_passes_match_local(worker, visible_checkpoint, tiny_dataset, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    start_local_ray(num_cpus=2)
    try:
        configs = _pass_configs(tiny_dataset)
        remote = RayPassScorer("auto", "tiny64", str(visible_checkpoint), str(tiny_dataset), 64, progress=False)
        assert len(remote.actors) == 2
        assert remote(configs) == LocalPassScorer(worker, progress=False)(configs)
        with pytest.raises(MassegError, match="no free CPU"):  # both CPUs are held: a clear error, not a hang
            RayPassScorer("auto", "tiny64", str(visible_checkpoint), str(tiny_dataset), 64, wait_seconds=0)
        remote.close()
        # the whole stage with --ray-address: passes on the actors, Optuna storage (a journal file) in the driver
        monkeypatch.chdir(tmp_path)
        config = load_config(_write_config(tmp_path, tiny_dataset, visible_checkpoint))
        result = tune_mss(config, trials=3, batch=3, cv=0, storage=f"journal:{tmp_path}/val.log", ray_address="auto",
                          progress=False)
        trials = pd.read_csv(result.out_dir / "trials.csv")
        assert (trials.groupby("scene_type").size() == 3).all() and (trials.state == "COMPLETE").all()
        assert result.report.passes == 1
    finally:
        ray.shutdown()


def _write_config(tmp_path: Path, tiny_dataset: Path, checkpoint: Path) -> Path:
    config = {"model": {"config": "tiny64", "checkpoint": str(checkpoint), "device": "cpu"},
              "data": {"root": str(tiny_dataset)},
              "scene_types": {"default": "regular", "types": [{"name": "crowded", "when": {"num_objects": {"min": 4}}}]},
              "mss": {"trials": 4, "batch": 2, "cv_folds": 2, "bootstrap": 50, "feature_cache_mb": 64}}
    path = tmp_path / "mss.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_end_to_end_and_resume(tmp_path, tiny_dataset, visible_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = _write_config(tmp_path, tiny_dataset, visible_checkpoint)
    assert main(["tune-mss", "--study", "val", "--config", str(config), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "held-out J&F (chosen)" in printed and "optuna-dashboard sqlite:///studies/val.db" in printed
    out = tmp_path / "results" / "mss" / "val"
    best = load_best_configs(out / "best_configs.yaml")
    assert best.checkpoint == str(visible_checkpoint) and best.model_config == "tiny64"
    trials = pd.read_csv(out / "trials.csv")
    assert (trials.groupby("scene_type").size() == 4).all() and trials.jf.max() > 0.01
    assert main(["tune-mss", "--study", "val", "--config", str(config), "--trials", "6", "--cv", "0", "--no-progress"]) == 0
    assert (pd.read_csv(out / "trials.csv").groupby("scene_type").size() == 6).all()  # resumed: 4 kept, 2 added
    assert main(["tune-mss", "--config", str(config), "--storage", "postgresql://u:pw@127.0.0.1/db"]) == 1
    assert "PGPASSWORD" in capsys.readouterr().err


def _one_pass(worker: EnginePassWorker, objects: pd.DataFrame, pruner: str) -> tuple[list, list[tuple[str, int]]]:
    """One search pass of 6 trials (seed 3) on ``objects``: the trials and the engine's batch rows per video."""
    import optuna

    from masseg_search.config import MssSection
    from masseg_search.mss.search import run_batched_search
    from masseg_search.mss.studies import StudyStorage, open_type_studies

    rows_per_video: list[tuple[str, int]] = []
    score_video_ = worker.score_video

    def counting(video_name, configs):  # the engine's batch rows (object x distinct configuration) per video
        result = score_video_(video_name, configs)
        rows_per_video.append((video_name, worker.engine.last_rows))
        return result

    worker.score_video = counting
    try:
        mss = MssSection(trials=6, batch=6, seed=3)
        opened = StudyStorage(optuna.storages.InMemoryStorage(), "memory", heartbeat_interval=60, grace_period=180)
        studies = open_type_studies(opened, "val", ["regular"], mss)
        run_batched_search(studies, opened, objects, LocalPassScorer(worker, progress=False), 6, 6, space_mss=mss,
                           progress=False, pruner=pruner, max_passes=1)
    finally:
        worker.score_video = score_video_
    return studies["regular"].trials, rows_per_video


@pytest.mark.parametrize("chunk_by_config", [True, False])
def test_pruned_rows_leave_the_engine_pass_and_the_others_score_the_same(worker, visible_checkpoint, tiny_dataset,
                                                                        chunk_by_config):
    """One pass of 6 trials over the 8 tiny videos (one scene type), without and with successive halving."""
    from optuna.trial import TrialState

    from masseg_search.config import SceneTypesSection
    from masseg_search.data.scene_types import scene_type_table

    if chunk_by_config:
        worker = EnginePassWorker("tiny64", str(visible_checkpoint), str(tiny_dataset), "cpu", feature_cache_mb=64,
                                  threads=1, chunk_by_config=True)
    objects = scene_type_table(open_dataset(tiny_dataset), SceneTypesSection(types=[]))[["video", "object_id", "scene_type"]]
    assert objects.scene_type.nunique() == 1 and objects.video.nunique() == 8
    plain, plain_rows = _one_pass(worker, objects, "none")
    pruned, pruned_rows = _one_pass(worker, objects, "sha")
    objects_in = objects.groupby("video").size().to_dict()
    assert all(rows == 6 * objects_in[video] for video, rows in plain_rows)  # 6 distinct configurations each
    assert [t.params for t in plain] == [t.params for t in pruned]  # same seed: the same six trials
    # rung 1 is after 1 of the 8 videos: the top 6 // 3 = 2 trials go on, and the baselines, never pruned
    rung = sorted((t.user_attrs["sha_rung0_jf"] for t in pruned), reverse=True)
    going_on = [t for t in pruned if t.user_attrs["sha_rung0_jf"] >= rung[1] or t.user_attrs.get("baseline")]
    assert [t.state for t in going_on] == [TrialState.COMPLETE] * len(going_on) and 2 <= len(going_on) <= 4
    stopped = [t for t in pruned if t.state == TrialState.PRUNED]
    assert len(stopped) == 6 - len(going_on) and all(t.user_attrs["videos_scored"] == 1 for t in stopped)
    # the pruned trials' rows left the pass: after the first video only the trials still running are tracked
    assert pruned_rows[0][1] == 6 * objects_in[pruned_rows[0][0]] and len(pruned_rows) == 8
    assert all(rows == len(going_on) * objects_in[video] for video, rows in pruned_rows[1:])
    for a, b in zip(plain, pruned):
        reported = b.intermediate_values
        if chunk_by_config:  # each configuration its own batch: the rows that stayed score bit for bit the same
            assert b.state != TrialState.COMPLETE or (b.value == a.value and reported == a.intermediate_values)
            assert all(a.intermediate_values[step] == value for step, value in reported.items())
        else:  # one batch of all rows: its size changes the float rounding, near-zero logits can flip a few pixels
            assert b.state != TrialState.COMPLETE or b.value == pytest.approx(a.value, abs=2e-3)
            assert all(a.intermediate_values[step] == pytest.approx(value, abs=1e-2) for step, value in reported.items())


def test_cli_pruner_flag_ends_trials_pruned(tmp_path, tiny_dataset, visible_checkpoint, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config_path = _write_config(tmp_path, tiny_dataset, visible_checkpoint)
    config = yaml.safe_load(config_path.read_text())
    videos = tmp_path / "all_videos.txt"  # all 8 tiny videos, one scene type: rungs fall inside the pass
    videos.write_text("\n".join(open_dataset(tiny_dataset).video_names) + "\n")
    config["mss"]["split"] = str(videos)
    config["scene_types"] = {"default": "regular", "types": []}
    config_path.write_text(yaml.safe_dump(config))
    assert main(["tune-mss", "--config", str(config_path), "--trials", "6", "--batch", "6", "--cv", "0", "--pruner",
                 "sha", "--no-progress"]) == 0
    assert "pruned:" in capsys.readouterr().out
    trials = pd.read_csv(tmp_path / "results" / "mss" / "val" / "trials.csv")
    pruned = trials[trials.state == "PRUNED"]
    assert len(pruned) and pruned.jf.notna().all() and (pruned.videos_scored < trials.videos_scored.max()).all()
    assert (trials[trials.baseline].state == "COMPLETE").all()
