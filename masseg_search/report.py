"""`masseg-search report RESULTS_DIR`: one static HTML page (offline, no CDN) about everything under RESULTS_DIR.

Sections, each shown when its inputs exist and saying what is missing when they do not:

- **Sweeps** (``sweeps/<name>/``): the results table (one row a trial), Ray's per-trial ``progress.csv`` (or
  ``result.json``) -> validation J&F per epoch per trial, each searched parameter against the best validation J&F,
  and which trials ASHA stopped early.
- **Mask scaling** (``mss/<study>/``): ``best_configs.yaml`` + the trials table -> the J&F landscape over
  (scale, bias) per scene type with the chosen point and the two fixed baselines (SAM2's 20/-10, MASSeg's
  7.5/-4.0), the per-type table, held-out estimates and the study's other tables and plots.
- **Ensemble** (``plans/``, ``submissions/``, ``ensemble/``): plan YAMLs written by ``ensemble --select-on`` (their
  ``selection`` block: every candidate's and every single configuration's validation J&F) or ``*candidates*.csv``
  tables -> the gain of the chosen fusion over its best member.
- **Evaluations** (any folder holding ``global.csv`` + ``per_object.csv``, as `masseg-search evaluate` writes):
  the global scores side by side and the worst videos with overlays from the viewer (masseg_search.view).

Plots are PNG files in ``<page stem>_files/`` next to the page, linked relatively. Readers tolerate missing pieces
but not malformed ones: a file that exists and cannot be read is a MassegError naming it.
"""
from __future__ import annotations

import html
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from masseg_search.best_configs import MASSEG_BEST, SAM2_DEFAULT, BestConfigs, load_best_configs
from masseg_search.data.layout import ANNOTATION_DIR, DAVIS_LEVELS, atomic_write_bytes
from masseg_search.errors import MassegError

SWEEPS_DIR, MSS_DIR = "sweeps", "mss"
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
WORST_VIDEOS = 3
EVALUATION_META = "evaluation.json"  # what an evaluation scored: {"gt_root": ..., "pred_root": ...}
OVERLAY_ROWS = 4
OVERLAY_PANEL_PX = 280  # shown width per panel of an overlay contact sheet
MAX_COMPARED = 4  # predictions side by side in a worst-video overlay
MAX_TABLE_ROWS = 60
SMALL_TABLE_ROWS = 30

_PAGE_SCRIPT = """
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !(img.complete && img.naturalWidth > 0); });
  document.body.dataset.images = String(images.length);
  document.body.dataset.imagesBroken = String(broken.length);
  document.body.dataset.imagesLoaded = broken.length === 0 ? 'true' : 'false';
  document.body.dataset.pageHeight = String(document.documentElement.scrollHeight);
});
"""
_PAGE_STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; } th { background: #eee; }
.missing { background: #fff4e0; border-left: 4px solid #e09000; padding: 0.4em 0.8em; }
.note { color: #555; font-size: 0.9em; } img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
nav a { margin-right: 1em; } div.table { overflow-x: auto; } figure { margin: 0.5em 0 1.5em; }
figcaption { color: #555; font-size: 0.85em; }
div.overlays { display: flex; flex-wrap: wrap; gap: 1em; } div.overlays figure { margin: 0; }
"""


# ------------------------------------------------------------------------------------------------ reading


def _first(columns: Iterable[str], candidates: Iterable[str]) -> str | None:
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
        if _first(table.columns, names) is None:
            raise MassegError(f"table has no {role} column (one of {', '.join(names)}); it has "
                              f"{', '.join(map(str, table.columns))}", path, "rerun the command that wrote it")
    return table


def _numeric(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
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
    metric = _first(table.columns, METRIC_COLUMNS)
    epoch = _first(table.columns, EPOCH_COLUMNS)
    if metric is None or epoch is None:
        raise MassegError(f"no validation J&F ({', '.join(METRIC_COLUMNS)}) or epoch column "
                          f"({', '.join(EPOCH_COLUMNS)}); columns: {', '.join(map(str, table.columns))}", path,
                          "rerun the sweep with the project's trainable")
    trial = table["trial_id"].astype(str) if "trial_id" in table else pd.Series([path.parent.name] * len(table))
    return pd.DataFrame({"trial_id": trial.values, "epoch": _numeric(table, epoch, path).values,
                         "jf": _numeric(table, metric, path).values})


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
        if _first(table.columns, TRIAL_COLUMNS) is not None:
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


def read_mss_study(path: Path) -> MssStudy:
    """Read ``mss/<study>/``: best_configs.yaml, the trials CSV (scene type, scale, bias, J&F) and other CSVs."""
    study = MssStudy(path.name, path)
    if (path / "best_configs.yaml").is_file():
        study.best = load_best_configs(path / "best_configs.yaml")
    for csv_path in sorted(path.glob("*.csv")):
        table = read_table(csv_path)
        scale, bias = _first(table.columns, SCALE_COLUMNS), _first(table.columns, BIAS_COLUMNS)
        metric, scene_type = _first(table.columns, METRIC_COLUMNS), _first(table.columns, TYPE_COLUMNS)
        if study.trials is None and "trial" in csv_path.stem and None not in (scale, bias, metric, scene_type):
            if "state" in table:  # failed or pruned trials have no value
                table = table[table["state"].astype(str) == "COMPLETE"]
            study.trials_path = csv_path
            study.trials = pd.DataFrame({
                "scene_type": table[scene_type].astype(str), "scale": _numeric(table, scale, csv_path),
                "bias": _numeric(table, bias, csv_path), "jf": _numeric(table, metric, csv_path)}).dropna()
        else:
            study.tables[csv_path.name] = table
    # The study's own landscapes are replaced by the report's (one colour scale, the chosen point marked).
    study.plots = sorted(p for p in path.glob("*.png") if not p.name.startswith("landscape_"))
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
    chosen_column = _first(table.columns, ("chosen", "selected"))
    candidates = pd.DataFrame({
        "candidate": table[_first(table.columns, CANDIDATE_COLUMNS)].astype(str),
        "jf": _numeric(table, _first(table.columns, METRIC_COLUMNS), path),
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
        column = _first(self.global_table.columns, ("J&F-Mean", "jf_mean", "J&F"))
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
    _numeric(global_table, _first(global_table.columns, ("J&F-Mean", "jf_mean", "J&F")), global_path)
    per_object = read_table(per_object_path, {"J": ("J-Mean",), "F": ("F-Mean",), "sequence": ("Sequence", "video")})
    for column in ("J-Mean", "F-Mean"):
        per_object[column] = _numeric(per_object, column, per_object_path)
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


# ------------------------------------------------------------------------------------------------ plotting


class _Figures:
    """Saves matplotlib figures as PNGs in the page's files folder and returns their relative paths."""

    def __init__(self, files_dir: Path, page_dir: Path):
        import matplotlib

        matplotlib.use("Agg", force=True)
        self.files_dir, self.page_dir = files_dir, page_dir
        files_dir.mkdir(parents=True, exist_ok=True)

    def save(self, figure, name: str) -> str:
        import io

        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=90)
        plt.close(figure)
        path = self.files_dir / name
        atomic_write_bytes(path, buffer.getvalue())
        return self.relative(path)

    def copy(self, source: Path, name: str) -> str:
        path = self.files_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        return self.relative(path)

    def relative(self, path: Path) -> str:
        return path.relative_to(self.page_dir).as_posix()


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def plot_sweep_curves(sweep: Sweep, figures: _Figures, stopped: set[str]) -> str:
    """Validation J&F per epoch, one line per trial; trials ASHA stopped are dashed."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(7, 4))
    for trial_id, rows in sweep.progress.groupby("trial_id"):
        style = "--" if trial_id in stopped else "-"
        line = axes.plot(rows["epoch"], rows["jf"], style, marker="o", markersize=3,
                         label=f"{trial_id}{' (stopped)' if trial_id in stopped else ''}")[0]
        if trial_id in stopped:  # where ASHA stopped it
            axes.plot(rows["epoch"].iloc[-1:], rows["jf"].iloc[-1:], "x", color=line.get_color(), markersize=9, mew=2)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("validation J&F")
    axes.set_title(f"sweep {sweep.name}: validation J&F per epoch")
    axes.grid(alpha=0.3)
    if sweep.progress["trial_id"].nunique() <= 12:
        axes.legend(fontsize=7)
    return figures.save(figure, f"sweep_{_safe(sweep.name)}_curves.png")


def plot_sweep_parameters(sweep: Sweep, best: pd.Series, stopped: pd.Series, figures: _Figures) -> str:
    """Each searched parameter against the trial's best validation J&F (stopped trials hollow)."""
    import matplotlib.pyplot as plt

    count = len(sweep.parameters)
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3 * rows), squeeze=False)
    for axis, parameter in zip(axes.flat, sweep.parameters):
        values = sweep.table[parameter]
        axis.scatter(values[~stopped], best[~stopped], label="completed", color="C0")
        axis.scatter(values[stopped], best[stopped], label="stopped by ASHA", facecolors="none", edgecolors="C3")
        axis.set_xlabel(parameter.removeprefix("config/"))
        axis.set_ylabel("best validation J&F")
        if values.min() > 0 and values.max() / values.min() > 20:
            axis.set_xscale("log")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    return figures.save(figure, f"sweep_{_safe(sweep.name)}_parameters.png")


def plot_mss_landscape(study: MssStudy, figures: _Figures) -> str:
    """Per scene type: trials over (scale, bias) coloured by J&F, the chosen point and the two fixed baselines."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    types = sorted(study.trials["scene_type"].unique())
    columns = min(len(types), 3)
    rows = math.ceil(len(types) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    low, high = study.trials["jf"].min(), study.trials["jf"].max()
    for axis, scene_type in zip(axes.flat, types):
        trials = study.trials[study.trials["scene_type"] == scene_type]
        points = axis.scatter(trials["scale"], trials["bias"], c=trials["jf"], cmap="viridis", vmin=low, vmax=high, s=25)
        axis.scatter(*SAM2_DEFAULT, marker="s", facecolors="none", edgecolors="red", s=120, label="SAM2 20/-10")
        axis.scatter(*MASSEG_BEST, marker="D", facecolors="none", edgecolors="orange", s=120, label="MASSeg 7.5/-4")
        if study.best is not None and scene_type in study.best.types:
            axis.scatter(*study.best.types[scene_type], marker="*", color="magenta", s=260, edgecolors="black",
                         label="chosen")
        axis.set_xscale("log")
        scales = list(trials["scale"]) + [SAM2_DEFAULT[0], MASSEG_BEST[0]]
        axis.set_xlim(min(scales) / 1.3, max(scales) * 1.3)
        axis.set_xticks([t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if min(scales) / 1.3 <= t <= max(scales) * 1.3])
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("sigmoid scale (log)")
        axis.set_ylabel("sigmoid bias")
        axis.set_title(f"{scene_type} ({len(trials)} trials)")
        figure.colorbar(points, ax=axis, label="J&F")
    for axis in list(axes.flat)[len(types):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    return figures.save(figure, f"mss_{_safe(study.name)}_landscape.png")


def plot_bars(names: list[str], values: list[float], highlight: list[bool], title: str, figures: _Figures,
              file_name: str) -> str:
    """Horizontal bars of J&F (highlighted bars in a second colour)."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    colours = ["C1" if flag else "C0" for flag in highlight]
    axis.barh(range(len(names)), values, color=colours)
    axis.set_yticks(range(len(names)), names, fontsize=8)
    for index, value in enumerate(values):
        axis.text(value, index, f" {value:.3f}", va="center", fontsize=8)
    axis.set_xlim(0, max(1.0, max(values) * 1.1) if values else 1.0)
    axis.set_xlabel("J&F")
    axis.set_title(title)
    axis.invert_yaxis()
    return figures.save(figure, file_name)


# ------------------------------------------------------------------------------------------------ HTML


def _table_html(table: pd.DataFrame, base: Path | None = None) -> str:
    """An HTML table (first MAX_TABLE_ROWS rows); paths under ``base`` are shown relative to it."""
    shown = table.head(MAX_TABLE_ROWS).copy()
    if base is not None:
        prefix = str(base.resolve()) + "/"
        for column in shown.columns:
            if pd.api.types.is_object_dtype(shown[column]) or pd.api.types.is_string_dtype(shown[column]):
                shown[column] = shown[column].map(lambda v: v.replace(prefix, "", 1) if isinstance(v, str) else v)
    text = shown.to_html(index=False, float_format=lambda v: f"{v:.4g}", border=0, escape=True, na_rep="")
    text = f'<div class="table">{text}</div>'
    if len(table) > MAX_TABLE_ROWS:
        text += f'<p class="note">first {MAX_TABLE_ROWS} of {len(table)} rows</p>'
    return text


def _missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def _figure(src: str, caption: str, css_class: str = "plot", max_width: int | None = None) -> str:
    style = f' style="max-width: {max_width}px"' if max_width else ""
    return (f'<figure{style}><img class="{css_class}" src="{html.escape(src)}" alt="{html.escape(caption)}">'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>')


def _sweeps_section(results_dir: Path, figures: _Figures) -> str:
    root = results_dir / SWEEPS_DIR
    sweep_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not sweep_dirs:
        return _missing(f"No sweep found: expected <code>{html.escape(str(root))}/&lt;name&gt;/</code>. "
                        "Run <code>masseg-search train-sweep</code>.")
    parts = []
    for sweep in (read_sweep(path) for path in sweep_dirs):
        parts.append(f"<h3>Sweep {html.escape(sweep.name)}</h3>")
        stopped_ids: set[str] = set()
        table_parts = []
        if sweep.table is not None:
            table = sweep.table
            trial_column = _first(table.columns, TRIAL_COLUMNS)
            metric = _first(table.columns, ("best_val_jf",) + METRIC_COLUMNS)
            epochs = _first(table.columns, ("epochs", "epochs_run") + EPOCH_COLUMNS)
            stopped_column = _first(table.columns, STOPPED_COLUMNS)
            if stopped_column is not None:
                stopped = table[stopped_column].astype(str).str.lower().isin(("true", "1", "yes"))
            elif epochs is not None:
                run = _numeric(table, epochs, sweep.table_path)
                stopped = run < run.max()
            else:
                stopped = pd.Series(False, index=table.index)
            stopped_ids = set(table.loc[stopped, trial_column].astype(str))
            summary = (f"{len(table)} trials; {int(stopped.sum())} stopped early by ASHA"
                       + (f": {', '.join(sorted(stopped_ids))}" if stopped_ids else ""))
            if metric is not None:
                best = _numeric(table, metric, sweep.table_path)
                winner = table.loc[best.idxmax(), trial_column] if best.notna().any() else None
                summary += f"; best validation J&F {best.max():.4f} (trial {winner})"
                if sweep.parameters:
                    table_parts.append(_figure(plot_sweep_parameters(sweep, best, stopped, figures),
                                               "each searched parameter against the trial's best validation J&F "
                                               "(hollow: stopped by ASHA)"))
                else:
                    table_parts.append(_missing("The results table has no varying numeric parameter columns to plot."))
            table_parts.insert(0, f"<p>{html.escape(summary)}</p>")
            table_parts.append(_table_html(table, sweep.path))
        else:
            table_parts.append(_missing(f"No results table (a CSV with a trial_id column) in "
                                        f"<code>{html.escape(str(sweep.path))}</code>; the sweep may still be running."))
        if sweep.progress is not None:
            parts.append(_figure(plot_sweep_curves(sweep, figures, stopped_ids),
                                 "validation J&F per epoch per trial (dashed, x at the last epoch: stopped by ASHA)"))
        else:
            parts.append(_missing("No per-epoch trial progress (Ray's progress.csv / result.json) found."))
        parts += table_parts
    return "\n".join(parts)


def _interval(table: pd.DataFrame, column: str) -> pd.Series | None:
    """``value [low, high]`` strings from ``column`` and its ``_ci_low``/``_ci_high`` columns."""
    if column not in table:
        return None
    low, high = table.get(f"{column}_ci_low"), table.get(f"{column}_ci_high")
    if low is None or high is None:
        return table[column].map(lambda v: f"{v:.4f}")
    return pd.Series([f"{v:.4f} [{lo:.4f}, {hi:.4f}]" for v, lo, hi in zip(table[column], low, high)], index=table.index)


def _per_type_rows(study: MssStudy) -> pd.DataFrame | None:
    """The per-type table: chosen (scale, bias), in-sample J&F of it and of both baselines, held-out estimates."""
    source = study.tables.get("per_type.csv")
    if source is not None:
        path = study.path / "per_type.csv"
        for column in ("scene_type", "scale", "bias"):
            if column not in source:
                raise MassegError(f"per-type table has no {column!r} column", path, "rerun `masseg-search tune-mss`")
        table = pd.DataFrame({"scene type": source["scene_type"].astype(str)})
        for column, title in (("objects", "objects"), ("videos", "videos"), ("trials", "trials"), ("scale", "scale"),
                              ("bias", "bias"), ("jf_in_sample", "J&F in-sample"),
                              ("jf_in_sample_sam2_default", "20/-10 in-sample"),
                              ("jf_in_sample_masseg", "7.5/-4 in-sample")):
            if column in source:
                table[title] = source[column]
        for column, title in (("heldout_chosen", "held-out chosen"), ("heldout_sam2_default", "held-out 20/-10"),
                              ("heldout_masseg", "held-out 7.5/-4"),
                              ("heldout_gain_over_sam2_default", "held-out gain over 20/-10"),
                              ("heldout_gain_over_masseg", "held-out gain over 7.5/-4")):
            values = _interval(source, column)
            if values is not None:
                table[title] = values
        return table
    if study.best is None:
        return None
    rows = []
    for scene_type, (scale, bias) in study.best.types.items():
        row = {"scene type": scene_type, "scale": scale, "bias": bias}
        row.update({k: v for k, v in study.best.details.get(scene_type, {}).items() if k not in ("scale", "bias")})
        if study.trials is not None:
            of_type = study.trials[study.trials["scene_type"] == scene_type]
            for label, (base_scale, base_bias) in (("20/-10 in-sample", SAM2_DEFAULT), ("7.5/-4 in-sample", MASSEG_BEST)):
                match = of_type[np.isclose(of_type["scale"], base_scale) & np.isclose(of_type["bias"], base_bias)]
                row[label] = float(match["jf"].mean()) if len(match) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _mss_section(results_dir: Path, figures: _Figures) -> str:
    root = results_dir / MSS_DIR
    study_dirs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not study_dirs:
        return _missing(f"No mask-scaling study found: expected <code>{html.escape(str(root))}/&lt;study&gt;/</code>. "
                        "Run <code>masseg-search tune-mss --study val</code>.")
    parts = []
    for study in (read_mss_study(path) for path in study_dirs):
        parts.append(f"<h3>Study {html.escape(study.name)}</h3>")
        if study.trials is not None and not study.trials.empty:
            parts.append(_figure(plot_mss_landscape(study, figures),
                                 "J&F over (scale, bias) per scene type: star = chosen, square = SAM2 20/-10, "
                                 "diamond = MASSeg 7.5/-4.0"))
        else:
            parts.append(_missing("No trials table (a trials CSV with scene_type, scale, bias and J&F columns)."))
        per_type = _per_type_rows(study)
        if per_type is not None:
            default = (f" (other scene types get scale {study.best.default[0]:g}, bias {study.best.default[1]:g})"
                       if study.best is not None else "")
            parts.append(f"<p>Chosen configuration per scene type{default}. In-sample values are the search's own "
                         "and optimistic; the held-out columns (tuned on the other folds, bootstrap 95% interval over "
                         "videos) are the estimate to trust.</p>")
            parts.append(_table_html(per_type))
        else:
            parts.append(_missing(f"No per_type.csv or best_configs.yaml in <code>{html.escape(str(study.path))}</code>."))
        large = []
        for name, table in study.tables.items():
            if name == "per_type.csv":
                continue
            if len(table) > SMALL_TABLE_ROWS or "object_id" in table:
                large.append(f"{name} ({len(table)} rows)")
            else:
                parts.append(f"<h4>{html.escape(name)}</h4>{_table_html(table)}")
        if large:
            parts.append(f'<p class="note">Not shown (per-object detail): {html.escape(", ".join(large))} in '
                         f"<code>{html.escape(str(study.path))}</code>.</p>")
        for plot in study.plots:
            parts.append(_figure(figures.copy(plot, f"mss_{_safe(study.name)}/{plot.name}"), f"{study.name}: {plot.stem}"))
    return "\n".join(parts)


def _ensemble_section(results_dir: Path, figures: _Figures) -> str:
    choices = read_ensembles(results_dir)
    if not choices:
        folders = ", ".join(f"<code>{html.escape(str(results_dir / f))}/</code>" for f in ENSEMBLE_FOLDERS)
        return _missing(f"No fusion choice found (a plan YAML with a <code>selection</code> block, or a candidates CSV, "
                        f"under {folders}). Run <code>masseg-search ensemble --select-on val ... --out-plan "
                        f"{html.escape(str(results_dir / 'plans' / 'val.yaml'))}</code>.")
    parts = []
    for index, choice in enumerate(choices):
        table = choice.candidates.sort_values("jf", ascending=False)
        parts.append(f"<h3>{html.escape(choice.name)}</h3>")
        chosen = table[table["chosen"]]
        members = table[table["kind"] == "member"]
        others = members if len(members) else table[~table["chosen"]]
        if len(chosen) and len(others):
            gain = float(chosen["jf"].iloc[0] - others["jf"].iloc[0])
            against = "its best member" if len(members) else "the best other candidate"
            parts.append(f"<p>Chosen: <b>{html.escape(chosen['candidate'].iloc[0])}</b>, J&amp;F "
                         f"{chosen['jf'].iloc[0]:.4f}; gain over {against} "
                         f"({html.escape(others['candidate'].iloc[0])}): {gain:+.4f}.</p>")
        if choice.held_out is not None:
            parts.append('<p class="note">' + ("Scored on held-out folds: choices inside a candidate were made on the "
                         "other folds." if choice.held_out else "Chosen and scored on the same videos (no folds file): "
                         "the numbers are optimistic.") + "</p>")
        for note in choice.notes:
            parts.append(f'<p class="note">{html.escape(str(note))}</p>')
        parts.append(_figure(plot_bars(list(table["candidate"]), list(table["jf"]), list(table["chosen"]),
                                       "validation J&F: fusion candidates and single configurations", figures,
                                       f"ensemble_{index}_{_safe(choice.name)}.png"),
                             "validation J&F of every fusion candidate and member configuration (chosen in orange)"))
        parts.append(_table_html(table))
    return "\n".join(parts)


def _dataset_root(gt_root: Path) -> Path:
    """The dataset root above an ``Annotations[/<level>]`` folder (the viewer needs the frames beside it)."""
    if gt_root.name in DAVIS_LEVELS and gt_root.parent.name == ANNOTATION_DIR:
        return gt_root.parent.parent
    return gt_root.parent if gt_root.name == ANNOTATION_DIR else gt_root


def _evaluation_inputs(evaluation: Evaluation, data_root: Path | None) -> tuple[Path, Path] | None:
    """(dataset root, prediction folder) an evaluation scored, when recorded and still there."""
    gt_root = data_root or (Path(evaluation.sources["gt_root"]) if "gt_root" in evaluation.sources else None)
    pred_root = Path(evaluation.sources["pred_root"]) if "pred_root" in evaluation.sources else None
    if gt_root is None or pred_root is None or not gt_root.is_dir() or not pred_root.is_dir():
        return None
    return _dataset_root(gt_root).resolve(), pred_root


def _evaluations_section(results_dir: Path, figures: _Figures, worst_videos: int, data_root: Path | None,
                         overlays: bool) -> str:
    evaluations = find_evaluations(results_dir)
    if not evaluations:
        return _missing("No evaluation found (a folder with global.csv and per_object.csv). Run "
                        "<code>masseg-search evaluate</code>.")
    parts = [_figure(plot_bars([e.name for e in evaluations], [e.jf for e in evaluations],
                               [False] * len(evaluations), "global J&F per evaluation", figures,
                               "evaluations_global.png"), "global J&F of every evaluation found")]
    parts.append(_table_html(pd.concat([e.global_table.assign(evaluation=e.name) for e in evaluations],
                                       ignore_index=True)))
    inputs = {evaluation.name: _evaluation_inputs(evaluation, data_root) for evaluation in evaluations}
    scores = {evaluation.name: evaluation.video_scores() for evaluation in evaluations}
    for evaluation in evaluations:
        worst = scores[evaluation.name].head(worst_videos)
        parts.append(f"<h3>Worst videos: {html.escape(evaluation.name)}</h3>")
        parts.append(_table_html(pd.DataFrame({"video": worst.index, "J&F": worst.values})))
        if not overlays:
            continue
        if inputs[evaluation.name] is None:
            parts.append(_missing(
                "No overlays: the evaluation folder does not name existing ground-truth and prediction folders "
                f"(<code>{EVALUATION_META}</code> with <code>gt_root</code> and <code>pred_root</code>); view a video "
                "with <code>masseg-search view --data GT --video V --predictions PRED</code>."))
            continue
        from masseg_search.view import render_overlays

        gt_root, pred_root = inputs[evaluation.name]
        sheets = []
        for video in worst.index:
            # Other evaluations of the same ground truth that scored this video, side by side for comparison.
            peers = [other.name for other in evaluations if other is not evaluation and inputs[other.name] is not None
                     and inputs[other.name][0] == gt_root and video in scores[other.name].index][:MAX_COMPARED - 1]
            names = [evaluation.name, *peers]
            written = render_overlays(gt_root, str(video), [pred_root, *(inputs[name][1] for name in peers)],
                                      figures.files_dir / "overlays" / _safe(evaluation.name), labels=names,
                                      gif=False, frame_strips=False, contact_rows=OVERLAY_ROWS)
            sheet = next(p for p in written if p.name == "contact_sheet.png")
            compared = ", ".join(f"{name} {scores[name][video]:.3f}" for name in names)
            sheets.append(_figure(figures.relative(sheet), f"{video}: ground truth | {' | '.join(names)} "
                                  f"(video J&F: {compared}); evenly spaced frames", "overlay",
                                  max_width=OVERLAY_PANEL_PX * (len(names) + 1)))
        parts.append(f'<div class="overlays">{"".join(sheets)}</div>')
    return "\n".join(parts)


def build_report(results_dir: str | Path, out: str | Path | None = None, data_root: str | Path | None = None,
                 worst_videos: int = WORST_VIDEOS, overlays: bool = True) -> Path:
    """Write the HTML report about ``results_dir`` (default ``results_dir/report.html``) and return its path.

    Plots go to ``<page stem>_files/`` beside the page. ``data_root`` replaces the ground-truth dataset that
    evaluations record for their overlays (e.g. after the results moved to another machine).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise MassegError("results folder not found", results_dir, "pass the folder the pipeline wrote (e.g. results/)")
    out = Path(out) if out is not None else results_dir / "report.html"
    files_dir = out.parent / f"{out.stem}_files"
    if files_dir.is_dir():
        shutil.rmtree(files_dir)
    figures = _Figures(files_dir, out.parent)
    sections = [
        ("sweeps", "Fine-tuning sweeps", _sweeps_section(results_dir, figures)),
        ("mss", "Mask scaling per scene type", _mss_section(results_dir, figures)),
        ("ensemble", "Ensemble", _ensemble_section(results_dir, figures)),
        ("evaluations", "Evaluations and worst videos",
         _evaluations_section(results_dir, figures, worst_videos, Path(data_root) if data_root else None, overlays)),
    ]
    nav = " ".join(f'<a href="#{anchor}">{html.escape(title)}</a>' for anchor, title, _ in sections)
    body = "\n".join(f'<h2 id="{anchor}">{html.escape(title)}</h2>\n{content}' for anchor, title, content in sections)
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>masseg-search report: {html.escape(results_dir.name)}</title><style>{_PAGE_STYLE}</style></head>\n"
            f"<body><h1>masseg-search report</h1><p class=\"note\">Results folder: "
            f"<code>{html.escape(str(results_dir.resolve()))}</code></p><nav>{nav}</nav>\n{body}\n"
            f"<script>{_PAGE_SCRIPT}</script></body></html>\n")
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
