"""The stages of `masseg-search run`, one function each, and the list that chains them (:data:`STAGES`).

Each stage calls the function its own command calls (``run_sweep``, ``tune_mss``, ``run_inference``: on Ray when
``infer.ray_address`` or ``RAY_ADDRESS`` names a cluster, ``select_fusion``, ``run_ensemble``, ``check_submission``,
``evaluate_predictions``, ``build_report``) with the resolved config and what earlier stages chose, and returns
what it wrote (``outputs``), what it chose (``choices``: what later stages read) and the equivalent single
commands. The runner (:mod:`masseg_search.pipeline.runner`) decides which stages run, records them in
``pipeline.yaml`` and never reads a stage's insides.

A stage is a :class:`Stage`: a name, the config keys it reads (its recorded section; a change reruns it), its
input files (digests), the function, what to clear when its inputs changed (``reset``), and how to tell its
outputs are still complete. A new stage (a learned scaling policy, imported masks) is one more ``Stage`` put into a
copy of :data:`STAGES` with :func:`insert_stage`.
"""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from masseg_search.config import ProjectConfig
from masseg_search.data.check import ERROR, check_dataset_with_summary
from masseg_search.data.layout import list_files, open_dataset
from masseg_search.data.moseplus.merge import build_moseplus
from masseg_search.data.scene_types import save_scene_types, scene_type_table
from masseg_search.data.synth import generate_dataset
from masseg_search.ensemble import EnsembleResult, load_plan, run_ensemble
from masseg_search.ensemble.select import select_fusion
from masseg_search.ensemble.submission import check_submission
from masseg_search.errors import MassegError
from masseg_search.evaluation import evaluate_predictions
from masseg_search.finetune.sweep import run_sweep
from masseg_search.inference.distributed import run_inference_anywhere
from masseg_search.inference.infer import PER_TYPE_ID, POLICY_ID
from masseg_search.mss.studies import open_storage
from masseg_search.mss.tune import tune_mss
from masseg_search.pipeline.plan import (
    ensemble_views,
    plan_summary,
    resolve_split_list,
    needed_test_configs,
    top_trial_checkpoints,
    validation_configs,
    view_configs,
)
from masseg_search.pipeline.record import PipelineRecord, fingerprint
from masseg_search.report import build_report
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT, load_best_configs
from masseg_search.store.knobs import Knobs, as_knobs
from masseg_search.store.mss_results import MssResults
from masseg_search.store.predictions import config_id, is_complete, parse_config_id, view_folder

log = logging.getLogger(__name__)

CLI = "masseg-search"


# ------------------------------------------------------------------------------------------------ the folder


@dataclass(frozen=True)
class RunPaths:
    """Where `run` writes what no config key places (the sweeps, studies and tune-mss folders follow the config)."""

    out: Path

    @property
    def record(self) -> Path:
        """``pipeline.yaml``."""
        return self.out / "pipeline.yaml"

    @property
    def config(self) -> Path:
        """The resolved config, what every recorded command passes as ``--config``."""
        return self.out / "config.yaml"

    def scene_types(self, split: str) -> Path:
        """Scene types of a split's objects (first frames, the config's rules)."""
        return self.out / "scene_types" / f"{split}.csv"

    def predictions(self, split: str) -> Path:
        """Stored logits of a split (``infer``'s --out)."""
        return self.out / "predictions" / split

    def plan(self, study: str) -> Path:
        """The fusion plan chosen on validation."""
        return self.out / "plans" / f"{study}.yaml"

    def submission(self, name: str) -> Path:
        """The submission folder (``<name>.zip`` beside it)."""
        return self.out / "submissions" / name

    def evaluation(self, name: str) -> Path:
        """The test evaluation of the submission."""
        return self.out / "evaluations" / name

    @property
    def report(self) -> Path:
        """The HTML report."""
        return self.out / "report.html"


# ------------------------------------------------------------------------------------------------ stage types


@dataclass
class StageContext:
    """What a stage sees: the resolved config, the run folder, the record (earlier stages' choices, digests)."""

    config: ProjectConfig
    paths: RunPaths
    record: PipelineRecord
    progress: bool = True

    def choices(self, stage: str) -> dict[str, Any]:
        """The choices an earlier stage recorded (a clear error when it has not run)."""
        entry = self.record.stage(stage)
        if entry is None or "choices" not in entry:
            raise MassegError(f"stage {stage!r} has no record", self.record.path,
                              f"run `{CLI} run` without --from, or with --from {stage}")
        return entry["choices"]

    def config_arguments(self, **overrides: Any) -> list[str]:
        """``--config <resolved config> [--set key=value ...]`` for a recorded command."""
        arguments = ["--config", str(self.paths.config)]
        for key, value in overrides.items():
            arguments += ["--set", f"{key}={'null' if value is None else value}"]
        return arguments

    def with_overrides(self, **values: Any) -> ProjectConfig:
        """A copy of the config with dotted keys set (``model__checkpoint=...`` sets ``model.checkpoint``)."""
        config = self.config.model_copy(deep=True)
        for dotted, value in values.items():
            section, key = dotted.split("__")
            setattr(getattr(config, section), key, value)
        return config


@dataclass
class StageResult:
    """What a stage wrote and chose."""

    outputs: list[str] = field(default_factory=list)
    choices: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def _no_inputs(ctx: StageContext) -> dict[str, Any]:
    return {}


def _keep_outputs(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
    return None


def outputs_exist(ctx: StageContext, entry: dict[str, Any]) -> bool:
    """Every output path the stage recorded still exists."""
    return all(Path(path).exists() for path in entry.get("outputs", []))


@dataclass(frozen=True)
class Stage:
    """One step of `run`.

    ``config_keys``: the dotted config keys (sections or single keys) it reads, recorded and compared;
    ``inputs(ctx)``: its input files with digests, read before it runs; ``run(ctx)``: the work; ``reset(ctx,
    previous record, changed keys)``: clear what the changed inputs made stale before it runs again (the work inside
    each stage resumes otherwise); ``complete(ctx, record)``: its recorded outputs are still there."""

    name: str
    title: str
    config_keys: tuple[str, ...] | Callable[[ProjectConfig], tuple[str, ...]]
    run: Callable[[StageContext], StageResult]
    inputs: Callable[[StageContext], dict[str, Any]] = _no_inputs
    reset: Callable[[StageContext, dict[str, Any], set[str]], None] = _keep_outputs
    complete: Callable[[StageContext, dict[str, Any]], bool] = outputs_exist

    def keys(self, config: ProjectConfig) -> tuple[str, ...]:
        """The config keys this stage reads under ``config`` (``config_keys`` may depend on it)."""
        return self.config_keys(config) if callable(self.config_keys) else self.config_keys


def command(*parts: Any) -> str:
    """A shell command line (``masseg-search ...``), each part quoted as the shell needs."""
    return " ".join([CLI, *(shlex.quote(str(part)) for part in parts if part is not None)])


def _remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# ------------------------------------------------------------------------------------------------ data


def _split_lists(config: ProjectConfig) -> dict[str, tuple[Path, Path | None]]:
    """split -> (root, list file or None for every video)."""
    data = config.data
    return {"train": (Path(data.root), resolve_split_list(data.root, data.train_split)),
            "val": (Path(data.root), resolve_split_list(data.root, data.val_split)),
            "test": (Path(data.test_data_root), resolve_split_list(data.test_data_root, data.test_split))}


def has_full_ground_truth(root: str | Path, split_list: str | Path | None) -> bool:
    """True when every frame of every video of the split has an annotation PNG (MOSE valid gives only the first)."""
    dataset = open_dataset(root, split_list=split_list)
    for video in dataset.videos():
        annotated = {path.stem for path in list_files(video.annotation_dir, (".png",))} if video.annotation_dir.is_dir() else set()
        if not annotated or any(name not in annotated for name in video.frame_names):
            return False
    return bool(dataset.video_names)


def _data_inputs(ctx: StageContext) -> dict[str, Any]:
    """Real data: the digests of its list files (synthetic and MOSE+ lists are this stage's outputs)."""
    data = ctx.config.data
    if data.synth is not None or data.build_moseplus:
        return {}
    try:
        lists = _split_lists(ctx.config)
    except MassegError:  # a missing list file: the stage names it when it runs
        return {"lists": None}
    return {split: ctx.record.file_input(split_list) if split_list else {"path": str(root), "sha256": None}
            for split, (root, split_list) in lists.items()}


def run_data(ctx: StageContext) -> StageResult:
    """Make the data when the config describes it (MOSE+, synthetic), then check every split's layout."""
    config, data = ctx.config, ctx.config.data
    result = StageResult()
    if data.build_moseplus:
        built = build_moseplus(config, progress=ctx.progress, check=False)
        if Path(data.root).resolve() != built.root.resolve():
            raise MassegError(f"data.root is {data.root} but build-moseplus writes {built.root}", ctx.paths.config,
                              f"set data.root: {built.root} (with data.build_moseplus: true)")
        result.commands.append(command("data", "build-moseplus", *ctx.config_arguments()))
    elif data.synth is not None:
        synth = data.synth
        generate_dataset(data.root, videos=synth.videos, seed=synth.seed, height=synth.height, width=synth.width,
                         frames=synth.frames, splits=synth.splits, progress=ctx.progress)
        result.commands.append(command("data", "synth", *ctx.config_arguments()))
    lists = {}
    names: dict[str, list[str]] = {}
    for split, (root, split_list) in _split_lists(config).items():
        late = split == "train"  # training clips may hold objects that start late (YouTube-VOS in MOSE+)
        problems, summary = check_dataset_with_summary(root, split_list=split_list, allow_late_objects=late,
                                                       workers=min(8, os.cpu_count() or 1))
        check = command("data", "check", root, "--split-list" if split_list else None, split_list,
                        "--allow-late-objects" if late else None)
        errors = [problem for problem in problems if problem.severity == ERROR]
        if errors:
            raise MassegError(f"the {split} split has {len(errors)} layout error(s), first: {errors[0]}",
                              split_list or root, f"fix them (every one: {check}) and rerun")
        result.commands.append(check)
        names[split] = list(open_dataset(root, split_list=split_list).video_names)
        lists[split] = {"root": str(root), "list": str(split_list) if split_list else None,
                        "sha256": ctx.record.file_digest(split_list), "videos": summary.videos,
                        "warnings": len(problems)}
        result.outputs += [str(root)] + ([str(split_list)] if split_list else [])
    leaked = sorted(set(names["train"]) & set(names["val"])) if data.train_split != data.val_split else []
    if leaked:
        raise MassegError(f"{len(leaked)} validation video(s) are also training videos, e.g. {leaked[:3]}",
                          lists["val"]["list"], "use disjoint lists (SAM2's MOSE train and val lists are)")
    test_root, test_list = _split_lists(config)["test"]
    result.choices = {"lists": lists, "test_ground_truth": has_full_ground_truth(test_root, test_list)}
    result.outputs = sorted(set(result.outputs))
    return result


def reset_data(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
    """A synthetic dataset made with other parameters is made again (generate_dataset refuses to mix them)."""
    root = Path(ctx.config.data.root)
    if ctx.config.data.synth is not None and any(key.startswith("data.synth") for key in changed) \
            and (root / "synth.json").is_file():
        shutil.rmtree(root)


def data_complete(ctx: StageContext, entry: dict[str, Any]) -> bool:
    """The lists are there with the recorded digests."""
    lists = entry.get("choices", {}).get("lists", {})
    return outputs_exist(ctx, entry) and all(
        item["list"] is None or ctx.record.file_digest(item["list"]) == item["sha256"] for item in lists.values())


# ------------------------------------------------------------------------------------------------ train-sweep


def run_train_sweep(ctx: StageContext) -> StageResult:
    """Fine-tune under the sweep (resumed when interrupted) and rank its trials; ``train_sweep: null`` takes
    ``model.checkpoint`` as it is."""
    config = ctx.config
    sweep_config = config.train_sweep
    if sweep_config is None:
        checkpoint = config.model.checkpoint
        if checkpoint and not Path(checkpoint).is_file():
            raise MassegError("model.checkpoint not found", checkpoint, "set model.checkpoint to the weights to start from")
        if not checkpoint:
            log.warning("train_sweep is null and model.checkpoint too: the later stages run a randomly initialised model")
        return StageResult(outputs=[checkpoint] if checkpoint else [],
                           choices={"checkpoint": checkpoint, "sha256": ctx.record.file_digest(checkpoint),
                                    "ranked": [], "val_jf": None, "swept": False})
    from ray import tune

    experiment = Path(sweep_config.storage) / sweep_config.name
    resume = tune.Tuner.can_restore(str(experiment.resolve()))
    sweep = run_sweep(config, name=sweep_config.name, resume=resume)
    if sweep.unfinished:  # interrupted (Ctrl-C, kill): later stages must not run on a partial sweep
        raise MassegError(f"the sweep stopped with {sweep.unfinished} unfinished trials", sweep.experiment_dir,
                          "rerun the same command: it resumes the sweep where it stopped")
    if sweep.best_checkpoint is None:
        raise MassegError("the sweep finished without a checkpoint", sweep.experiment_dir, "see the trial logs there")
    ranked = top_trial_checkpoints(sweep.table_csv, sweep.trials)
    best = str(sweep.best_checkpoint)
    print(f"best trial: val J&F {sweep.best_val_jf:.4f}, checkpoint {best}")
    return StageResult(
        outputs=[best, str(sweep.table_csv)],
        choices={"checkpoint": best, "sha256": ctx.record.file_digest(best), "val_jf": float(sweep.best_val_jf),
                 "ranked": ranked, "ranked_sha256": [ctx.record.file_digest(path) for path in ranked],
                 "table": str(sweep.table_csv), "trials": sweep.trials, "swept": True},
        commands=[command("train-sweep", *ctx.config_arguments(), "--resume")])


def _train_sweep_inputs(ctx: StageContext) -> dict[str, Any]:
    return {"base_checkpoint": ctx.record.file_input(ctx.config.model.checkpoint)}


def reset_train_sweep(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
    """A sweep run with other settings is moved aside (``<name>.replaced-<time>``; GPU-days are not deleted) and its
    Optuna study (searcher optuna) deleted, so the new sweep starts fresh."""
    section = (previous.get("config") or {}).get("train_sweep")
    if not section:
        return
    experiment = Path(section["storage"]) / section["name"]
    if experiment.is_dir():
        aside = experiment.with_name(f"{experiment.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        experiment.rename(aside)
        print(f"the sweep's settings changed: the previous sweep moved to {aside}")
    if section.get("searcher") == "optuna":
        import optuna

        from masseg_search.finetune.sweep import optuna_storage_url

        opened = open_storage(optuna_storage_url(ctx.config), study="val")
        name = f"train-sweep-{section['name']}"
        if name in optuna.study.get_all_study_names(opened.storage):
            optuna.delete_study(study_name=name, storage=opened.storage)


def train_sweep_complete(ctx: StageContext, entry: dict[str, Any]) -> bool:
    """The chosen checkpoint still has the recorded digest."""
    choices = entry.get("choices", {})
    return outputs_exist(ctx, entry) and ctx.record.file_digest(choices.get("checkpoint")) == choices.get("sha256")


# ------------------------------------------------------------------------------------------------ tune-mss

MSS_RESUMABLE_KEYS = {"mss.trials", "mss.batch", "mss.bootstrap"}  # a change continues the studies
POLICY_KEYS = "mss.policy"  # the learned policy's settings: it is refit (its tables resume), the studies continue


def run_tune_mss(ctx: StageContext) -> StageResult:
    """Search (scale, bias) per scene type on validation with the chosen checkpoint, held out over folds."""
    checkpoint = ctx.choices("train-sweep")["checkpoint"]
    study = ctx.config.pipeline.study
    tuned = tune_mss(ctx.with_overrides(model__checkpoint=checkpoint), study=study, progress=ctx.progress)
    if tuned.report.stopped_early:
        raise MassegError("tune-mss stopped before its trials finished", tuned.out_dir,
                          "rerun the same command: the studies resume")
    results = MssResults(tuned.out_dir)
    best = tuned.best
    for scene_type, knobs in sorted(best.types.items()):
        print(f"  {scene_type:<10} {config_id(knobs)}")
    heldout = {}
    if tuned.holdout is not None and not tuned.holdout.summary.empty:
        summary = tuned.holdout.summary[tuned.holdout.summary.scene_type == "all"]
        heldout = {str(row.method): float(row.jf) for row in summary.itertuples()}
    policy = tuned.policy is not None  # mss.policy.learn: policy.yaml beside best_configs.yaml
    return StageResult(
        outputs=[str(results.best_configs)] + ([str(results.folds)] if results.folds_or_none() else [])
        + ([str(results.policy)] if policy else []),
        choices={"best_configs": str(results.best_configs), "sha256": ctx.record.file_digest(results.best_configs),
                 "policy": str(results.policy) if policy else None,
                 "policy_sha256": ctx.record.file_digest(results.policy) if policy else None,
                 "types": {name: config_id(knobs) for name, knobs in sorted(best.types.items())},
                 "default": config_id(best.default),
                 "heldout_configs": sorted({config_id(as_knobs(config)) for config in results.heldout_configs()}),
                 "folds": str(results.folds) if results.folds_or_none() else None,
                 "heldout_jf": heldout, "storage": tuned.storage_url},
        commands=[command("tune-mss", *ctx.config_arguments(**{"model.checkpoint": checkpoint}), "--study", study)])


def reset_tune_mss(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
    """Studies tuned on another checkpoint, split or space are deleted (a rerun would resume them); a change of
    budget only (mss.trials, mss.batch, mss.bootstrap) continues them."""
    if changed and all(key in MSS_RESUMABLE_KEYS or key.startswith(POLICY_KEYS) for key in changed):
        return
    import optuna

    section = (previous.get("config") or {}).get("mss") or {}
    study = ((previous.get("config") or {}).get("pipeline.study")) or ctx.config.pipeline.study
    opened = open_storage(section.get("storage", ctx.config.mss.storage), study)
    for name in optuna.study.get_all_study_names(opened.storage):
        if name.startswith(f"{study}/"):
            optuna.delete_study(study_name=name, storage=opened.storage)
    _remove(Path(section.get("results_dir", ctx.config.mss.results_dir)) / study)


def tune_mss_complete(ctx: StageContext, entry: dict[str, Any]) -> bool:
    choices = entry.get("choices", {})
    return outputs_exist(ctx, entry) and ctx.record.file_digest(choices.get("best_configs")) == choices.get("sha256") \
        and ctx.record.file_digest(choices.get("policy")) == choices.get("policy_sha256")


# ------------------------------------------------------------------------------------------------ inference


def _infer_command(ctx: StageContext, root: Path, split_list: Path | None, checkpoint: str | None,
                   pairs: list[Knobs], out: Path, view: str | None = None, flip: bool = False,
                   per_type: str | None = None, scene_types: Path | None = None, policy: str | None = None) -> str:
    configs = ";".join(config_id(knobs) for knobs in pairs)
    return command("infer", *ctx.config_arguments(**{"model.checkpoint": checkpoint}), "--data", root,
                   "--split-list" if split_list else None, split_list, "--configs" if pairs else None,
                   configs if pairs else None, "--per-type" if per_type else None, per_type,
                   "--policy" if policy else None, policy,
                   "--scene-types" if per_type or policy else None, scene_types if per_type or policy else None,
                   "--out", out,
                   "--view" if view and not flip else None, view if view and not flip else None,
                   "--flip" if flip else None, "--view" if flip and view != "flip" else None,
                   view if flip and view != "flip" else None)


def _write_scene_types(ctx: StageContext, split: str, root: Path, split_list: Path | None) -> Path:
    path = ctx.paths.scene_types(split)
    save_scene_types(scene_type_table(open_dataset(root, split_list=split_list), ctx.config.scene_types), path)
    return path


def _views(ctx: StageContext) -> list[dict[str, Any]]:
    """The views to infer, with the digests of their checkpoints."""
    sweep = ctx.choices("train-sweep")
    views = ensemble_views(sweep["checkpoint"], sweep["ranked"][: ctx.config.ensemble.trials], ctx.config.ensemble.flip)
    return [{"view": view, "checkpoint": checkpoint, "sha256": ctx.record.file_digest(checkpoint), "flip": flip}
            for view, checkpoint, flip in views]


def run_infer_val(ctx: StageContext) -> StageResult:
    """Infer on validation every configuration a fusion candidate can name: the baselines, the per-type and per-fold
    choices (base view, with per_type/), and what ``select`` reads under the other views."""
    config = ctx.config
    root, val_list = _split_lists(config)["val"]
    tuned = ctx.choices("tune-mss")
    best = load_best_configs(tuned["best_configs"])
    heldout = {parse_config_id(config) for config in tuned["heldout_configs"]}
    out = ctx.paths.predictions("val")
    scene_types = _write_scene_types(ctx, "val", root, val_list)
    views = _views(ctx)
    if len(views) > 1:
        print("views: " + ", ".join(view["view"] or "base" for view in views))
    result = StageResult(outputs=[str(scene_types)])
    for view in views:
        base = view["view"] is None
        pairs = validation_configs(best, heldout) if base else view_configs(best, heldout)
        per_type = tuned["best_configs"] if base else None
        run_inference_anywhere(config.infer, config.model.config, view["checkpoint"], root, out, pairs,
                               split_list=val_list, per_type=per_type, scene_types=scene_types,
                               scene_type_rules=config.scene_types, device=config.model.device,
                               postprocess=config.model.postprocess, progress=ctx.progress, view=view["view"],
                               flip=view["flip"])
        view["configs"] = [config_id(knobs, view=view["view"]) for knobs in pairs]
        view["folders"] = view["configs"] + ([view_folder(PER_TYPE_ID, view["view"])] if per_type else [])
        result.commands.append(_infer_command(ctx, root, val_list, view["checkpoint"], pairs, out, view["view"],
                                              view["flip"], per_type, scene_types))
    result.outputs.append(str(out))
    result.choices = {"predictions": str(out), "scene_types": str(scene_types), "views": views,
                      "videos": list(open_dataset(root, split_list=val_list).video_names)}
    return result


def _predictions_complete(ctx: StageContext, entry: dict[str, Any]) -> bool:
    """Every recorded configuration folder holds every video complete."""
    choices = entry.get("choices", {})
    root = Path(choices.get("predictions", ""))
    return outputs_exist(ctx, entry) and all(
        is_complete(root / folder / video) for view in choices.get("views", []) for folder in view.get("folders", [])
        for video in choices.get("videos", []))


def _reset_predictions(split: str) -> Callable[[StageContext, dict[str, Any], set[str]], None]:
    def reset(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
        """Predictions of another model or dataset, or of a view whose checkpoint changed, are removed; views no
        longer wanted are removed (the ensemble fuses every stored view); the per-type folders are remade (new
        tune-mss choices); the other stored configurations are kept."""
        out = ctx.paths.predictions(split)
        if not out.is_dir():
            return
        old_views = {v["view"]: (v.get("sha256"), v["flip"]) for v in (previous.get("choices") or {}).get("views", [])}
        new_views = {v["view"]: (v["sha256"], v["flip"]) for v in _views(ctx)}
        models = {key for key in changed if key.startswith(("model.", "data."))}
        if models or any(view in new_views and new_views[view] != old for view, old in old_views.items()):
            _remove(out)
            return
        for folder in out.iterdir():
            name, at, view = folder.name.partition("@")
            view = view.removesuffix(".json") if at else None
            if (at and view not in new_views) or name in (PER_TYPE_ID, POLICY_ID):
                _remove(folder)
    return reset


def run_infer_test(ctx: StageContext) -> StageResult:
    """Infer on test what the chosen plan reads (per view), and with ``pipeline.test_baselines`` the two baselines
    and the per-type choices too, and the learned policy's when tune-mss learned one (the demo's comparison rows)."""
    config = ctx.config
    root, test_list = _split_lists(config)["test"]
    tuned = ctx.choices("tune-mss")
    best = load_best_configs(tuned["best_configs"])
    plan = load_plan(ctx.choices("select")["plan"])
    needed = plan.needed_configs(best)
    stored = {view["view"]: view["configs"] for view in ctx.choices("infer-val")["views"]}
    out = ctx.paths.predictions("test")
    scene_types = _write_scene_types(ctx, "test", root, test_list)
    result = StageResult(outputs=[str(scene_types)])
    views = []
    for view in _views(ctx):
        pairs = needed_test_configs(needed, view["view"], [parse_config_id(c) for c in stored.get(view["view"], [])])
        per_type = policy = None
        if view["view"] is None and config.pipeline.test_baselines:
            pairs = sorted({*pairs, as_knobs(SAM2_DEFAULT), as_knobs(MASSEG_BEST)}, key=config_id)
            per_type, policy = tuned["best_configs"], tuned.get("policy")
        if not pairs and per_type is None:
            continue
        run_inference_anywhere(config.infer, config.model.config, view["checkpoint"], root, out, pairs,
                               split_list=test_list, per_type=per_type, policy=policy, scene_types=scene_types,
                               scene_type_rules=config.scene_types, device=config.model.device,
                               postprocess=config.model.postprocess, progress=ctx.progress, view=view["view"],
                               flip=view["flip"])
        view["configs"] = [config_id(knobs, view=view["view"]) for knobs in pairs]
        view["folders"] = view["configs"] + ([view_folder(PER_TYPE_ID, view["view"])] if per_type else []) \
            + ([view_folder(POLICY_ID, view["view"])] if policy else [])
        views.append(view)
        result.commands.append(_infer_command(ctx, root, test_list, view["checkpoint"], pairs, out,
                                              view["view"], view["flip"], per_type, scene_types, policy))
    result.outputs.append(str(out))
    result.choices = {"predictions": str(out), "scene_types": str(scene_types), "views": views,
                      "videos": list(open_dataset(root, split_list=test_list).video_names)}
    return result


# ------------------------------------------------------------------------------------------------ ensemble


def run_select(ctx: StageContext) -> StageResult:
    """``ensemble --select-on val``: score every fusion candidate on validation and keep the best plan."""
    config = ctx.config
    root, val_list = _split_lists(config)["val"]
    tuned = ctx.choices("tune-mss")
    inferred = ctx.choices("infer-val")
    plan_path = ctx.paths.plan(config.pipeline.study)
    folds = tuned.get("folds")
    plan = select_fusion(inferred["predictions"], root, plan_path, split_list=val_list,
                         scene_types=inferred["scene_types"], best_configs=tuned["best_configs"], folds=folds,
                         top_k=config.ensemble.top_k, workers=config.ensemble.workers, progress=ctx.progress)
    summary = plan_summary(plan)
    needed = plan.needed_configs(load_best_configs(tuned["best_configs"]))
    print(f"chosen fusion: {summary['chosen']} (val J&F {summary['val_jf']:.4f}, "
          f"{'held out' if summary['held_out'] else 'in-sample'}, {summary['candidates']} candidates)")
    return StageResult(
        outputs=[str(plan_path)],
        choices={"plan": str(plan_path), "sha256": ctx.record.file_digest(plan_path), **summary,
                 "needed_configs": None if needed is None else sorted(needed)},
        commands=[command("ensemble", *ctx.config_arguments(), "--select-on", "val", "--predictions",
                          inferred["predictions"], "--data", root, "--split-list" if val_list else None, val_list,
                          "--best-configs", tuned["best_configs"], "--scene-types", inferred["scene_types"],
                          "--folds" if folds else None, folds, "--out-plan", plan_path)])


def select_complete(ctx: StageContext, entry: dict[str, Any]) -> bool:
    choices = entry.get("choices", {})
    return outputs_exist(ctx, entry) and ctx.record.file_digest(choices.get("plan")) == choices.get("sha256")


def run_ensemble_test(ctx: StageContext) -> StageResult:
    """Apply the chosen plan to the test predictions: the submission folder, checked, and its zip."""
    config = ctx.config
    root, test_list = _split_lists(config)["test"]
    tuned = ctx.choices("tune-mss")
    inferred = ctx.choices("infer-test")
    plan_path = ctx.choices("select")["plan"]
    out = ctx.paths.submission(config.pipeline.submission)
    submission = run_ensemble(inferred["predictions"], plan_path, root, out, split_list=test_list,
                              workers=config.ensemble.workers, scene_types=inferred["scene_types"],
                              best_configs=tuned["best_configs"], progress=ctx.progress)
    if submission.problems or submission.zip_path is None:  # the ensemble's own check refused to zip
        check_test_submission(submission, root, test_list)
    return StageResult(
        outputs=[str(out), str(submission.zip_path)],
        choices={"submission": str(out), "zip": str(submission.zip_path), "videos": submission.videos},
        commands=[command("ensemble", *ctx.config_arguments(), "--predictions", inferred["predictions"], "--plan",
                          plan_path, "--data", root, "--split-list" if test_list else None, test_list,
                          "--scene-types", inferred["scene_types"], "--best-configs", tuned["best_configs"],
                          "--out", out)])


def reset_ensemble_test(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
    """A submission written from another plan or other predictions is removed (run_ensemble refuses to mix)."""
    out = Path((previous.get("choices") or {}).get("submission") or ctx.paths.submission(ctx.config.pipeline.submission))
    _remove(out, out.with_name(out.name + ".zip"), out.with_name(out.name + ".plan.yaml"))


def check_test_submission(submission: EnsembleResult, data_root: str | Path, split_list: str | Path | None) -> None:
    """``submission check`` on the zip the ensemble wrote, as the scorer reads it; a MassegError listing the problems
    when the ensemble's own check refused to zip or the zip does not pass."""
    dataset = open_dataset(data_root, split_list=split_list)
    problems = list(submission.problems)
    if submission.zip_path is None or not Path(submission.zip_path).is_file():
        problems = problems or ["no zip was written"]
    else:
        problems = check_submission(submission.zip_path, dataset.image_root, dataset.annotation_root,
                                    videos=list(dataset.video_names))
    if problems:
        shown = "; ".join(str(problem) for problem in problems[:5])
        raise MassegError(f"the test submission fails the submission check ({len(problems)} problems: {shown})",
                          submission.zip_path or submission.out_dir,
                          "rerun the ensemble stage (`run --from ensemble`); report it as a bug if it persists")


def run_check(ctx: StageContext) -> StageResult:
    """The scorer's rules on the zip itself (every video and frame, sizes, ids, layout)."""
    root, test_list = _split_lists(ctx.config)["test"]
    written = ctx.choices("ensemble")
    zip_path = written["zip"]
    check_test_submission(EnsembleResult(Path(written["submission"]), Path(zip_path), written["videos"], 0, 0.0),
                          root, test_list)
    print(f"submission: {zip_path} (submission check: valid)")
    return StageResult(outputs=[zip_path], choices={"zip": zip_path, "sha256": ctx.record.file_digest(zip_path),
                                                   "valid": True},
                       commands=[command("submission", "check", zip_path, "--images", root, "--annotations", root,
                                         "--split-list" if test_list else None, test_list)])


# ------------------------------------------------------------------------------------------------ evaluate, report


def run_evaluate(ctx: StageContext) -> StageResult:
    """J&F of the submission on test, when the test split has ground truth (``pipeline.evaluate``)."""
    config = ctx.config
    root, test_list = _split_lists(config)["test"]
    has_ground_truth = ctx.choices("data")["test_ground_truth"]
    mode = config.pipeline.evaluate
    if mode == "never" or (mode == "auto" and not has_ground_truth):
        reason = "pipeline.evaluate: never" if mode == "never" else "the test split has first-frame masks only"
        print(f"evaluate: skipped ({reason})")
        return StageResult(choices={"evaluated": False, "reason": reason})
    if not has_ground_truth:
        raise MassegError("pipeline.evaluate is always but the test split has no full ground truth", root,
                          "set pipeline.evaluate: auto (or never), or point data.test_root at annotated videos")
    submission = ctx.choices("ensemble")["submission"]
    scene_types = ctx.choices("infer-test")["scene_types"]
    out = ctx.paths.evaluation(config.pipeline.submission)
    result = evaluate_predictions(root, submission, split_list=test_list, workers=config.ensemble.workers,
                                  scene_types=scene_types, progress=ctx.progress)
    result.write(out)
    row = result.global_table.iloc[0]
    print(f"test J&F {row['J&F-Mean']:.4f} (J {row['J-Mean']:.4f}, F {row['F-Mean']:.4f}) -> {out}")
    return StageResult(outputs=[str(out / "global.csv")],
                       choices={"evaluated": True, "evaluation": str(out), "jf": float(row["J&F-Mean"]),
                                "j": float(row["J-Mean"]), "f": float(row["F-Mean"])},
                       commands=[command("evaluate", "--gt", root, "--pred", submission,
                                         "--split-list" if test_list else None, test_list, "--scene-types",
                                         scene_types, "--out", out)])


def reset_evaluate(ctx: StageContext, previous: dict[str, Any], changed: set[str]) -> None:
    _remove(ctx.paths.evaluation(ctx.config.pipeline.submission))


def run_report(ctx: StageContext) -> StageResult:
    """The static HTML report of the run folder (``pipeline.report``)."""
    if not ctx.config.pipeline.report:
        return StageResult(choices={"report": None})
    page = build_report(ctx.paths.out, ctx.paths.report, overlays=ctx.config.pipeline.report_overlays)
    print(f"report: {page}")
    return StageResult(outputs=[str(page)], choices={"report": str(page)},
                       commands=[command("report", ctx.paths.out, *([] if ctx.config.pipeline.report_overlays
                                                                    else ["--no-overlays"]))])


# ------------------------------------------------------------------------------------------------ the list

_MODEL = ("model.config", "model.postprocess")
_VAL = ("data.root", "data.val_split")
_TEST = ("data.root", "data.test_root", "data.test_split")

STAGES: tuple[Stage, ...] = (
    Stage("data", "check the data (make it first: synthetic, MOSE+)",
          lambda config: ("data", "moseplus") if config.data.build_moseplus else ("data",), run_data,
          inputs=_data_inputs, reset=reset_data, complete=data_complete),
    Stage("train-sweep", "fine-tune under the sweep (Ray Tune, ASHA)",
          ("model.config", "model.checkpoint", "model.postprocess", "data.root", "data.train_split", "data.val_split",
           "train", "train_sweep"), run_train_sweep, inputs=_train_sweep_inputs, reset=reset_train_sweep,
          complete=train_sweep_complete),
    Stage("tune-mss", "search the mask scaling per scene type on val (Optuna, held-out folds)",
          (*_MODEL, *_VAL, "scene_types", "mss", "pipeline.study"), run_tune_mss, reset=reset_tune_mss,
          complete=tune_mss_complete),
    Stage("infer-val", "infer on val everything a fusion candidate can name",
          (*_MODEL, *_VAL, "scene_types", "ensemble.flip", "ensemble.trials"), run_infer_val,
          reset=_reset_predictions("val"), complete=_predictions_complete),
    Stage("select", "choose the fusion on val (ensemble --select-on val)", (*_VAL, "ensemble.top_k"), run_select,
          complete=select_complete),
    Stage("infer-test", "infer on test what the chosen plan reads", (*_MODEL, *_TEST, "scene_types",
                                                                     "pipeline.test_baselines"), run_infer_test,
          reset=_reset_predictions("test"), complete=_predictions_complete),
    Stage("ensemble", "fuse the test predictions into the submission", (*_TEST, "pipeline.submission"),
          run_ensemble_test, reset=reset_ensemble_test),
    Stage("check", "check the zip as the scorer reads it", _TEST, run_check),
    Stage("evaluate", "score the submission on test (when it has ground truth)", (*_TEST, "pipeline.evaluate"),
          run_evaluate, reset=reset_evaluate),
    Stage("report", "write the HTML report", ("pipeline.report", "pipeline.report_overlays"), run_report),
)


def stage_names(stages: tuple[Stage, ...] | list[Stage] = STAGES) -> list[str]:
    """The stages' names, in order."""
    return [stage.name for stage in stages]


def insert_stage(stages: tuple[Stage, ...] | list[Stage], stage: Stage, before: str | None = None,
                 after: str | None = None) -> tuple[Stage, ...]:
    """A copy of ``stages`` with ``stage`` put before or after the named one (at the end when neither is given)."""
    names = stage_names(stages)
    if stage.name in names:
        raise MassegError(f"a stage named {stage.name!r} is already in the list", fix="give the new stage another name")
    anchor = before or after
    if anchor is not None and anchor not in names:
        raise MassegError(f"no stage {anchor!r} to insert {stage.name!r} next to", fix=f"use one of {', '.join(names)}")
    index = len(names) if anchor is None else names.index(anchor) + (1 if after else 0)
    return (*stages[:index], stage, *stages[index:])


def config_values(config: ProjectConfig, keys: tuple[str, ...]) -> dict[str, Any]:
    """The resolved values of dotted config keys (whole sections or single keys), as recorded."""
    dumped = config.model_dump(mode="json", by_alias=True, exclude={"source"})
    values = {}
    for key in keys:
        node: Any = dumped
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        values[key] = node
    return values


def stage_fingerprint(config: dict[str, Any], inputs: dict[str, Any], upstream: str) -> str:
    """What decides whether a stage is current, without the keys that change only how it runs."""
    return fingerprint({"config": strip_runtime_keys(config), "inputs": inputs, "upstream": upstream})


# keys that change where or how fast a stage runs, not what it computes: a change does not rerun it
RUNTIME_KEYS = {
    "model.device", "train.num_workers", "train_sweep.cpus_per_trial", "train_sweep.max_concurrent",
    "train_sweep.max_failures", "mss.feature_cache_mb", "mss.engine_max_rows", "mss.heartbeat_interval",
    "mss.grace_period", "ensemble.workers", "moseplus.workers",
}


def strip_runtime_keys(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (dotted key -> value) without :data:`RUNTIME_KEYS`, also inside whole sections."""
    stripped = {}
    for key, value in config.items():
        if key in RUNTIME_KEYS:
            continue
        if isinstance(value, dict):
            value = {name: item for name, item in value.items() if f"{key}.{name}" not in RUNTIME_KEYS}
        stripped[key] = value
    return stripped


def changed_keys(previous: dict[str, Any], config: dict[str, Any], inputs: dict[str, Any], upstream: str) -> set[str]:
    """The dotted config keys (down to single keys inside sections), ``inputs.<name>`` and ``upstream`` that differ
    between a stage's previous record and now."""
    changed: set[str] = set()
    old_config = previous.get("config") or {}
    for key in set(old_config) | set(config):
        old, new = old_config.get(key), config.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed |= {f"{key}.{name}" for name in set(old) | set(new) if old.get(name) != new.get(name)}
        elif old != new:
            changed.add(key)
    changed -= RUNTIME_KEYS
    old_inputs = previous.get("inputs") or {}
    changed |= {f"inputs.{name}" for name in set(old_inputs) | set(inputs) if old_inputs.get(name) != inputs.get(name)}
    if previous.get("upstream") != upstream:
        changed.add("upstream")
    return changed


def describe_choices(entry: dict[str, Any]) -> str:
    """One line of a stage's main choices, for the closing summary."""
    choices = entry.get("choices") or {}
    parts = []
    for key in ("checkpoint", "val_jf", "chosen", "jf", "zip", "report", "reason"):
        value = choices.get(key)
        if value is not None:
            parts.append(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}")
    if "types" in choices:
        parts.append("types " + ", ".join(f"{name} {config}" for name, config in choices["types"].items()))
    return "; ".join(parts)
