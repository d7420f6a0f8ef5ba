"""The stages on a real two-node Ray cluster on this machine (127.0.0.1 only, one logical GPU per node): infer,
ensemble and evaluate give the files of a local run, a killed worker loses only its video, train-sweep puts two
1-GPU trials on the two nodes at once, tune-mss passes run on both nodes' GPUs with Optuna on PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from ray_processes import command_line, descendants, is_loopback, listening

from masseg_search.cluster import loopback_cluster, loopback_only, shared
from masseg_search.cluster.evaluate import evaluate_on_ray
from masseg_search.config import config_from_dict
from masseg_search.ensemble import plan_from_dict, run_ensemble
from masseg_search.errors import MassegError
from masseg_search.evaluation import evaluate_predictions
from masseg_search.finetune.sweep import run_sweep
from masseg_search.inference import run_inference, run_inference_on_ray

PROJECT = Path(__file__).resolve().parents[2]
CONFIGS = "20,-10;7.5,-4"
VIDEOS = ["video_0000", "video_0001", "video_0002"]


@pytest.fixture(scope="module")
def two_nodes():
    """Two Ray nodes at 127.0.0.1 (1 CPU and 1 logical GPU each), this process connected as a driver."""
    import ray

    assert not ray.is_initialized(), "another test left its Ray connected"
    with loopback_cluster([{"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 1, "num_gpus": 1}]) as cluster:
        with loopback_only():
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        try:
            yield cluster
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def split(tiny_dataset, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster_split") / "three.txt"
    path.write_text("\n".join(VIDEOS) + "\n")
    return path


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny random checkpoint with objects scored present, so the masks are not all empty."""
    import torch

    state = torch.load(tiny_checkpoint, weights_only=True)
    state["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 10.0
    path = tmp_path_factory.mktemp("cluster_checkpoint") / "tiny64_visible.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def local_predictions(tiny_dataset, split, checkpoint, tmp_path_factory) -> Path:
    """A plain local infer (one torch thread, as each 1-CPU Ray worker runs), masks saved."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("cluster_local") / "predictions"
        return run_inference("tiny64", checkpoint, tiny_dataset, out, CONFIGS, split_list=split, save_masks=True,
                             device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)


def files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_cluster_listens_on_127_0_0_1_only(two_nodes) -> None:
    sockets = listening(descendants(os.getpid()))
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in sockets}
    assert [socket for socket in sockets if not is_loopback(socket[1])] == []


def test_infer_on_the_cluster_writes_the_same_files_as_a_local_run(two_nodes, tiny_dataset, split, checkpoint,
                                                                    local_predictions, tmp_path) -> None:
    out = tmp_path / "predictions"
    env = dict(os.environ, PYTHONPATH=str(PROJECT), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")  # joins 127.0.0.1 as given
    done = subprocess.run([sys.executable, "-m", "masseg_search", "infer", "--model-config", "tiny64", "--checkpoint",
                           str(checkpoint), "--data", str(tiny_dataset), "--split-list", str(split), "--configs", CONFIGS,
                           "--out", str(out), "--save-masks", "--device", "cpu", "--no-progress",
                           "--ray-address", two_nodes.address], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3 videos run, 0 already done, by 2 Ray workers" in done.stdout
    assert files(out) == files(local_predictions)  # logits, meta.json, masks and the run record, bit for bit


def _killer(out: Path, stop: threading.Event, killed: list[int], inodes: dict[str, int]) -> None:
    """SIGKILL the first worker process seen running a video (its first: building the model, then tracking), while
    the other worker goes on; meanwhile note the inode of every meta.json as it appears (a video redone after it
    was complete would get a new one)."""
    while not stop.is_set():
        for meta in out.glob("s20_b-10/*/meta.json"):
            try:
                inodes.setdefault(meta.parent.name, meta.stat().st_ino)
            except FileNotFoundError:
                pass
        if not killed:
            for pid in descendants(os.getpid()):  # only the workers of this test's own cluster
                if command_line(pid).startswith("ray::InferWorker.infer"):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
        time.sleep(0.01)


def test_a_killed_worker_loses_only_its_video_and_the_run_resumes(two_nodes, tiny_dataset, split, checkpoint,
                                                                    tmp_path) -> None:
    out = tmp_path / "predictions"
    stop, killed, inodes = threading.Event(), [], {}
    watcher = threading.Thread(target=_killer, args=(out, stop, killed, inodes), daemon=True)
    watcher.start()
    try:
        result = run_inference_on_ray(two_nodes.address, "tiny64", checkpoint, tiny_dataset, out, "20,-10",
                                      split_list=split, device="cpu", progress=False)
    finally:
        stop.set()
        watcher.join()
    assert killed, "no worker was caught running a video"
    assert result.restarted_workers == 1
    # each video reported once: run, or (killed just as it finished one) found complete when Ray retried the call
    assert sorted(result.ran + result.already_done) == VIDEOS and len(result.already_done) <= 1
    for video, inode in inodes.items():  # every video finished once: none rewritten after it was complete
        assert (out / "s20_b-10" / video / "meta.json").stat().st_ino == inode

    (out / "s20_b-10" / VIDEOS[1] / "meta.json").unlink()  # half-written: its logits are there, meta.json is not
    again = run_inference_on_ray(two_nodes.address, "tiny64", checkpoint, tiny_dataset, out, "20,-10",
                                 split_list=split, device="cpu", progress=False)
    assert again.ran == [VIDEOS[1]] and sorted(again.already_done) == [VIDEOS[0], VIDEOS[2]]


def test_an_output_folder_some_node_does_not_see_is_refused(two_nodes, tiny_dataset, split, checkpoint, tmp_path,
                                                             monkeypatch) -> None:
    # the driver's marker never reaches the nodes, as on a folder local to the driver's machine
    monkeypatch.setattr(shared, "_write_marker", lambda folder: folder / f"{shared.MARKER_PREFIX}only-here")
    with pytest.raises(MassegError, match="predictions folder is not visible on Ray node 127.0.0.1") as error:
        run_inference_on_ray(two_nodes.address, "tiny64", checkpoint, tiny_dataset, tmp_path / "predictions",
                             "20,-10", split_list=split, device="cpu", progress=False)
    assert "mounts at the same path" in str(error.value)
    assert not (tmp_path / "predictions" / "s20_b-10").exists()  # refused before any video ran


def test_ensemble_and_evaluate_on_the_cluster_match_local_runs(two_nodes, tiny_dataset, split, local_predictions,
                                                               tmp_path) -> None:
    plan = plan_from_dict({"method": "mean", "configs": ["s20_b-10", "s7.5_b-4"]}, "test plan")
    local = run_ensemble(local_predictions, plan, tiny_dataset, tmp_path / "local", split_list=split, progress=False)
    remote = run_ensemble(local_predictions, plan, tiny_dataset, tmp_path / "remote", split_list=split, progress=False,
                          ray_address=two_nodes.address)
    assert not local.problems and not remote.problems and remote.frames_written == local.frames_written > 0
    assert files(tmp_path / "remote") == files(tmp_path / "local")

    masks = local_predictions / "s20_b-10" / "Annotations"
    expected = evaluate_predictions(tiny_dataset, masks, split_list=split, progress=False)
    scored = evaluate_on_ray(two_nodes.address, tiny_dataset, masks, split_list=split, progress=False)
    for table in ("global_table", "per_object", "per_frame"):
        pd.testing.assert_frame_equal(getattr(scored, table), getattr(expected, table), check_exact=True)
    assert scored.sources == expected.sources


def placement_trial(params: dict, base_config: dict) -> None:
    """Record where the trial runs and what GPU it sees, wait (up to 2 minutes) until the other trial runs too."""
    import ray
    from ray import tune

    folder = Path(base_config["train_sweep"]["storage"]) / "placement"
    folder.mkdir(exist_ok=True)
    record = {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(i) for i in ray.get_gpu_ids()],
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "started": time.time()}
    path = folder / f"{tune.get_context().get_trial_id()}.json"
    path.write_text(json.dumps(record))
    deadline = time.monotonic() + 120
    while len(list(folder.glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    record["saw_the_other_running"] = len(list(folder.glob("*.json"))) >= 2
    path.write_text(json.dumps(record))
    tune.report({"val_jf": 0.5})


def test_train_sweep_runs_two_one_gpu_trials_on_the_two_nodes_at_once(two_nodes, tiny_dataset, checkpoint,
                                                                      tmp_path) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules
    values = {"model": {"config": "tiny64", "checkpoint": str(checkpoint), "device": "cpu"},
              "data": {"root": str(tiny_dataset), "synth": None},
              "train": {"epochs": 1},
              "train_sweep": {"name": "placed", "samples": 2, "storage": str(tmp_path), "gpus_per_trial": 1,
                              "cpus_per_trial": 1, "space": {"loss.dice": {"low": 0.5, "high": 2.0}}}}
    result = run_sweep(config_from_dict(values), address=two_nodes.address, trainable=placement_trial)
    assert result.trials == 2 and result.unfinished == 0
    records = [json.loads(path.read_text()) for path in (tmp_path / "placement").glob("*.json")]
    assert len(records) == 2 and all(record["saw_the_other_running"] for record in records)
    assert len({record["node"] for record in records}) == 2  # one trial per node
    for record in records:  # each sees exactly the GPU Ray gave it on its node
        assert len(record["gpu_ids"]) == 1 and record["cuda_visible_devices"] == record["gpu_ids"][0]


def test_tune_mss_passes_run_on_both_nodes_with_optuna_on_postgresql(two_nodes, tiny_dataset, checkpoint, tmp_path,
                                                                     postgres_url, monkeypatch) -> None:
    import optuna

    from masseg_search.mss.passes import RayPassScorer
    from masseg_search.mss.studies import open_storage
    from masseg_search.mss.tune import tune_mss

    url, env = postgres_url
    monkeypatch.setenv("PGPASSWORD", env["PGPASSWORD"])
    monkeypatch.chdir(tmp_path)
    config = config_from_dict({"model": {"config": "tiny64", "checkpoint": str(checkpoint), "device": "cpu"},
                               "data": {"root": str(tiny_dataset)},
                               "mss": {"trials": 3, "batch": 2, "cv_folds": 0, "bootstrap": 20,
                                       "feature_cache_mb": 64}})
    scorer = RayPassScorer(two_nodes.address, "tiny64", str(checkpoint), str(tiny_dataset), 64, progress=False)
    try:
        placement = scorer.placement()
        assert len(placement) == 2 and len({actor["node"] for actor in placement}) == 2  # one actor per node's GPU
        assert all(len(actor["gpus"]) == 1 for actor in placement)
        result = tune_mss(config, trials=3, batch=2, cv=0, storage=url, scorer=scorer, progress=False)
    finally:
        scorer.close()
    assert result.report.passes >= 2
    trials = pd.read_csv(result.out_dir / "trials.csv")
    assert (trials.groupby("scene_type").size() == 3).all() and (trials.state == "COMPLETE").all()
    in_postgres = optuna.get_all_study_summaries(open_storage(url, "val").storage)  # studies live in PostgreSQL
    assert {f"val/{scene_type}" for scene_type in trials.scene_type} <= {study.study_name for study in in_postgres}
    assert all(study.n_trials == 3 for study in in_postgres if study.study_name.startswith("val/"))
