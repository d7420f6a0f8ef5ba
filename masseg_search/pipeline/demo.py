"""`masseg-search demo`: `run` on the bundled synthetic config (``configs/demo.yaml``) with a tiny SAM2 on a laptop
CPU, plus its closing tables.

The stages are `run`'s (:data:`masseg_search.pipeline.stages.STAGES`: data synthesis, train-sweep from the bundled
tiny base checkpoint, tune-mss, inference with the views, the fusion chosen on val, the checked test submission,
evaluate, report; with ``mss.policy.learn`` tune-mss also learns a policy over first-frame features and
infer-test runs it: the row "fine-tuned, learned policy"), with two more: ``memory-knobs`` after infer-test
(``tune-mss --study val_knobs --knobs scale,bias,admit_score`` and its per-type inference on test, :mod:`masseg_search.pipeline.memory_knobs`), and
``demo-table`` (:data:`DEMO_TABLE_STAGE`) before the report: every setting scored on the synthetic test split with a
bootstrap interval over videos (``demo_table.csv``), and each stage's gain over the row it improves on
(STAGE_GAINS) with a paired bootstrap interval over videos (``demo_gains.csv``); with ``ensemble.import_base`` also
``import-untuned`` and ``per-video`` (:mod:`masseg_search.pipeline.families`: the untuned base imported as another
model, and the best per-video choice rule applied to test). A new row is a stage that makes
its predictions (inserted with :func:`~masseg_search.pipeline.stages.insert_stage`) and one more entry in
:func:`demo_rows`.

Everything lands under ``--out`` (default ``results/demo``; the two tables at its top, read by ``masseg-search
report``) and a rerun skips what is done (``pipeline.yaml``), like `run`.
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from masseg_search.config import ProjectConfig, load_config
from masseg_search.data.layout import atomic_write_bytes, open_dataset, write_mask
from masseg_search.errors import MassegError
from masseg_search.evaluation import evaluate_predictions
from masseg_search.inference.infer import PER_TYPE_ID, POLICY_ID, run_inference, write_masks
from masseg_search.model.build import init_checkpoint
from masseg_search.mss.holdout import bootstrap_ci
from masseg_search.pipeline import families, memory_knobs
from masseg_search.pipeline.plan import resolve_split_list
from masseg_search.pipeline.runner import run_pipeline
from masseg_search.pipeline.stages import STAGES, Stage, StageContext, StageResult, insert_stage
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT
from masseg_search.store.predictions import config_id

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
    ("fine-tuned, learned policy", "fine-tuned, tuned per type", "learned policy vs tuned per type"),
    ("ensemble", "fine-tuned, tuned per type", "ensemble vs tuned per type"),
    (memory_knobs.ROW_NAME, "fine-tuned, tuned per type", "memory knobs (admit_score) vs tuned per type"),
    (families.PER_VIDEO_ROW, families.PER_VIDEO_MEMBER_ROW, "per-video vs its SAM2 member"),
    (families.PER_VIDEO_ROW, "fine-tuned, tuned per type", "per-video vs tuned per type"),
    (families.PER_VIDEO_ROW, "ensemble", "per-video vs ensemble"),
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


def base_quick_overrides(base: ProjectConfig) -> dict[str, Any]:
    """Budgets of ``--quick``: the same stages, smaller."""
    synth_videos = base.data.synth.videos if base.data.synth is not None else 24
    return {
        "data.synth.videos": min(synth_videos, 24),
        "train.epochs": min(base.train.epochs, 2),
        "train.iterations_per_epoch": min(base.train.iterations_per_epoch, 8),
        "train_sweep.samples": 4,
        "mss.trials": min(base.mss.trials, 8),
        "mss.batch": min(base.mss.batch, 4),
        "mss.cv_folds": 2,
        "mss.bootstrap": 200,
        "pipeline.report_overlays": False,
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


def _evaluate(gt_root: Path, split_list: Path | None, masks_root: Path, out_dir: Path | None) -> Any:
    result = evaluate_predictions(gt_root, masks_root, split_list=split_list, workers=1, progress=False)
    if out_dir is not None:
        result.write(out_dir)
    return result


@dataclass(frozen=True)
class RowSpec:
    """One row of the closing table: its name, what it is, and how to get its test masks (an Annotations-style
    folder); ``evaluation`` is where its scores are written (None: kept in memory, already written elsewhere)."""

    name: str
    detail: str
    masks: Callable[[], Path]
    evaluation: str | None


def demo_rows(ctx: StageContext) -> list[RowSpec]:
    """The closing table's rows, in order: the trivial baseline, the untrained and the base model, the fine-tuned
    model with 20/-10, 7.5/-4, the per-type choices and (``mss.policy.learn``) the learned policy, and the chosen
    ensemble (the test submission)."""
    config, out = ctx.config, ctx.paths.out
    root, test_list = Path(config.data.test_data_root), resolve_split_list(config.data.test_data_root, config.data.test_split)
    dataset = open_dataset(root, split_list=test_list)
    masks = out / "masks" / "test"
    predictions = ctx.paths.predictions("test")
    sam2_id = config_id(*SAM2_DEFAULT)
    untrained = out / "checkpoints" / "untrained.pt"

    def baseline(name: str, checkpoint: Path | str) -> Callable[[], Path]:
        def make() -> Path:
            if checkpoint == untrained and not untrained.is_file():
                init_checkpoint(config.model.config, untrained, seed=config.data.synth.seed if config.data.synth else 0)
            stored = out / "predictions" / f"test_{name}"
            run_inference(config.model.config, checkpoint, root, stored, [SAM2_DEFAULT], split_list=test_list,
                          device=config.model.device, progress=ctx.progress)
            return write_masks(stored, sam2_id, masks / name, dataset) / "Annotations"
        return make

    def finetuned(folder: str) -> Callable[[], Path]:
        return lambda: write_masks(predictions, folder, masks / "finetuned", dataset) / "Annotations"

    rows = [RowSpec("copy first frame", "first-frame mask repeated",
                    lambda: copy_first_frame(root, test_list, masks / "copy_first_frame"), "copy_first_frame"),
            RowSpec("untrained", "random init, 20/-10", baseline("untrained", untrained), "untrained")]
    if config.model.checkpoint:
        rows.append(RowSpec("base", "bundled base checkpoint, before fine-tuning, 20/-10",
                            baseline("base", config.model.checkpoint), "base"))
    for name, folder, detail in (("fine-tuned, SAM2 20/-10", sam2_id, "best sweep trial"),
                                 ("fine-tuned, MASSeg 7.5/-4", config_id(*MASSEG_BEST), "best sweep trial"),
                                 ("fine-tuned, tuned per type", PER_TYPE_ID, "best_configs.yaml per scene type")):
        rows.append(RowSpec(name, detail, finetuned(folder), folder))
    if ctx.choices("tune-mss").get("policy"):  # --- learned policy (tune-mss --policy learned): infer-test's policy/
        rows.append(RowSpec("fine-tuned, learned policy", "policy.yaml over first-frame features", finetuned(POLICY_ID),
                            POLICY_ID))
    knobs = Path(ctx.choices(memory_knobs.STAGE_NAME)["predictions"])
    rows.append(RowSpec(memory_knobs.ROW_NAME, f"{memory_knobs.KNOBS_STUDY}: {', '.join(memory_knobs.DEMO_KNOBS)} "
                        "per scene type", lambda: write_masks(knobs, PER_TYPE_ID, masks / "memory_knobs", dataset)
                        / "Annotations", "per_type_memory_knobs"))
    chosen = ctx.choices("select")["chosen"]
    plan = Path(ctx.choices("select")["plan"])
    rows.append(RowSpec("ensemble", f"{chosen}, chosen on val ({plan.relative_to(out) if plan.is_relative_to(out) else plan})",
                        lambda: Path(ctx.choices("ensemble")["submission"]), None))
    per_video = ctx.choices(families.PER_VIDEO_STAGE.name)  # --- with the untuned base imported (pipeline.families)
    if per_video.get("applied"):
        rows.append(RowSpec(families.PER_VIDEO_MEMBER_ROW, f"{per_video['members'][0]} alone",
                            lambda: Path(per_video["member_submission"]), "per_video_member"))
        rows.append(RowSpec(families.PER_VIDEO_ROW, f"{per_video['rule']} over {', '.join(per_video['members'])}",
                            lambda: Path(per_video["submission"]), "per_video"))
    return rows


def run_demo_table(ctx: StageContext) -> StageResult:
    """Score every row of :func:`demo_rows` on the test split; write ``demo_table.csv`` and ``demo_gains.csv``."""
    config, out = ctx.config, ctx.paths.out
    if not config.pipeline.test_baselines:
        raise MassegError("the demo's table needs the baselines inferred on test", config.source,
                          "set pipeline.test_baselines: true (configs/demo.yaml has it)")
    root, test_list = Path(config.data.test_data_root), resolve_split_list(config.data.test_data_root, config.data.test_split)
    samples = config.mss.bootstrap or 1000
    seed = config.data.synth.seed if config.data.synth else 0
    rows: list[DemoRow] = []
    objects: dict[str, pd.DataFrame] = {}
    for spec in demo_rows(ctx):
        evaluation = out / "evaluations" / spec.evaluation if spec.evaluation else None
        result = _evaluate(root, test_list, spec.masks(), evaluation)
        rows.append(_scores_row(spec.name, spec.detail, result, samples, seed))
        objects[spec.name] = object_jf(result)
    table = pd.DataFrame([row.__dict__ for row in rows])
    gains = paired_gains(objects, samples, seed)
    atomic_write_bytes(out / TABLE_FILE, table.to_csv(index=False).encode())
    atomic_write_bytes(out / GAINS_FILE, gains.to_csv(index=False).encode())
    return StageResult(outputs=[str(out / TABLE_FILE), str(out / GAINS_FILE)],
                       choices={"rows": {row.name: round(row.jf, 6) for row in rows}})


DEMO_TABLE_STAGE = Stage("demo-table", "score every setting on the test split (the demo's closing tables)",
                         ("model.config", "model.checkpoint", "data.root", "data.test_root", "data.test_split",
                          "data.synth", "mss.bootstrap", "pipeline.test_baselines"), run_demo_table)
DEMO_STAGES = insert_stage(insert_stage(STAGES, memory_knobs.MEMORY_KNOBS_STAGE, after="infer-test"), DEMO_TABLE_STAGE,
                           before="report")
DEMO_STAGES = insert_stage(insert_stage(DEMO_STAGES, families.IMPORT_UNTUNED_STAGE, after="infer-val"),
                           families.PER_VIDEO_STAGE, after="ensemble")


def run_demo(out: str | Path = "results/demo", quick: bool = False, config: str | Path | None = None,
             progress: bool = True, overrides: dict[str, Any] | None = None) -> pd.DataFrame:
    """`run` on the demo config (``configs/demo.yaml`` unless given) into ``out`` with the demo's table stage;
    print and return the table of test J&F per setting (``out/demo_table.csv``). ``quick`` shrinks the budgets
    (fewer videos, iterations, trials, folds) so the whole demo fits in about 3 minutes."""
    started = time.perf_counter()
    base = load_config(config)
    if base.data.synth is None:
        raise MassegError("the demo needs data.synth in its config", base.source, "keep the data.synth block of configs/demo.yaml")
    values = {**(base_quick_overrides(base) if quick else {}), **(overrides or {})}
    invocation = " ".join(["masseg-search demo", "--out", str(out), *(["--quick"] if quick else []),
                           *(["--config", str(config)] if config else []),
                           *(f"--set {key}={value}" for key, value in (overrides or {}).items())])
    result = run_pipeline(config, values, out=out, stages=DEMO_STAGES, progress=progress, invocation=invocation)
    table = pd.read_csv(result.out / TABLE_FILE)
    gains = pd.read_csv(result.out / GAINS_FILE)
    cfg = result.config
    videos = len(open_dataset(cfg.data.test_data_root, split_list=resolve_split_list(cfg.data.test_data_root, cfg.data.test_split)))
    print_table(table, videos, time.perf_counter() - started, result.out, cfg, gains)
    return table


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
    page = out / "report.html"
    if cfg.pipeline.report and page.is_file():
        print(f"HTML report:      file://{page} (remake it: {_script('masseg-search')} report {out})")
    else:
        print(f"HTML report:      {_script('masseg-search')} report {out}")


def _script(name: str) -> str:
    """The console script beside this interpreter (``.venv/bin/<name>``), so the printed command works from any
    working folder; the bare name when it is not there."""
    path = Path(sys.executable).parent / name
    return str(path) if path.is_file() else name
