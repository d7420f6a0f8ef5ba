"""Does the Sim term change validation J&F? The demo's fine-tuning run with Sim on against Sim off, same seeds.

    .venv/bin/python benchmarks/bench_sim_loss.py [--config configs/demo.yaml] [--seeds 0 1 2]
        [--out results/bench/sim_loss] [--samples 10000]

Two arms, each the config's ``train`` section (what every `train-sweep` trial starts from): ``sim`` as it is
(``loss.sim`` at the config's value), ``off`` with ``loss.sim: 0``.

Every (arm, seed) run is ``train_run`` (one torch thread, CPU) into ``<out>/<arm>/seed<k>``; a finished run is
reused and a killed one resumed, so the script can be rerun. The last checkpoint of each run is then scored on the
whole validation split (``data.val_split``; the runs validate on its first ``val_videos`` each epoch): mean J and F
per first-frame object. An object's J&F is averaged over seeds per arm; the difference arm - off per object is
resampled by video (``mss.holdout.bootstrap_ci``: a paired bootstrap over validation videos) for a 95% interval of
the mean difference sim - off. Per-seed means are printed too (seed-to-seed spread is the other half of the noise).

Writes ``<out>/objects.csv`` (arm, seed, video, object, j, f, jf) and ``<out>/summary.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from masseg_search.config import ProjectConfig, load_config
from masseg_search.data.layout import atomic_write_bytes
from masseg_search.data.synth import ensure_training_data
from masseg_search.mss.holdout import bootstrap_ci

BASELINE = "off"
ARM_OVERRIDES: dict[str, dict[str, Any]] = {"sim": {}, BASELINE: {"train.loss.sim": 0.0}}


def arm_config(config_path: str, arm: str, seed: int) -> ProjectConfig:
    """The config with the arm's Sim setting and ``train.seed``; validation on the whole split."""
    overrides = {**ARM_OVERRIDES[arm], "train.seed": seed, "model.device": "cpu"}
    return load_config(config_path, overrides)


def run_arm(config: ProjectConfig, out_dir: Path) -> Path:
    """Train (or reuse / resume) one run; returns its last checkpoint."""
    import torch

    from masseg_search.finetune.loop import LAST_CHECKPOINT, train_run

    last = out_dir / "checkpoints" / LAST_CHECKPOINT
    if last.is_file():
        state = torch.load(last, map_location="cpu", weights_only=True)
        if int(state["epoch"]) >= config.train.epochs:
            return last
    train_run(config, out_dir, resume_from=last if last.is_file() else None, progress=True)
    return last


def score_checkpoint(config: ProjectConfig, checkpoint: Path) -> list[dict[str, Any]]:
    """Per-object J, F, J&F of a checkpoint on the whole validation split."""
    import torch

    from masseg_search.finetune.loop import Validator

    whole_split = config.model_copy(update={"train": config.train.model_copy(update={"val_videos": None})})
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    return [{"video": row.video, "object": row.object_id, "j": row.j, "f": row.f, "jf": row.jf}
            for row in Validator(whole_split, "cpu").object_scores(state)]


def summarize(objects: pd.DataFrame, samples: int, seed: int) -> dict[str, Any]:
    """Mean J&F per arm and seed, and each arm's paired difference to ``off`` with a video-bootstrap interval."""
    per_seed = objects.groupby(["arm", "seed"]).jf.mean().unstack("seed")
    by_object = objects.groupby(["arm", "video", "object"]).jf.mean().unstack("arm")
    summary: dict[str, Any] = {
        "videos": int(by_object.index.get_level_values("video").nunique()), "objects": len(by_object),
        "seeds": sorted(int(s) for s in objects.seed.unique()),
        "jf_by_arm_and_seed": {arm: {int(s): float(v) for s, v in row.items()} for arm, row in per_seed.iterrows()},
        "differences": {},
    }
    for arm in by_object.columns:
        if arm == BASELINE:
            continue
        difference = (by_object[arm] - by_object[BASELINE]).rename("difference").reset_index()
        low, high = bootstrap_ci(difference["difference"], difference["video"], samples, seed)
        seed_differences = per_seed.loc[arm] - per_seed.loc[BASELINE]
        summary["differences"][f"{arm} - {BASELINE}"] = {
            "mean": float(difference["difference"].mean()), "ci95": [low, high],
            "per_seed": {int(s): float(v) for s, v in seed_differences.items()},
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="results/bench/sim_loss")
    parser.add_argument("--samples", type=int, default=10000, help="bootstrap resamples")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        for arm in ARM_OVERRIDES:
            config = arm_config(args.config, arm, seed)
            ensure_training_data(config)
            checkpoint = run_arm(config, out / arm / f"seed{seed}")
            rows += [{"arm": arm, "seed": seed, **row} for row in score_checkpoint(config, checkpoint)]
    objects = pd.DataFrame(rows)
    atomic_write_bytes(out / "objects.csv", objects.to_csv(index=False).encode())
    summary = {"config": args.config, "arms": ARM_OVERRIDES,
               **summarize(objects, args.samples, seed=0)}
    atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
