"""Readers of what the stages write (sweeps, tune-mss studies, ensemble choices, evaluations)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from masseg_search.errors import MassegError
from masseg_search.store.best_configs import BestConfigs, load_best_configs
from masseg_search.store.mss_results import MssResults
from masseg_search.store.policy import Policy, load_policy

ENSEMBLE_FOLDERS = ("plans", "submissions", "ensemble")
# Column names the stages write; the first present wins.
METRIC_COLUMNS = ("val_jf", "val_jf_mean", "jf_mean", "best_val_jf", "J&F-Mean", "jf", "value")
EPOCH_COLUMNS = ("epoch", "training_iteration")
TRIAL_COLUMNS = ("trial_id", "trial", "number")
STATUS_COLUMNS = ("status", "state")
STOPPED_COLUMNS = ("stopped_early", "stopped_by_asha", "early_stopped", "stopped")
SWEEP_BOOKKEEPING_COLUMNS = {"trial_id", "status", "epochs_run", "epochs", "best_val_jf", "best_epoch", "last_val_jf",
                             "checkpoint", "training_iteration", "val_jf", "epoch", *STOPPED_COLUMNS}
SCALE_COLUMNS = ("scale", "params_scale", "mask_scale")
BIAS_COLUMNS = ("bias", "params_bias", "mask_bias")
TYPE_COLUMNS = ("scene_type", "type", "study")
CANDIDATE_COLUMNS = ("candidate", "name", "method", "plan")
_TEXT_COLUMNS = (*TRIAL_COLUMNS[:2], "video", "Sequence", "scene_type", "candidate", "name")
EVALUATION_META = "evaluation.json"  # what an evaluation scored: {"gt_root": ..., "pred_root": ...}

# ------------------------------------------------------------------------------------------------ reading


def first_present(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
    present = list(columns)
    lowered = {c.lower(): c for c in present}
    for candidate in candidates:
        if candidate in present:
            return candidate
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def read_table(path: Path, required: dict[str, Iterable[str]] | None = None) -> pd.DataFrame:
    """Read a CSV written by a stage; a clear MassegError naming the file when it is malformed.

    ``required`` maps a role (for the message) to the column names that can play it; one must be present.
    Identifier columns (trial ids, videos, scene types, candidates) stay text, so ``00001`` is not read as 1.
    """
    try:
        table = pd.read_csv(path, dtype={name: str for name in _TEXT_COLUMNS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise MassegError(f"cannot read the table ({exc.__class__.__name__}: {str(exc).strip()[:200]})", path,
                          "rerun the command that wrote it, or delete the file") from None
    for role, names in (required or {}).items():
        names = tuple(names)
        if first_present(table.columns, names) is None:
            raise MassegError(f"table has no {role} column (one of {', '.join(names)}); it has "
                              f"{', '.join(map(str, table.columns))}", path, "rerun the command that wrote it")
    return table


def numeric_column(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna()
    if bad.any():
        raise MassegError(f"column {column!r} has non-numeric values such as {table[column][bad].iloc[0]!r}", path,
                          "rerun the command that wrote it")
    return values


@dataclass
class Sweep:
    """One Ray Tune sweep: its results table and per-epoch validation J&F per trial."""

    name: str
    path: Path
    table: pd.DataFrame | None = None
    table_path: Path | None = None
    progress: pd.DataFrame | None = None  # columns trial_id, epoch, jf
    parameters: list[str] = field(default_factory=list)


def _read_progress_file(path: Path) -> pd.DataFrame:
    """One trial's per-epoch rows from Ray's progress.csv or result.json (JSON lines)."""
    if path.suffix == ".json":
        rows = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise MassegError(f"line {number} is not JSON ({exc})", path, "rerun or delete the trial") from None
        table = pd.DataFrame(rows)
    elif path.stat().st_size == 0:  # Ray creates the file before the trial's first report
        return pd.DataFrame(columns=["trial_id", "epoch", "jf"])
    else:
        table = read_table(path)
    if table.empty:
        return pd.DataFrame(columns=["trial_id", "epoch", "jf"])
    metric = first_present(table.columns, METRIC_COLUMNS)
    epoch = first_present(table.columns, EPOCH_COLUMNS)
    if metric is None or epoch is None:
        raise MassegError(f"no validation J&F ({', '.join(METRIC_COLUMNS)}) or epoch column "
                          f"({', '.join(EPOCH_COLUMNS)}); columns: {', '.join(map(str, table.columns))}", path,
                          "rerun the sweep with the project's trainable")
    trial = table["trial_id"].astype(str) if "trial_id" in table else pd.Series([path.parent.name] * len(table))
    return pd.DataFrame({"trial_id": trial.values, "epoch": numeric_column(table, epoch, path).values,
                         "jf": numeric_column(table, metric, path).values})


def _parameter_columns(table: pd.DataFrame) -> list[str]:
    """Searched parameters: Ray's ``config/...`` columns if any, else every varying numeric column that is not a
    trial's bookkeeping (the sweep's results.csv puts the dotted train keys such as ``loss.dice`` there)."""
    config_columns = [c for c in table.columns if str(c).startswith(("config/", "params_", "param/"))]
    candidates = config_columns or [c for c in table.columns if str(c) not in SWEEP_BOOKKEEPING_COLUMNS]
    return [c for c in candidates if pd.api.types.is_numeric_dtype(table[c]) and table[c].nunique() > 1]


def read_sweep(path: Path) -> Sweep:
    """Read ``sweeps/<name>/``: the results table (first top-level CSV with a trial column) and trial progress."""
    sweep = Sweep(path.name, path)
    for csv_path in sorted(path.glob("*.csv")):
        table = read_table(csv_path)
        if first_present(table.columns, TRIAL_COLUMNS) is not None:
            sweep.table, sweep.table_path = table, csv_path
            sweep.parameters = _parameter_columns(table)
            break
    progress_files = {p.parent: p for p in sorted(path.rglob("result.json"))}
    progress_files.update({p.parent: p for p in sorted(path.rglob("progress.csv"))})
    parts = [_read_progress_file(p) for _, p in sorted(progress_files.items())]
    parts = [p for p in parts if not p.empty]
    if parts:
        sweep.progress = pd.concat(parts, ignore_index=True).sort_values(["trial_id", "epoch"])
    return sweep


@dataclass
class MssStudy:
    """One tune-mss study folder: chosen configurations, trials, and the study's own tables and plots."""

    name: str
    path: Path
    best: BestConfigs | None = None
    trials: pd.DataFrame | None = None  # columns scene_type, scale, bias, jf
    trials_path: Path | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    policy: Policy | None = None  # tune-mss --policy learned: the learned policy
    policy_comparison: pd.DataFrame | None = None  # its held-out comparison (policy, heldout_jf, ci_low, ...)


POLICY_COMPARISON_COLUMNS = ("policy", "heldout_jf", "ci_low", "ci_high", "gain_over_fixed", "gain_over_fixed_ci_low",
                             "gain_over_fixed_ci_high", "gain_over_per_type", "gain_over_per_type_ci_low",
                             "gain_over_per_type_ci_high")


def read_mss_study(path: Path) -> MssStudy:
    """Read ``mss/<study>/``: best_configs.yaml, the trials CSV (scene type, scale, bias, J&F) and other CSVs, and
    the learned policy with its comparison when ``tune-mss --policy learned`` wrote them."""
    study = MssStudy(path.name, path)
    results = MssResults(path)
    if results.best_configs.is_file():
        study.best = load_best_configs(results.best_configs)
    if results.policy.is_file():
        study.policy = load_policy(results.policy)
    if results.policy_comparison.is_file():
        comparison = read_table(results.policy_comparison)
        missing = [column for column in POLICY_COMPARISON_COLUMNS if column not in comparison]
        if missing:
            raise MassegError(f"policy comparison has no columns {missing}", results.policy_comparison,
                              "rerun `masseg-search tune-mss --policy learned`")
        for column in POLICY_COMPARISON_COLUMNS[1:]:
            comparison[column] = numeric_column(comparison, column, results.policy_comparison)
        study.policy_comparison = comparison
    for csv_path in sorted(path.glob("*.csv")):
        table = read_table(csv_path)
        scale, bias = first_present(table.columns, SCALE_COLUMNS), first_present(table.columns, BIAS_COLUMNS)
        metric, scene_type = first_present(table.columns, METRIC_COLUMNS), first_present(table.columns, TYPE_COLUMNS)
        if study.trials is None and "trial" in csv_path.stem and None not in (scale, bias, metric, scene_type):
            if "state" in table:  # failed or pruned trials have no value
                table = table[table["state"].astype(str) == "COMPLETE"]
            study.trials_path = csv_path
            study.trials = pd.DataFrame({
                "scene_type": table[scene_type].astype(str), "scale": numeric_column(table, scale, csv_path),
                "bias": numeric_column(table, bias, csv_path), "jf": numeric_column(table, metric, csv_path)}).dropna()
        elif csv_path.name != results.policy_comparison.name:
            study.tables[csv_path.name] = table
    # The study's own landscapes are replaced by the report's (one colour scale, the chosen point marked); the
    # policy's plot is shown with the policy.
    study.plots = sorted(p for p in path.glob("*.png")
                         if not p.name.startswith("landscape_") and p.name != results.policy_plot.name)
    return study


@dataclass
class EnsembleChoice:
    """Fusion candidates and their members (single configurations) scored on validation, and the choice."""

    name: str
    path: Path
    candidates: pd.DataFrame  # columns candidate, jf, chosen, kind ("fusion" or "member")
    held_out: bool | None = None
    notes: list[str] = field(default_factory=list)


def _choice_from_plan(path: Path) -> EnsembleChoice | None:
    """A plan YAML written by ``ensemble --select-on``: its ``selection`` block, or None for a plain plan."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise MassegError(f"not valid YAML ({exc})", path, "rerun `masseg-search ensemble --select-on`") from None
    selection = data.get("selection") if isinstance(data, dict) else None
    if selection is None:
        return None
    fix = "rerun `masseg-search ensemble --select-on`"
    if not isinstance(selection, dict) or not isinstance(selection.get("candidates"), list):
        raise MassegError("'selection' needs a 'candidates' list", path, fix)
    rows = []
    for entry in selection["candidates"]:
        try:
            rows.append({"candidate": str(entry["name"]), "jf": float(entry["jf"]), "kind": "fusion"})
        except (TypeError, KeyError, ValueError):
            raise MassegError(f"candidate entry {entry!r} needs a name and a numeric jf", path, fix) from None
    singles = selection.get("single_configs") or {}
    if not isinstance(singles, dict):
        raise MassegError("'selection.single_configs' must map config ids to J&F", path, fix)
    for config, value in singles.items():
        try:
            rows.append({"candidate": f"single {config}", "jf": float(value), "kind": "member"})
        except (TypeError, ValueError):
            raise MassegError(f"single_configs.{config} is not a number ({value!r})", path, fix) from None
    table = pd.DataFrame(rows, columns=["candidate", "jf", "kind"])
    table["chosen"] = (table["kind"] == "fusion") & (table["candidate"] == str(selection.get("chosen")))
    return EnsembleChoice(path.stem, path, table, selection.get("held_out"), list(selection.get("notes") or []))


def _choice_from_csv(path: Path) -> EnsembleChoice:
    """A candidates CSV (columns candidate/name, jf, optional chosen and kind)."""
    table = read_table(path, {"candidate": CANDIDATE_COLUMNS, "J&F": METRIC_COLUMNS})
    chosen_column = first_present(table.columns, ("chosen", "selected"))
    candidates = pd.DataFrame({
        "candidate": table[first_present(table.columns, CANDIDATE_COLUMNS)].astype(str),
        "jf": numeric_column(table, first_present(table.columns, METRIC_COLUMNS), path),
        "kind": table["kind"].astype(str) if "kind" in table else "fusion",
        "chosen": table[chosen_column].astype(str).str.lower().isin(("true", "1", "yes")) if chosen_column else False})
    return EnsembleChoice(path.parent.name, path, candidates)


def read_ensembles(results_dir: Path) -> list[EnsembleChoice]:
    """Fusion choices under ``plans/``, ``submissions/`` and ``ensemble/``: plan YAMLs with a ``selection`` block
    (``ensemble --select-on``) and ``*candidates*.csv`` tables."""
    choices = []
    for base in (results_dir / folder for folder in ENSEMBLE_FOLDERS):
        if not base.is_dir():
            continue
        # Only two levels deep: a submission folder holds a PNG per frame of every video.
        for path in sorted([*base.glob("*.*"), *base.glob("*/*.*")]):
            if path.suffix in (".yaml", ".yml"):
                choice = _choice_from_plan(path)
                if choice is not None:
                    choice.name = str(path.relative_to(results_dir))
                    choices.append(choice)
            elif path.suffix == ".csv" and "candidates" in path.name:
                choice = _choice_from_csv(path)
                choice.name = str(path.relative_to(results_dir))
                choices.append(choice)
    return choices


@dataclass
class Evaluation:
    """One `masseg-search evaluate` output folder."""

    name: str
    path: Path
    global_table: pd.DataFrame
    per_object: pd.DataFrame
    sources: dict = field(default_factory=dict)  # gt_root, pred_root when the evaluation recorded them

    @property
    def jf(self) -> float:
        """The global J&F mean."""
        column = first_present(self.global_table.columns, ("J&F-Mean", "jf_mean", "J&F"))
        return float(self.global_table[column].iloc[0])

    def video_scores(self) -> pd.Series:
        """Per-video J&F (mean over the video's objects of (J-Mean + F-Mean) / 2), worst first."""
        table = self.per_object
        video = table["video"] if "video" in table else table["Sequence"].astype(str).str.rsplit("_", n=1).str[0]
        jf = (table["J-Mean"] + table["F-Mean"]) / 2
        return jf.groupby(video.values).mean().sort_values()


def read_evaluation(path: Path, results_dir: Path) -> Evaluation:
    """Read an evaluate output folder: ``global.csv``, ``per_object.csv`` and, when present, ``evaluation.json``
    (``{"gt_root": ..., "pred_root": ...}``: the folders it scored, used for the overlays)."""
    global_path, per_object_path = path / "global.csv", path / "per_object.csv"
    global_table = read_table(global_path, {"J&F": ("J&F-Mean", "jf_mean", "J&F")})
    if global_table.empty:
        raise MassegError("the global table has no row", global_path, "rerun `masseg-search evaluate`")
    numeric_column(global_table, first_present(global_table.columns, ("J&F-Mean", "jf_mean", "J&F")), global_path)
    per_object = read_table(per_object_path, {"J": ("J-Mean",), "F": ("F-Mean",), "sequence": ("Sequence", "video")})
    for column in ("J-Mean", "F-Mean"):
        per_object[column] = numeric_column(per_object, column, per_object_path)
    sources = {}
    meta_path = path / EVALUATION_META
    if meta_path.is_file():
        try:
            sources = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise MassegError(f"not valid JSON ({exc})", meta_path, "rerun `masseg-search evaluate`") from None
        if not isinstance(sources, dict):
            raise MassegError("expected a JSON object with gt_root and pred_root", meta_path, "rerun `masseg-search evaluate`")
    name = str(path.relative_to(results_dir)) if path != results_dir else path.name
    return Evaluation(name, path, global_table, per_object, sources)


def find_evaluations(results_dir: Path) -> list[Evaluation]:
    """Every folder under ``results_dir`` holding both global.csv and per_object.csv."""
    folders = sorted({p.parent for p in results_dir.rglob("global.csv") if (p.parent / "per_object.csv").is_file()})
    return [read_evaluation(folder, results_dir) for folder in folders]




DEMO_TABLE, DEMO_GAINS = "demo_table.csv", "demo_gains.csv"  # written by masseg_search.pipeline.demo


@dataclass
class DemoTable:
    """The demo's closing table (one row a setting, test J&F with a bootstrap interval) and each stage's gain."""

    path: Path
    table: pd.DataFrame  # name, detail, jf, j, f, ci_low, ci_high
    gains: pd.DataFrame | None = None  # stage, row, against, gain, ci_low, ci_high, objects, videos


def read_demo_table(results_dir: Path) -> DemoTable | None:
    """``demo_table.csv`` (and ``demo_gains.csv``) under ``results_dir``, or None when the folder is no demo's."""
    path = results_dir / DEMO_TABLE
    if not path.is_file():
        return None
    table = read_table(path, {"setting": ("name",), "J&F": ("jf",), "interval low": ("ci_low",),
                              "interval high": ("ci_high",)})
    for column in ("jf", "ci_low", "ci_high", "j", "f"):
        if column in table:
            table[column] = numeric_column(table, column, path)
    gains = None
    gains_path = results_dir / DEMO_GAINS
    if gains_path.is_file():
        gains = read_table(gains_path, {"stage": ("stage",), "gain": ("gain",), "interval low": ("ci_low",),
                                        "interval high": ("ci_high",)})
        for column in ("gain", "ci_low", "ci_high"):
            gains[column] = numeric_column(gains, column, gains_path)
    return DemoTable(path, table, gains)
