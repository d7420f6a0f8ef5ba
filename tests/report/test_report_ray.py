"""The report reads a real Ray Tune experiment folder (progress.csv, result.json, results.csv) as the sweep writes it.

The trainable is a stand-in that reports a validation J&F growing with ``loss.dice`` (no training: the sweep's own
tests cover that); what is checked is the report's reading of Ray's and the sweep's files.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from masseg_search.report import build_report, read_sweep

pytestmark = pytest.mark.slow  # starts a local Ray (about 40 s on 2 cores)


def test_report_reads_a_real_ray_sweep(tmp_path: Path) -> None:
    from masseg_search.config import load_config
    from masseg_search.finetune.sweep import run_sweep

    def stand_in_trainable(params: dict, base_config: dict) -> None:  # local: Ray ships it by value to workers
        from ray import tune

        for epoch in range(1, 4):
            tune.report({"val_jf": 0.3 + 0.02 * epoch * params["loss.dice"], "epoch": epoch})

    results = tmp_path / "results"
    config = load_config("demo", {"train_sweep.storage": str(results / "sweeps"), "train.epochs": 3,
                                  "train_sweep.samples": 4, "train_sweep.asha.grace_period": 1})
    run_sweep(config, name="probe", trainable=stand_in_trainable, cpus_per_trial=1)

    sweep = read_sweep(results / "sweeps" / "probe")
    table = pd.read_csv(results / "sweeps" / "probe" / "results.csv", dtype={"trial_id": str})
    assert sorted(sweep.progress["trial_id"].unique()) == sorted(table["trial_id"])
    assert sweep.progress.groupby("trial_id").size().to_dict() == dict(zip(table["trial_id"], table["epochs_run"]))
    assert set(sweep.parameters) == set(config.train_sweep.space)
    text = build_report(results).read_text()
    assert f"{len(table)} trials; {int(table['stopped_early'].sum())} stopped early by ASHA" in text
    assert (results / "report_files" / "sweep_probe_curves.png").is_file()
