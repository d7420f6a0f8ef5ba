"""The HTML page: one section per stage, tables, figures and overlays."""
from __future__ import annotations

import html
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from masseg_search.data.layout import ANNOTATION_DIR, DAVIS_LEVELS, atomic_write_bytes
from masseg_search.errors import MassegError
from masseg_search.report.overlays import render_overlays
from masseg_search.report.plots import (
    Figures,
    plot_bars,
    plot_intervals,
    plot_mss_landscape,
    plot_sweep_curves,
    plot_sweep_parameters,
    safe_filename,
)
from masseg_search.report.read import (
    ENSEMBLE_FOLDERS,
    EPOCH_COLUMNS,
    EVALUATION_META,
    METRIC_COLUMNS,
    STOPPED_COLUMNS,
    TRIAL_COLUMNS,
    Evaluation,
    MssStudy,
    find_evaluations,
    first_present,
    numeric_column,
    read_demo_table,
    read_ensembles,
    read_mss_study,
    read_sweep,
)
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT
from masseg_search.store.mss_results import MssResults

SWEEPS_DIR, MSS_DIR = "sweeps", "mss"
WORST_VIDEOS = 3
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


def _demo_section(results_dir: Path, figures: Figures) -> str | None:
    """The demo's closing table (test J&F per setting with its interval) and each stage's paired gain."""
    demo = read_demo_table(results_dir)
    if demo is None:
        return None
    table = demo.table
    parts = ["<p>Every row scored on the same synthetic test split; 95% bootstrap interval over videos.</p>",
             _figure(plot_intervals(list(table["name"]), list(table["jf"]), list(table["ci_low"]), list(table["ci_high"]),
                                    "test J&F per setting (95% interval over videos)", "J&F", figures, "demo_table.png"),
                     "test J&F of every setting with its 95% bootstrap interval over videos")]
    shown = pd.DataFrame({"setting": table["name"]})
    if "detail" in table:
        shown["detail"] = table["detail"]
    shown["J&F [95% CI]"] = [f"{v:.4f} [{lo:.4f}, {hi:.4f}]"
                             for v, lo, hi in zip(table["jf"], table["ci_low"], table["ci_high"])]
    for column, title in (("j", "J"), ("f", "F")):
        if column in table:
            shown[title] = table[column]
    parts.append(_table_html(shown))
    gains = demo.gains
    if gains is not None and len(gains):
        verdict = ["measured" if lo > 0 or hi < 0 else "within noise" for lo, hi in zip(gains["ci_low"], gains["ci_high"])]
        parts.append("<p>Each stage's gain on the same test objects, with a paired bootstrap 95% interval over videos: "
                     "an interval that excludes 0 is a difference this split measures, one that straddles 0 is not.</p>")
        parts.append(_figure(plot_intervals(list(gains["stage"]), list(gains["gain"]), list(gains["ci_low"]),
                                            list(gains["ci_high"]), "gain of each stage (paired 95% interval)",
                                            "J&F gain", figures, "demo_gains.png", zero_line=True),
                             "each stage's J&F gain over the row it is compared with (table: 'against'), paired on "
                             "the same objects"))
        shown_gains = gains.drop(columns=[c for c in ("ci_low", "ci_high") if c in gains]).assign(
            **{"95% CI": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(gains["ci_low"], gains["ci_high"])],
               "verdict": verdict})
        parts.append(_table_html(shown_gains))
    return "\n".join(parts)


def _sweeps_section(results_dir: Path, figures: Figures) -> str:
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
            trial_column = first_present(table.columns, TRIAL_COLUMNS)
            metric = first_present(table.columns, ("best_val_jf",) + METRIC_COLUMNS)
            epochs = first_present(table.columns, ("epochs", "epochs_run") + EPOCH_COLUMNS)
            stopped_column = first_present(table.columns, STOPPED_COLUMNS)
            if stopped_column is not None:
                stopped = table[stopped_column].astype(str).str.lower().isin(("true", "1", "yes"))
            elif epochs is not None:
                run = numeric_column(table, epochs, sweep.table_path)
                stopped = run < run.max()
            else:
                stopped = pd.Series(False, index=table.index)
            stopped_ids = set(table.loc[stopped, trial_column].astype(str))
            summary = (f"{len(table)} trials; {int(stopped.sum())} stopped early by ASHA"
                       + (f": {', '.join(sorted(stopped_ids))}" if stopped_ids else ""))
            if metric is not None:
                best = numeric_column(table, metric, sweep.table_path)
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
    for scene_type, knobs in study.best.types.items():
        row = {"scene type": scene_type, **knobs.as_dict()}
        row.update({k: v for k, v in study.best.details.get(scene_type, {}).items() if k not in ("scale", "bias")})
        if study.trials is not None:
            of_type = study.trials[study.trials["scene_type"] == scene_type]
            for label, (base_scale, base_bias) in (("20/-10 in-sample", SAM2_DEFAULT), ("7.5/-4 in-sample", MASSEG_BEST)):
                match = of_type[np.isclose(of_type["scale"], base_scale) & np.isclose(of_type["bias"], base_bias)]
                row[label] = float(match["jf"].mean()) if len(match) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _policy_part(study: MssStudy, figures: Figures) -> list[str]:
    """``tune-mss --policy learned``: the rules, every policy's held-out J&F and the paired gains, the study's plot."""
    comparison, policy = study.policy_comparison, study.policy
    if comparison is None and policy is None:
        return []
    parts = ["<h4>Learned policy</h4>",
             "<p>A shallow tree over first-frame features chooses each object's (scale, bias); it is compared on the "
             "held-out folds with one fixed configuration (fixed), the hand-written scene types tuned per type "
             "(per_type: the held-out result above) and each object's best candidate (oracle: the upper bound, "
             "never a result). Every policy is fit on the other folds only; intervals are 95% bootstrap over "
             "videos, gains are paired on the same objects.</p>"]
    if policy is not None:
        items = "".join(f"<li><code>{html.escape(rule.leaf)}</code>: {html.escape(rule.text())} "
                        f"({rule.objects} objects)</li>" for rule in policy.rules)
        parts.append(f"<p>Rules of the final policy (depth {policy.depth}, fit on every validation object; "
                     f"<code>policy.yaml</code>, usable wherever best_configs.yaml is):</p><ol>{items}</ol>")
    if comparison is not None:
        names = [f"{name} (upper bound)" if name == "oracle" else name for name in comparison["policy"]]
        parts.append(_figure(plot_intervals(names, list(comparison["heldout_jf"]), list(comparison["ci_low"]),
                                            list(comparison["ci_high"]), f"{study.name}: held-out J&F per policy", "J&F",
                                            figures, f"mss_{safe_filename(study.name)}_policy_jf.png"),
                             "held-out J&F of every policy with its 95% bootstrap interval over videos"))
        rows = comparison.set_index("policy")
        gains = [(f"{name} over {against}", rows.loc[name, f"gain_over_{against}"],
                  rows.loc[name, f"gain_over_{against}_ci_low"], rows.loc[name, f"gain_over_{against}_ci_high"])
                 for name, against in (("learned", "fixed"), ("learned", "per_type"), ("per_type", "fixed"),
                                       ("oracle", "per_type")) if name in rows.index]
        if gains:
            labels, values, lows, highs = (list(column) for column in zip(*gains))
            labels = [f"{label} (upper bound)" if label.startswith("oracle") else label for label in labels]
            parts.append(_figure(plot_intervals(labels, values, lows, highs, f"{study.name}: paired held-out gains",
                                                "J&F gain", figures, f"mss_{safe_filename(study.name)}_policy_gains.png",
                                                zero_line=True),
                                 "paired held-out gains (green: measured gain, red: measured loss, grey: within noise)"))
        shown = pd.DataFrame({"policy": comparison["policy"]})
        shown["held-out J&F [95% CI]"] = _interval(comparison.rename(columns={"ci_low": "heldout_jf_ci_low",
                                                                              "ci_high": "heldout_jf_ci_high"}), "heldout_jf")
        for column, title in (("gain_over_fixed", "gain over fixed"), ("gain_over_per_type", "gain over per_type")):
            shown[title] = _interval(comparison, column)
        for column in ("objects", "videos", "note"):
            if column in comparison:
                shown[column] = comparison[column].fillna("")
        parts.append(_table_html(shown))
    plot = MssResults(study.path).policy_plot
    if plot.is_file():
        parts.append(_figure(figures.copy(plot, f"mss_{safe_filename(study.name)}/{plot.name}"),
                             f"{study.name}: the learned rules beside the held-out J&F and gains (tune-mss)"))
    return parts


def _mss_section(results_dir: Path, figures: Figures) -> str:
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
                                 "diamond = MASSeg 7.5/-4.0; each title names the knobs that mattered most (Optuna "
                                 "parameter importances; the study's importance and slices plots below show all)"))
        else:
            parts.append(_missing("No trials table (a trials CSV with scene_type, scale, bias and J&F columns)."))
        per_type = _per_type_rows(study)
        if per_type is not None:
            default = (f" (other scene types get scale {study.best.default.scale:g}, bias {study.best.default.bias:g})"
                       if study.best is not None else "")
            parts.append(f"<p>Chosen configuration per scene type{default}. In-sample values are the search's own "
                         "and optimistic; the held-out columns (tuned on the other folds, bootstrap 95% interval over "
                         "videos) are the estimate to trust.</p>")
            parts.append(_table_html(per_type))
        else:
            parts.append(_missing(f"No per_type.csv or best_configs.yaml in <code>{html.escape(str(study.path))}</code>."))
        parts += _policy_part(study, figures)
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
            parts.append(_figure(figures.copy(plot, f"mss_{safe_filename(study.name)}/{plot.name}"), f"{study.name}: {plot.stem}"))
    return "\n".join(parts)


def _ensemble_section(results_dir: Path, figures: Figures) -> str:
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
                                       f"ensemble_{index}_{safe_filename(choice.name)}.png"),
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


def _evaluations_section(results_dir: Path, figures: Figures, worst_videos: int, data_root: Path | None,
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

        gt_root, pred_root = inputs[evaluation.name]
        sheets = []
        for video in worst.index:
            # Other evaluations of the same ground truth that scored this video, side by side for comparison.
            peers = [other.name for other in evaluations if other is not evaluation and inputs[other.name] is not None
                     and inputs[other.name][0] == gt_root and video in scores[other.name].index][:MAX_COMPARED - 1]
            names = [evaluation.name, *peers]
            written = render_overlays(gt_root, str(video), [pred_root, *(inputs[name][1] for name in peers)],
                                      figures.files_dir / "overlays" / safe_filename(evaluation.name), labels=names,
                                      gif=False, frame_strips=False, contact_rows=OVERLAY_ROWS, progress=False)
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
    figures = Figures(files_dir, out.parent)
    demo = _demo_section(results_dir, figures)
    sections = [("demo", "Demo: test J&F per setting", demo)] if demo is not None else []
    sections += [
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
