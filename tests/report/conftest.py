"""Fixtures for the report and viewer tests: a small results folder in the formats the stages write, built here."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from masseg_search.data.layout import open_dataset, read_mask, write_mask
from masseg_search.ensemble import FusionPlan, RuleSpec, save_plan
from masseg_search.evaluation import evaluate_predictions
from masseg_search.finetune.sweep import ResultsTable
from masseg_search.mss.holdout import HoldoutResult, summarize
from masseg_search.mss.outputs import per_type_table
from masseg_search.store import predictions
from masseg_search.store.best_configs import BestConfigs, save_best_configs


def write_shifted_prediction(dataset_root: Path, out: Path, shift: int, videos: list[str] | None = None) -> Path:
    """An Annotations-style prediction: the ground truth rolled ``shift`` pixels right (0 = perfect)."""
    dataset = open_dataset(dataset_root, split="val")
    for name in videos or dataset.video_names:
        video = dataset.video(name)
        for path in video.annotation_paths():
            write_mask(out / name / path.name, np.roll(read_mask(path), shift, axis=1))
    return out


def write_stored_prediction(dataset_root: Path, predictions_root: Path, video_name: str, scale: float, bias: float,
                            low_res: int = 16) -> Path:
    """A stored-predictions configuration folder made from the ground truth (confident low-res logits)."""
    video = open_dataset(dataset_root).video(video_name)
    masks = [read_mask(p) for p in video.annotation_paths()]
    height, width = masks[0].shape
    ids = [int(i) for i in np.unique(masks[0]) if i]
    stored = predictions.VideoPrediction(video_name, video.frame_names, height, width, ids, {i: 0 for i in ids},
                                         scale=scale, bias=bias)
    for object_id in ids:
        planes = [cv2.resize(np.where(m == object_id, 8.0, -8.0).astype(np.float32), (low_res, low_res),
                             interpolation=cv2.INTER_AREA) for m in masks]
        stored.logits[object_id] = np.stack(planes).astype(np.float16)
        stored.object_scores[object_id] = np.ones(len(masks), np.float32)
    config_dir = predictions_root / predictions.config_id(scale, bias)
    predictions.save_video_prediction(config_dir / video_name, stored)
    return config_dir


def build_results_dir(root: Path, dataset_root: Path) -> Path:
    """A results folder with one sweep, one MSS study, one fusion choice and two evaluations (one with overlays)."""
    rng = np.random.default_rng(0)
    results = root / "results"

    # Sweep (results.csv written by masseg_search.finetune.sweep's own ResultsTable, Ray trial folders with
    # progress.csv): 4 trials, 3 epochs max, c and d stopped by ASHA after 1 epoch.
    sweep = results / "sweeps" / "demo"
    table = ResultsTable(sweep, ["loss.dice", "augment.hflip", "lr"], max_epochs=3)
    for index, trial_id in enumerate(["a0001", "b0002", "c0003", "d0004"]):
        epochs = 3 if index < 2 else 1
        curve = np.clip(0.3 + 0.1 * index * (-1) ** index + 0.08 * np.arange(1, epochs + 1) + rng.normal(0, 0.01, epochs), 0, 1)
        trial_dir = sweep / f"run_trial_{trial_id}_{index}_lr=0.0003"
        trial_dir.mkdir(parents=True)
        rows = pd.DataFrame({"val_jf": curve, "epoch": np.arange(1, epochs + 1), "trial_id": trial_id,
                             "training_iteration": np.arange(1, epochs + 1), "time_total_s": 10.0 * np.arange(1, epochs + 1)})
        if index == 3:  # only Ray's result.json (JSON lines), as an older or interrupted trial may have
            (trial_dir / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows.to_dict("records")))
        else:
            rows.to_csv(trial_dir / "progress.csv", index=False)
        params = {"loss.dice": float(rng.uniform(0.5, 2)), "augment.hflip": float(rng.uniform(0, 1)),
                  "lr": float(10 ** rng.uniform(-4, -3))}
        for epoch, value in enumerate(curve, 1):
            table.on_result(trial_id, params, {"training_iteration": epoch, "epoch": epoch, "val_jf": float(value)})
            table.on_checkpoint(trial_id, params, {"val_jf": float(value)}, str(trial_dir / f"checkpoint_{epoch:06d}"))
        table.on_status(trial_id, params, "TERMINATED")

    # MSS study (the tables of masseg_search.mss.outputs and .holdout): two scene types, the two baselines
    # enqueued in each, 8 finished trials and one failed per type, a held-out estimate over 2 folds.
    study = results / "mss" / "val"
    study.mkdir(parents=True)
    rows = []
    for scene_type in ("regular", "small"):
        points = [(20.0, -10.0), (7.5, -4.0)] + [(float(10 ** rng.uniform(0, 1.6)), float(rng.uniform(-20, 0))) for _ in range(6)]
        for number, (scale, bias) in enumerate(points):
            rows.append({"scene_type": scene_type, "number": number, "state": "COMPLETE",
                         "config": predictions.config_id(scale, bias), "scale": scale, "bias": bias,
                         "jf": float(0.6 - 0.002 * abs(scale - 12) - 0.003 * abs(bias + 6) + rng.normal(0, 0.005)),
                         "baseline": number < 2, "worker": "w0"})
        rows.append({"scene_type": scene_type, "number": len(points), "state": "FAIL", "config": "s3_b-1",
                     "scale": 3.0, "bias": -1.0,
                     "jf": None, "baseline": False, "worker": "w0"})
    trials = pd.DataFrame(rows)
    objects = pd.DataFrame({"video": [f"v{i // 2}" for i in range(12)], "object_id": [1 + i % 2 for i in range(12)],
                            "scene_type": ["regular"] * 8 + ["small"] * 4})
    held = objects.assign(fold=[i % 2 for i in range(12)], chosen_config="s12_b-6", chosen_scale=12.0, chosen_bias=-6.0, chosen_from="search",
                          jf_chosen=rng.uniform(0.5, 0.7, 12), jf_sam2_default=rng.uniform(0.45, 0.65, 12),
                          jf_masseg=rng.uniform(0.45, 0.65, 12))
    holdout = HoldoutResult([["v0", "v2", "v4"], ["v1", "v3", "v5"]], held, summarize(held, 200, 0))
    per_type = per_type_table(trials, objects, holdout)
    trials.to_csv(study / "trials.csv", index=False)
    per_type.to_csv(study / "per_type.csv", index=False)
    held.to_csv(study / "holdout_objects.csv", index=False)
    holdout.summary.to_csv(study / "holdout_summary.csv", index=False)
    objects.to_csv(study / "scene_types.csv", index=False)
    save_best_configs(study / "best_configs.yaml", BestConfigs(
        {row.scene_type: (row.scale, row.bias) for row in per_type.itertuples()},
        details={row.scene_type: {"jf": row.heldout_chosen, "jf_source": "heldout", "objects": row.objects}
                 for row in per_type.itertuples()}, study="val"))
    for name in ("history.png", "gains.png", "landscape_regular.png"):  # the study's own plots
        Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(study / name)

    # Fusion choice: a plan written by `ensemble --select-on` (masseg_search.ensemble's plan format) and a bare
    # candidates table.
    singles = {"s20_b-10": 0.58, "s7.5_b-4": 0.59, "s12_b-6": 0.595}
    plan = FusionPlan(RuleSpec("select"), best_configs=str(study / "best_configs.yaml"))
    plan.selection = {"chosen": "select", "jf": 0.61, "held_out": True, "folds": {"0": 1, "1": 1}, "top_k": 3,
                      "candidates": [{"name": "best-single", "jf": 0.595, "videos": 2, "objects": 4},
                                     {"name": "select", "jf": 0.61, "videos": 2, "objects": 4},
                                     {"name": "mean-top3", "jf": 0.60, "videos": 2, "objects": 4}],
                      "single_configs": singles, "notes": ["vote-all not scored: needs 3 or more configurations"]}
    save_plan(results / "plans" / "val.yaml", plan)
    (results / "plans" / "hand_written.yaml").write_text("method: mean\nconfigs: [s20_b-10]\n")  # no selection: skipped
    choice = results / "submissions" / "ens"
    choice.mkdir(parents=True)
    pd.DataFrame({"candidate": ["best-single", "select-per-type", "mean-top3", "vote"], "jf": [0.58, 0.61, 0.60, 0.57],
                  "chosen": [False, True, False, False]}).to_csv(choice / "candidates.csv", index=False)

    # Evaluations (written by the evaluator itself) of the val split: a perfect and a shifted prediction that record
    # what they scored (evaluation.json, for the overlays), and one that does not.
    scored = {}
    for name, shift in (("perfect", 0), ("shifted", 3), ("unrecorded", 1)):
        pred_root = write_shifted_prediction(dataset_root, root / "predictions" / name, shift)
        evaluation = results / "evaluations" / name
        scored[name] = evaluate_predictions(dataset_root, pred_root, split_list=dataset_root / "val.txt", progress=False)
        scored[name].write(evaluation)
        if name == "unrecorded":  # as written by an evaluator before evaluation.json existed
            (evaluation / "evaluation.json").unlink()

    # The demo's closing table and stage gains, made by the demo's own functions from the evaluations above
    # (the shifted prediction plays "fine-tuned, 20/-10", the perfect one "tuned per type").
    from masseg_search.pipeline.demo import GAINS_FILE, TABLE_FILE, _scores_row, object_jf, paired_gains

    rows = {"fine-tuned, SAM2 20/-10": scored["shifted"], "fine-tuned, MASSeg 7.5/-4": scored["unrecorded"],
            "fine-tuned, tuned per type": scored["perfect"]}
    demo_table = pd.DataFrame([_scores_row(name, "fixture", result, 200, 0).__dict__ for name, result in rows.items()])
    demo_table.to_csv(results / TABLE_FILE, index=False)
    paired_gains({name: object_jf(result) for name, result in rows.items()}, 200, 0).to_csv(results / GAINS_FILE,
                                                                                            index=False)
    return results


@pytest.fixture(scope="session")
def results_dir(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    """The fixture results folder (built once per session)."""
    return build_results_dir(tmp_path_factory.mktemp("report"), tiny_dataset)


@pytest.fixture(scope="session")
def shifted_prediction():
    """``write_shifted_prediction`` for the tests (helpers here are not importable: tests/ has no packages)."""
    return write_shifted_prediction


@pytest.fixture(scope="session")
def stored_prediction():
    """``write_stored_prediction`` for the tests."""
    return write_stored_prediction
