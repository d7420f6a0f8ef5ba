"""`masseg-search demo`: the whole pipeline on the bundled synthetic dataset with a tiny SAM2, on a laptop CPU.

Stages (each one the same function its own command calls, so the demo is also their end-to-end test):

1. ``data synth``: a deterministic synthetic MOSE-like dataset (train / val / test lists).
2. ``train-sweep``: Ray Tune fine-tunes the bundled tiny base checkpoint (it plays the part of SAM2's official
   checkpoint; ``configs/checkpoints/README.md`` records the command and seed that made it) over loss weights and
   augmentation probabilities, ASHA stopping the weak trials.
3. ``tune-mss --study val``: one Optuna study per scene type on the validation split, with the held-out estimate;
   and ``tune-mss --study val_knobs --knobs scale,bias,admit_score`` (memory admission threshold too,
   :mod:`masseg_search.pipeline.memory_knobs`), inferred on test as the row "tuned per type, memory knobs".
4. ``infer`` on val and test with SAM2's 20/-10, MASSeg's 7.5/-4 and the tuned per-type configurations (one engine
   pass each), also under the ensemble's views (``ensemble.flip``: the mirrored videos; ``ensemble.trials``: the
   next best sweep trials' checkpoints), ``ensemble --select-on val`` chooses the fusion, ``ensemble`` applies it
   to test, and ``submission check`` runs on the zip it wrote (a failing check stops the demo with the problems).
5. ``evaluate`` every row against the synthetic test ground truth, with a bootstrap interval over videos, and each
   stage's gain over the row it improves on (STAGE_GAINS) with a paired bootstrap interval over videos.

Everything lands under ``--out`` (default ``results/demo``; ``demo_table.csv`` and ``demo_gains.csv`` at its top,
read by ``masseg-search report``) and is resumed on a rerun.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from masseg_search import PROJECT_ROOT
from masseg_search.config import ProjectConfig, load_config
from masseg_search.data.layout import atomic_write_bytes, find_split_list, open_dataset, write_mask
from masseg_search.data.scene_types import save_scene_types, scene_type_table
from masseg_search.data.synth import generate_dataset
from masseg_search.ensemble import run_ensemble
from masseg_search.ensemble.select import select_fusion
from masseg_search.ensemble.submission import check_submission
from masseg_search.errors import MassegError
from masseg_search.evaluation import evaluate_predictions
from masseg_search.finetune.sweep import run_sweep
from masseg_search.inference.distributed import run_inference_anywhere
from masseg_search.inference.infer import write_masks
from masseg_search.model.build import init_checkpoint
from masseg_search.mss.holdout import bootstrap_ci
from masseg_search.mss.tune import tune_mss
from masseg_search.pipeline import memory_knobs
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT, load_best_configs
from masseg_search.store.mss_results import MssResults
from masseg_search.store.knobs import as_knobs
from masseg_search.store.predictions import config_id, config_view, parse_config_id

log = logging.getLogger(__name__)

TABLE_FILE = "demo_table.csv"
GAINS_FILE = "demo_gains.csv"
# Each stage's effect, measured on the same test objects: (row, row it is compared with, what the stage is).
STAGE_GAINS = (
    ("base", "untrained", "pretraining (the bundled base)"),
    ("fine-tuned, SAM2 20/-10", "base", "fine-tuning (train-sweep)"),
    ("fine-tuned, MASSeg 7.5/-4", "fine-tuned, SAM2 20/-10", "MASSeg's fixed scaling"),
    ("fine-tuned, tuned per type", "fine-tuned, SAM2 20/-10", "tune-mss per type vs 20/-10"),
    ("fine-tuned, tuned per type", "fine-tuned, MASSeg 7.5/-4", "tune-mss per type vs 7.5/-4"),
    ("ensemble", "fine-tuned, tuned per type", "ensemble vs tuned per type"),
    (memory_knobs.ROW_NAME, "fine-tuned, tuned per type", "memory knobs (admit_score) vs tuned per type"),
)
ROW_WIDTH = 42  # the longest row name, "fine-tuned, tuned per type, memory knobs"


@dataclass
class DemoRow:
    """One line of the final table: a model + mask-scaling setting, scored on the test split."""

    name: str
    detail: str
    jf: float
    j: float
    f: float
    ci_low: float
    ci_high: float


def demo_config(out: Path, quick: bool, config: str | Path | None = None) -> ProjectConfig:
    """The demo's config (``configs/demo.yaml`` unless given) with every output redirected under ``out``.

    ``quick`` shrinks the budgets (fewer videos, iterations, trials, folds) so the whole demo fits in ~3 minutes.
    """
    overrides: dict[str, Any] = {
        "data.root": str(out / "data"),
        "train_sweep.storage": str(out / "sweeps"),
        "mss.results_dir": str(out / "mss"),
        "mss.storage": f"sqlite:///{out / 'studies' / 'val.db'}",
        "mss.artifact_dir": str(out / "studies" / "artifacts"),
    }
    base = load_config(config)
    checkpoint = base.model.checkpoint
    if checkpoint and not Path(checkpoint).is_file() and (PROJECT_ROOT / checkpoint).is_file():
        overrides["model.checkpoint"] = str(PROJECT_ROOT / checkpoint)  # the bundled base, from any working folder
    if quick:
        overrides.update(base_quick_overrides(base))
    return load_config(config, overrides)


def base_quick_overrides(base: ProjectConfig) -> dict[str, Any]:
    """Budgets of ``--quick``: the same stages, smaller."""
    return {
        "data.synth.videos": min(base.data.synth.videos, 24),
        "train.epochs": min(base.train.epochs, 2),
        "train.iterations_per_epoch": min(base.train.iterations_per_epoch, 8),
        "train_sweep.samples": 4,
        "mss.trials": min(base.mss.trials, 8),
        "mss.batch": min(base.mss.batch, 4),
        "mss.cv_folds": 2,
        "mss.bootstrap": 200,
    }


def object_jf(result: Any) -> pd.DataFrame:
    """Per-object J&F ((J-Mean + F-Mean) / 2) of an EvaluationResult: columns video, Sequence, jf."""
    per_object = result.per_object
    return pd.DataFrame({"video": per_object["video"].astype(str).values,
                         "Sequence": per_object["Sequence"].astype(str).values,
                         "jf": ((per_object["J-Mean"] + per_object["F-Mean"]) / 2).values})


def _scores_row(name: str, detail: str, result: Any, samples: int, seed: int) -> DemoRow:
    """A table row from an EvaluationResult: global J&F, J, F and a bootstrap interval over videos."""
    jf = object_jf(result)
    low, high = bootstrap_ci(jf["jf"], jf["video"], samples, seed)
    row = result.global_table.iloc[0]
    return DemoRow(name, detail, float(row["J&F-Mean"]), float(row["J-Mean"]), float(row["F-Mean"]), low, high)


def paired_gains(objects: dict[str, pd.DataFrame], samples: int, seed: int) -> pd.DataFrame:
    """Each stage's gain (STAGE_GAINS) on the same test objects: mean per-object J&F difference with a paired
    bootstrap 95% interval over videos (videos resampled, the two rows' scores of an object kept together).

    An interval that excludes 0 is a difference the test split measures; one that straddles 0 is not."""
    rows = []
    for name, against, stage in STAGE_GAINS:
        if name not in objects or against not in objects:
            continue
        merged = objects[name].merge(objects[against], on=["video", "Sequence"], suffixes=("", "_against"),
                                     validate="one_to_one")
        if len(merged) != len(objects[name]) or len(merged) != len(objects[against]):
            raise MassegError(f"rows {name!r} and {against!r} scored different objects ({len(objects[name])} vs "
                              f"{len(objects[against])})", fix="rerun the demo into an empty --out folder")
        diff = merged["jf"] - merged["jf_against"]
        low, high = bootstrap_ci(diff, merged["video"], samples, seed)
        rows.append({"stage": stage, "row": name, "against": against, "gain": float(diff.mean()), "ci_low": low,
                     "ci_high": high, "objects": len(merged), "videos": int(merged["video"].nunique())})
    return pd.DataFrame(rows, columns=["stage", "row", "against", "gain", "ci_low", "ci_high", "objects", "videos"])


def _evaluate(gt_root: Path, split_list: Path, masks_root: Path, out_dir: Path) -> Any:
    result = evaluate_predictions(gt_root, masks_root, split_list=split_list, workers=1, progress=False)
    result.write(out_dir)
    return result


def copy_first_frame(dataset_root: Path, split_list: Path, out: Path) -> Path:
    """The trivial baseline: every frame gets the first frame's mask (what a tracker that never moves scores)."""
    dataset = open_dataset(dataset_root, split_list=split_list)
    for video in dataset.videos():
        start, first = video.first_annotation()
        for index, name in enumerate(video.frame_names):
            path = out / video.name / f"{name}.png"
            if not path.is_file():
                write_mask(path, first if index >= start else np.zeros_like(first))
    return out


def _step(title: str) -> float:
    print(f"\n=== {title}", flush=True)
    return time.perf_counter()


def run_demo(out: str | Path = "results/demo", quick: bool = False, config: str | Path | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Run the whole pipeline; return (and write ``out/demo_table.csv``) the table of test J&F per setting."""
    started = time.perf_counter()
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise MassegError("--out is a file, not a folder", out, "pass a new or existing folder (default results/demo)")
    cfg = demo_config(out, quick, config)
    synth = cfg.data.synth
    if synth is None:
        raise MassegError("the demo needs data.synth in its config", cfg.source, "keep the data.synth block of configs/demo.yaml")
    data_root = Path(cfg.data.root)
    seed = synth.seed

    _step(f"1/5 synthetic data: {synth.videos} videos of {synth.frames} frames at {synth.height}x{synth.width}")
    generate_dataset(data_root, videos=synth.videos, seed=seed, height=synth.height, width=synth.width,
                     frames=synth.frames, splits=synth.splits)
    val_list = find_split_list(data_root, cfg.data.val_split)
    test_list = find_split_list(data_root, cfg.data.test_split)

    sweep_name = cfg.train_sweep.name
    _step(f"2/5 train-sweep {sweep_name!r}: {cfg.train_sweep.samples} trials x {cfg.train.epochs} epochs x "
          f"{cfg.train.iterations_per_epoch} iterations (Ray Tune, ASHA)")
    from ray import tune

    experiment = Path(cfg.train_sweep.storage) / sweep_name
    resume = tune.Tuner.can_restore(str(experiment))
    sweep = run_sweep(cfg, name=sweep_name, resume=resume)
    if sweep.unfinished:  # interrupted (Ctrl-C, kill): later stages must not run on a partial sweep
        raise MassegError(f"the sweep stopped with {sweep.unfinished} unfinished trials", sweep.experiment_dir,
                          "rerun the demo with the same --out: it resumes the sweep where it stopped")
    if sweep.best_checkpoint is None:
        raise MassegError("the sweep finished without a checkpoint", sweep.experiment_dir, "see the trial logs there")
    tuned_checkpoint = str(sweep.best_checkpoint)
    print(f"best trial: val J&F {sweep.best_val_jf:.4f}, checkpoint {tuned_checkpoint}")

    _step(f"3/5 tune-mss --study val: {cfg.mss.trials} trials per scene type, batches of {cfg.mss.batch}, "
          f"{cfg.mss.cv_folds}-fold held-out estimate")
    tuned = tune_mss(cfg, study="val", checkpoint=tuned_checkpoint, progress=progress)
    best_configs_path = MssResults(tuned.out_dir).best_configs
    best = load_best_configs(best_configs_path)
    for scene_type, knobs in sorted(best.types.items()):
        print(f"  {scene_type:<10} {config_id(knobs)}")
    # --- the memory-knobs row (pipeline/memory_knobs.py): a second study with admit_score searched too
    knob_path, knob_best = memory_knobs.tune_memory_knobs(cfg, tuned_checkpoint, progress)
    for scene_type, knobs in sorted(knob_best.types.items()):
        print(f"  {scene_type:<10} {config_id(knobs)}  ({memory_knobs.KNOBS_STUDY}: {', '.join(memory_knobs.DEMO_KNOBS)})")

    _step("4/5 infer (val + test), choose the fusion on val, ensemble test into a checked submission")
    # every configuration a candidate fusion can name: the baselines, the final per-type choices, and the per-fold
    # choices of the held-out estimate (so --select-on scores per-type select held out, not in-sample)
    pairs = sorted({as_knobs(c) for c in (SAM2_DEFAULT, MASSEG_BEST, *best.types.values(),
                                          *MssResults(tuned.out_dir).heldout_configs())}, key=config_id)
    scene_types_dir = out / "scene_types"
    scene_csv = {split: _scene_types_csv(cfg, data_root, lst, scene_types_dir / f"{split}.csv")
                 for split, lst in (("val", val_list), ("test", test_list))}
    predictions = out / "predictions"
    views = ensemble_views(tuned_checkpoint, top_trial_checkpoints(sweep.table_csv, cfg.ensemble.trials),
                           cfg.ensemble.flip)
    if len(views) > 1:
        print("views: " + ", ".join(view or "base" for view, _, _ in views))
    # the views run what select needs on val (scored held out); on test only what the chosen plan reads
    view_pairs = sorted({as_knobs(c) for c in (best.default, *best.types.values(),
                                               *MssResults(tuned.out_dir).heldout_configs())}, key=config_id)
    for split, lst in (("val", val_list), ("test", test_list)):
        run_inference_anywhere(cfg.infer, cfg.model.config, tuned_checkpoint, data_root, predictions / split, pairs,
                               split_list=lst, per_type=best_configs_path, scene_types=scene_csv[split],
                               device=cfg.model.device, progress=progress)
    for view, checkpoint, flip in views[1:]:
        run_inference_anywhere(cfg.infer, cfg.model.config, checkpoint, data_root, predictions / "val", view_pairs,
                               split_list=val_list, device=cfg.model.device, progress=progress, view=view, flip=flip)
    plan_path = out / "plans" / "val.yaml"
    plan = select_fusion(predictions / "val", data_root, plan_path, split_list=val_list, scene_types=scene_csv["val"],
                         best_configs=best_configs_path, folds=MssResults(tuned.out_dir).folds_or_none(), top_k=cfg.ensemble.top_k,
                         progress=progress)
    needed = plan.needed_configs(best)
    for view, checkpoint, flip in views[1:]:
        view_needed = sorted((parse_config_id(c) for c in (needed or []) if config_view(c) == view), key=config_id)
        if view_needed:
            run_inference_anywhere(cfg.infer, cfg.model.config, checkpoint, data_root, predictions / "test", view_needed,
                                   split_list=test_list, device=cfg.model.device, progress=progress, view=view,
                                   flip=flip)
    submission = run_ensemble(predictions / "test", plan, data_root, out / "submissions" / "demo", split_list=test_list,
                              scene_types=scene_csv["test"], best_configs=best_configs_path, progress=progress)
    check_demo_submission(submission, data_root, test_list)
    print(f"submission: {submission.zip_path} (submission check: valid)")
    knob_predictions = memory_knobs.infer_memory_knobs(cfg, tuned_checkpoint, knob_path, data_root, test_list,
                                                       scene_csv["test"], predictions, progress)

    _step("5/5 evaluate every setting on the test split")
    test_dataset = open_dataset(data_root, split_list=test_list)
    masks = out / "masks" / "test"
    evaluations = out / "evaluations"
    untrained = out / "checkpoints" / "untrained.pt"
    if not untrained.is_file():
        init_checkpoint(cfg.model.config, untrained, seed=seed)
    baseline_runs = [("untrained", "random init", str(untrained))]
    if cfg.model.checkpoint:
        baseline_runs.append(("base", "bundled base checkpoint, before fine-tuning", cfg.model.checkpoint))
    for name, _, checkpoint in baseline_runs:
        run_inference_anywhere(cfg.infer, cfg.model.config, checkpoint, data_root, out / "predictions" / f"test_{name}",
                               [SAM2_DEFAULT], split_list=test_list, device=cfg.model.device, progress=progress)
    samples = cfg.mss.bootstrap or 1000
    rows = []
    objects: dict[str, pd.DataFrame] = {}

    def score(name: str, detail: str, masks_root: Path, evaluation_dir: Path) -> None:
        result = _evaluate(data_root, test_list, masks_root, evaluation_dir)
        rows.append(_scores_row(name, detail, result, samples, seed))
        objects[name] = object_jf(result)

    score("copy first frame", "first-frame mask repeated",
          copy_first_frame(data_root, test_list, masks / "copy_first_frame"), evaluations / "copy_first_frame")
    sam2_id, masseg_id = config_id(*SAM2_DEFAULT), config_id(*MASSEG_BEST)
    for name, detail, _ in baseline_runs:
        pred_root = out / "predictions" / f"test_{name}"
        score(name, f"{detail}, 20/-10", write_masks(pred_root, sam2_id, masks / name, test_dataset) / "Annotations",
              evaluations / name)
    for name, folder, detail in (("fine-tuned, SAM2 20/-10", sam2_id, "best sweep trial"),
                                 ("fine-tuned, MASSeg 7.5/-4", masseg_id, "best sweep trial"),
                                 ("fine-tuned, tuned per type", "per_type", "best_configs.yaml per scene type")):
        score(name, detail, write_masks(predictions / "test", folder, masks / "finetuned", test_dataset) / "Annotations",
              evaluations / folder)
    score(memory_knobs.ROW_NAME, f"{memory_knobs.KNOBS_STUDY}: {', '.join(memory_knobs.DEMO_KNOBS)} per scene type",
          write_masks(knob_predictions, "per_type", masks / "memory_knobs", test_dataset) / "Annotations",
          evaluations / "per_type_memory_knobs")
    chosen = (plan.selection or {}).get("chosen", plan.default.method)
    score("ensemble", f"{chosen}, chosen on val ({plan_path.relative_to(out)})", submission.out_dir,
          evaluations / "ensemble")
    table = pd.DataFrame([row.__dict__ for row in rows])
    gains = paired_gains(objects, samples, seed)
    atomic_write_bytes(out / TABLE_FILE, table.to_csv(index=False).encode())
    atomic_write_bytes(out / GAINS_FILE, gains.to_csv(index=False).encode())
    print_table(table, len(test_dataset), time.perf_counter() - started, out, cfg, gains)
    return table


def check_demo_submission(submission: Any, data_root: Path, test_list: Path) -> None:
    """``submission check`` on the zip the ensemble wrote, as the scorer reads it; a MassegError listing the
    problems when the ensemble's own check refused to zip or the zip does not pass."""
    dataset = open_dataset(data_root, split_list=test_list)
    problems = list(submission.problems)
    if submission.zip_path is None or not Path(submission.zip_path).is_file():
        problems = problems or ["no zip was written"]
    else:
        problems = check_submission(submission.zip_path, dataset.image_root, dataset.annotation_root,
                                    videos=list(dataset.video_names))
    if problems:
        shown = "; ".join(str(problem) for problem in problems[:5])
        raise MassegError(f"the demo's test submission fails the submission check ({len(problems)} problems: {shown})",
                          submission.zip_path or submission.out_dir,
                          "rerun the demo into an empty --out folder; report it as a bug if it persists")


def top_trial_checkpoints(table_csv: str | Path, count: int) -> list[str]:
    """The checkpoints of the ``count`` sweep trials with the best validation J&F, best first (trials without a
    checkpoint are skipped)."""
    table = pd.read_csv(table_csv)
    table = table[table["checkpoint"].notna() & table["best_val_jf"].notna()]
    table = table.sort_values(["best_val_jf", "trial_id"], ascending=[False, True], kind="stable")
    return [str(path) for path in table["checkpoint"].head(count)]


def ensemble_views(best_checkpoint: str, ranked: list[str], flip: bool) -> list[tuple[str | None, str, bool]]:
    """(view, checkpoint, mirrored) for every view the demo infers: the best trial as the base view, ``flip`` its
    mirrored videos, and ``trial<k>`` (``trial<k>.flip``) the k-th best trial's checkpoint."""
    views: list[tuple[str | None, str, bool]] = [(None, best_checkpoint, False)]
    if flip:
        views.append(("flip", best_checkpoint, True))
    others = [path for path in ranked if Path(path).resolve() != Path(best_checkpoint).resolve()]
    for rank, checkpoint in enumerate(others[: max(len(ranked) - 1, 0)], start=2):
        views.append((f"trial{rank}", checkpoint, False))
        if flip:
            views.append((f"trial{rank}.flip", checkpoint, True))
    return views



def _scene_types_csv(cfg: ProjectConfig, data_root: Path, split_list: Path, path: Path) -> Path:
    """Scene types of one split's objects (first frames only), written once."""
    if not path.is_file():
        save_scene_types(scene_type_table(open_dataset(data_root, split_list=split_list), cfg.scene_types), path)
    return path


def print_table(table: pd.DataFrame, videos: int, seconds: float, out: Path, cfg: ProjectConfig,
                gains: pd.DataFrame | None = None) -> None:
    """The closing table, each stage's paired gain, and the commands that open the dashboard and the report."""
    print(f"\nTest split: {videos} synthetic videos, J&F with a 95% bootstrap interval over videos")
    print(f"{'setting':<{ROW_WIDTH}} {'J&F':>7} {'95% CI':>17} {'J':>7} {'F':>7}")
    for row in table.itertuples():
        print(f"{row.name:<{ROW_WIDTH}} {row.jf:7.4f}   [{row.ci_low:.3f}, {row.ci_high:.3f}] {row.j:7.4f} {row.f:7.4f}")
    if gains is not None and len(gains):
        print("\nEach stage's gain on the same test objects (paired bootstrap 95% interval over videos; "
              "an interval excluding 0 is measured, one straddling 0 is not)")
        print(f"{'stage':<{ROW_WIDTH}} {'gain':>8} {'95% CI':>19}")
        for row in gains.itertuples():
            verdict = "measured" if row.ci_low > 0 or row.ci_high < 0 else "within noise"
            print(f"{row.stage:<{ROW_WIDTH}} {row.gain:+8.4f}   [{row.ci_low:+.3f}, {row.ci_high:+.3f}]  {verdict}")
    print(f"\ndemo finished in {seconds / 60:.1f} min; everything is under {out}")
    print(f"Optuna dashboard: {_script('optuna-dashboard')} {cfg.mss.storage} --artifact-dir {cfg.mss.artifact_dir}")
    print(f"HTML report:      {_script('masseg-search')} report {out} --data {cfg.data.root}")


def _script(name: str) -> str:
    """The console script beside this interpreter (``.venv/bin/<name>``), so the printed command works from any
    working folder; the bare name when it is not there."""
    import sys

    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() else name
