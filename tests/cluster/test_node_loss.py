"""train-sweep on a two-node loopback cluster that loses a node: the trial that ran there is restored from its last
checkpoint (in the shared storage_path) on the node that is left, and the sweep finishes."""
from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from masseg_search.cluster import loopback_cluster, loopback_only
from masseg_search.config import config_from_dict
from masseg_search.finetune.sweep import run_sweep


def lossy_trial(params: dict, base_config: dict) -> None:
    """Two iterations with a checkpoint each; after the first, wait for the test's go (it removes a node first).
    Every attempt logs its node and the iteration it restored from."""
    import ray
    from ray import tune

    folder = Path(base_config["train_sweep"]["storage"]) / "attempts"
    folder.mkdir(exist_ok=True)
    trial = tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    restored = json.loads((Path(checkpoint.to_directory()) / "state.json").read_text())["iteration"] if checkpoint else 0
    node = ray.get_runtime_context().get_node_id()
    with (folder / f"{trial}.jsonl").open("a") as log:
        log.write(json.dumps({"node": node, "restored_from": restored}) + "\n")
    for iteration in range(restored + 1, 3):
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / "state.json").write_text(json.dumps({"iteration": iteration}))
            tune.report({"val_jf": iteration / 10}, checkpoint=tune.Checkpoint.from_directory(scratch))
        if iteration == 1:
            (folder / f"{trial}.ready").write_text(json.dumps({"node": node, "pid": os.getpid()}))
            deadline = time.monotonic() + 180
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.2)


@pytest.mark.slow  # its own cluster, a node lost, a trial restarted: 20-45 s here, on top of the other Ray tests
def test_a_trial_on_a_lost_node_is_restored_on_the_other_node(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    import ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import test modules
    assert not ray.is_initialized(), "another test left its Ray connected"
    values = {"model": {"config": "tiny64", "checkpoint": str(tiny_checkpoint), "device": "cpu"},
              "data": {"root": str(tiny_dataset), "synth": None}, "train": {"epochs": 2},
              "train_sweep": {"name": "lossy", "samples": 2, "storage": str(tmp_path), "gpus_per_trial": 1,
                              "cpus_per_trial": 1, "max_failures": 1, "space": {"loss.dice": {"low": 0.5, "high": 2.0}},
                              "asha": {"grace_period": 2, "reduction_factor": 2}}}
    attempts = tmp_path / "attempts"
    with loopback_cluster([{"num_cpus": 1, "num_gpus": 1}, {"num_cpus": 1, "num_gpus": 1}]) as cluster:
        lost = next(iter(cluster.worker_nodes))

        def remove_the_second_node() -> None:
            """The machine goes: its Ray daemons and the trial process on it (which would outlive them a moment)."""
            deadline = time.monotonic() + 240
            while len(list(attempts.glob("*.ready"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            ready = [json.loads(path.read_text()) for path in attempts.glob("*.ready")]
            cluster.remove_node(lost, allow_graceful=False)
            for trial in ready:
                if trial["node"] == lost.node_id:
                    os.kill(trial["pid"], signal.SIGKILL)
            (attempts / "go").write_text("")

        with loopback_only():
            ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        remover = threading.Thread(target=remove_the_second_node, daemon=True)
        remover.start()
        try:
            result = run_sweep(config_from_dict(values), address=cluster.address, trainable=lossy_trial)
        finally:
            remover.join()
            ray.shutdown()
    assert result.trials == 2 and result.unfinished == 0
    logs = {path.stem: [json.loads(line) for line in path.read_text().splitlines()] for path in attempts.glob("*.jsonl")}
    moved = [log for log in logs.values() if log[0]["node"] == lost.node_id]
    assert len(moved) == 1, logs  # the trial that ran on the lost node ...
    assert len(moved[0]) == 2 and moved[0][1]["node"] != lost.node_id  # ... ran again on the other node
    assert moved[0][1]["restored_from"] == 1  # from its first checkpoint, not from scratch
