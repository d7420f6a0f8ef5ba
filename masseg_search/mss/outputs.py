"""What tune-mss leaves for the user: best_configs.yaml, CSV tables, PNG plots, and what the Optuna dashboard shows.

Under ``results/mss/<study>/``: ``best_configs.yaml`` (read by infer and ensemble), ``trials.csv`` (every trial of
every scene-type study, one column per searched knob, pruned ones with their mean over the videos they ran),
``per_type.csv`` (chosen config, in-sample values, the two baselines, held-out numbers), ``importance.csv`` (per
type, how much each searched knob mattered: Optuna's parameter importances, PED-ANOVA), ``holdout_objects.csv`` /
``holdout_summary.csv`` / ``folds.json`` (with ``--cv``), ``landscape_<type>.png`` (scale x bias),
``slices_<type>.png`` (J&F against each searched knob), ``importance.png``, ``history.png``, ``gains.png`` (and with
``--policy learned``, :mod:`masseg_search.mss.policy` writes the policy files and ``policy.png`` from
:func:`plot_policy`). In the storage, each study gets user attributes (scene-type rule, videos, objects,
checkpoint), a markdown note (best configuration, held-out estimate) and the plots as artifacts
(``optuna-dashboard <storage> --artifact-dir studies/artifacts``).
"""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import ticker  # noqa: E402

from masseg_search.config import ProjectConfig, SceneTypesSection  # noqa: E402
from masseg_search.data.layout import atomic_write_bytes  # noqa: E402
from masseg_search.mss.holdout import HoldoutResult  # noqa: E402
from masseg_search.mss.studies import KNOBS_ATTR, knobs_from_params  # noqa: E402
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT, BestConfigs, save_best_configs  # noqa: E402
from masseg_search.store.knobs import KNOB_FIELDS, as_knobs, knobs_id, parse_knobs_id  # noqa: E402
from masseg_search.store.mss_results import MssResults  # noqa: E402
from masseg_search.store.policy import Policy  # noqa: E402
from masseg_search.store.predictions import config_id  # noqa: E402

logger = logging.getLogger(__name__)
ARTIFACT_HASH_ATTR = "masseg_artifact_sha256:"
RELIABLE_IMPORTANCE_TRIALS = 10  # PED-ANOVA's importances are noise below about this many complete trials
CORE_KNOBS = ["scale", "bias"]


def searched_knobs(studies: dict[str, optuna.Study]) -> list[str]:
    """The knobs any of the studies searches, in the config id's order (scale and bias first)."""
    names = set(CORE_KNOBS)
    for type_study in studies.values():
        names.update(type_study.user_attrs.get(KNOBS_ATTR, []))
        for trial in type_study.get_trials(deepcopy=False):
            names.update(trial.params)
    return CORE_KNOBS + [name for name in KNOB_FIELDS if name in names]


def trials_table(studies: dict[str, optuna.Study]) -> pd.DataFrame:
    """Every trial of every scene-type study: scene_type, number, state, config (its id), scale, bias, one column
    per other searched knob (empty = the knob at its default, e.g. in the baselines), jf, videos_scored, baseline,
    worker. A PRUNED trial's jf is its mean over the videos it ran (Optuna itself keeps its last step's value)."""
    knobs = searched_knobs(studies)
    columns = ["scene_type", "number", "state", "config", *knobs, "jf", "videos_scored", "baseline", "worker"]
    rows = []
    for scene_type, type_study in studies.items():
        for trial in type_study.get_trials(deepcopy=False):
            pruned = trial.state == optuna.trial.TrialState.PRUNED
            config = knobs_id(knobs_from_params(trial.params)) if set(CORE_KNOBS) <= set(trial.params) else None
            rows.append({"scene_type": scene_type, "number": trial.number, "state": trial.state.name, "config": config,
                         **{name: trial.params.get(name) for name in knobs},
                         "jf": trial.user_attrs.get("jf_so_far") if pruned else trial.value,
                         "videos_scored": trial.user_attrs.get("videos_scored"),
                         "baseline": bool(trial.user_attrs.get("baseline", False)), "worker": trial.user_attrs.get("worker")})
    return pd.DataFrame(rows, columns=columns)


def _value_at(trials: pd.DataFrame, config: tuple[float, float]) -> float:
    """The in-sample J&F of a baseline (at default knobs) among a type's trials, NaN if it did not run."""
    match = trials[(trials.state == "COMPLETE") & (trials.config == knobs_id(as_knobs(config)))]
    return float(match.jf.iloc[0]) if len(match) else float("nan")


def knob_importances(studies: dict[str, optuna.Study]) -> pd.DataFrame:
    """Per scene type, each searched knob's share of the J&F variation among the good trials (Optuna's
    ``get_param_importances``: PED-ANOVA, normalised to sum 1; no target, the study maximises J&F). Columns
    scene_type, knob, importance, complete_trials, reliable (False below RELIABLE_IMPORTANCE_TRIALS complete trials:
    read those as a hint, not a finding). A study with fewer than 2 complete trials has no row."""
    rows = []
    for scene_type, type_study in studies.items():
        complete = type_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(complete) < 2:
            continue
        importances = optuna.importance.get_param_importances(type_study)
        for knob, value in importances.items():
            rows.append({"scene_type": scene_type, "knob": knob, "importance": float(value),
                         "complete_trials": len(complete), "reliable": len(complete) >= RELIABLE_IMPORTANCE_TRIALS})
    return pd.DataFrame(rows, columns=["scene_type", "knob", "importance", "complete_trials", "reliable"])


def per_type_table(trials: pd.DataFrame, objects: pd.DataFrame, holdout: HoldoutResult | None) -> pd.DataFrame:
    """One row per scene type: objects, videos, chosen configuration (its id, scale, bias and its other knobs),
    in-sample best and baselines, held-out J&F."""
    rows = []
    for scene_type, group in trials[trials.state == "COMPLETE"].groupby("scene_type", sort=True):
        best = group.loc[group.jf.idxmax()]
        type_objects = objects[objects.scene_type == scene_type]
        chosen = parse_knobs_id(best.config)[0]
        row = {"scene_type": scene_type, "objects": len(type_objects), "videos": type_objects.video.nunique(),
               "trials": len(group), "config": best.config, "scale": chosen.scale, "bias": chosen.bias,
               **{name: value for name, value in chosen.extras().items()}, "jf_in_sample": float(best.jf),
               "jf_in_sample_sam2_default": _value_at(group, SAM2_DEFAULT), "jf_in_sample_masseg": _value_at(group, MASSEG_BEST)}
        row["gain_in_sample_over_sam2_default"] = row["jf_in_sample"] - row["jf_in_sample_sam2_default"]
        row["gain_in_sample_over_masseg"] = row["jf_in_sample"] - row["jf_in_sample_masseg"]
        if holdout is not None and not holdout.summary.empty:
            held = holdout.per_object[holdout.per_object.scene_type == scene_type]
            row["heldout_objects_given_default"] = int((held.chosen_from == "default").sum())
            summary = holdout.summary[holdout.summary.scene_type == scene_type].set_index("method")
            for method in ("chosen", "sam2_default", "masseg", "gain_over_sam2_default", "gain_over_masseg"):
                if method in summary.index:
                    row[f"heldout_{method}"] = float(summary.loc[method, "jf"])
                    row[f"heldout_{method}_ci_low"] = float(summary.loc[method, "ci_low"])
                    row[f"heldout_{method}_ci_high"] = float(summary.loc[method, "ci_high"])
        rows.append(row)
    return pd.DataFrame(rows)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic_write_bytes(path, frame.to_csv(index=False).encode())


def _save_figure(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(figure)
    tmp.replace(path)
    return path


def plot_landscape(trials: pd.DataFrame, scene_type: str, path: Path, log_scale: bool = True) -> Path:
    """J&F over (scale, bias) for one scene type: every finished trial, the best starred, baselines marked."""
    group = trials[(trials.scene_type == scene_type) & (trials.state == "COMPLETE")]
    figure, axis = plt.subplots(figsize=(5.5, 4.2))
    points = axis.scatter(group.scale, group.bias, c=group.jf, cmap="viridis", s=36, edgecolors="k", linewidths=0.3)
    if len(group) >= 4 and group.scale.nunique() > 2 and group.bias.nunique() > 2:
        try:
            axis.tricontourf(group.scale, group.bias, group.jf, levels=12, cmap="viridis", alpha=0.35)
        except (ValueError, RuntimeError) as exc:  # degenerate triangulation (collinear points)
            logger.info("landscape %s: no contour (%s); the scatter alone shows the trials", scene_type, exc)
    best = group.loc[group.jf.idxmax()] if len(group) else None
    if best is not None:
        axis.scatter([best.scale], [best.bias], marker="*", s=260, c="red", edgecolors="k", label=f"best {best.jf:.3f}")
    for (scale, bias), name, marker in ((SAM2_DEFAULT, "SAM2 20/-10", "s"), (MASSEG_BEST, "MASSeg 7.5/-4", "D")):
        axis.scatter([scale], [bias], marker=marker, s=60, facecolors="none", edgecolors="red", label=name)
    if log_scale:
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_xlabel("sigmoid scale (memory encoder)")
    axis.set_ylabel("sigmoid bias")
    axis.set_title(f"J&F landscape: {scene_type} (in-sample)")
    figure.colorbar(points, ax=axis, label="J&F")
    axis.legend(fontsize=7, loc="best")
    return _save_figure(figure, path)


def _knob_positions(values: pd.Series) -> tuple[np.ndarray, list[int] | None, list[str] | None]:
    """x positions of a knob's values: numbers as they are (an absent value, the knob at its default, is NaN);
    anything else (categorical choices) as evenly spaced categories with their labels, absent ones as 'default'."""
    present = values.dropna()
    numeric = pd.to_numeric(present, errors="coerce")
    if numeric.notna().all():
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), None, None
    labels = ["default" if pd.isna(value) else str(value) for value in values]
    order = sorted(set(labels), key=lambda label: (label != "default", label))
    return np.array([order.index(label) for label in labels], dtype=float), list(range(len(order))), order


def plot_slices(trials: pd.DataFrame, scene_type: str, knobs: list[str], path: Path,
                importances: pd.DataFrame | None = None) -> Path:
    """J&F of every finished trial against each searched knob (one panel per knob, ordered by importance when
    known): Optuna's slice plot. Baselines, which leave the memory knobs at their defaults, show as 'default'."""
    group = trials[(trials.scene_type == scene_type) & (trials.state == "COMPLETE")]
    order = list(knobs)
    if importances is not None and len(importances):
        ranked = importances[importances.scene_type == scene_type].sort_values("importance", ascending=False)
        order = [k for k in ranked.knob if k in knobs] + [k for k in knobs if k not in set(ranked.knob)]
        shares = dict(zip(ranked.knob, ranked.importance))
    else:
        shares = {}
    columns = min(len(order), 3)
    rows = math.ceil(len(order) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    best = group.jf.max() if len(group) else float("nan")
    for axis, knob in zip(axes.flat, order):
        positions, ticks, labels = _knob_positions(group[knob])
        shown = ~np.isnan(positions)
        jf = group.jf.to_numpy(dtype=float)
        axis.scatter(positions[shown], jf[shown], c=group.number.to_numpy()[shown], cmap="Blues", s=22,
                     edgecolors="k", linewidths=0.3)
        top = shown & (jf == best)
        axis.scatter(positions[top], jf[top], marker="*", s=160, c="red", edgecolors="k")
        if ticks is not None:
            axis.set_xticks(ticks, labels, fontsize=7)
        elif knob == "scale" and shown.any() and (positions[shown] > 0).all():
            axis.set_xscale("log")
            axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
            axis.xaxis.set_minor_formatter(ticker.NullFormatter())
            axis.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        share = f", importance {shares[knob]:.2f}" if knob in shares else ""
        at_default = f", {int((~shown).sum())} at default not shown" if (~shown).any() else ""
        axis.set_xlabel(f"{knob}{share}{at_default}", fontsize=7)
        axis.set_ylabel("J&F")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(order):]:
        axis.set_visible(False)
    figure.suptitle(f"J&F against each knob: {scene_type} ({len(group)} trials, in-sample; red star = best)", fontsize=9)
    return _save_figure(figure, path)


def plot_importance(importances: pd.DataFrame, path: Path) -> Path:
    """Per scene type, each knob's importance (PED-ANOVA share of the J&F variation among the good trials); a type
    with fewer than RELIABLE_IMPORTANCE_TRIALS complete trials is hatched and labelled unreliable."""
    types = sorted(importances.scene_type.unique())
    knobs = [k for k in CORE_KNOBS + list(KNOB_FIELDS) if k in set(importances.knob)]
    figure, axis = plt.subplots(figsize=(max(5.0, 1.2 * len(knobs) * max(len(types), 1) ** 0.5 + 2), 3.8))
    width = 0.8 / max(len(types), 1)
    positions = np.arange(len(knobs))
    unreliable = []
    for index, scene_type in enumerate(types):
        of_type = importances[importances.scene_type == scene_type].set_index("knob")
        values = [float(of_type.importance.get(k, 0.0)) for k in knobs]
        reliable = bool(of_type.reliable.all())
        trials = int(of_type.complete_trials.iloc[0])
        label = f"{scene_type} ({trials} trials{'' if reliable else ', UNRELIABLE'})"
        axis.bar(positions + (index - (len(types) - 1) / 2) * width, values, width=width, label=label,
                 hatch=None if reliable else "//", alpha=1.0 if reliable else 0.6)
        if not reliable:
            unreliable.append(scene_type)
    axis.set_xticks(positions, knobs)
    axis.set_ylim(0, 1.05)
    axis.set_ylabel("importance (share, PED-ANOVA)")
    title = "Which knobs mattered (Optuna parameter importances, in-sample)"
    if unreliable:
        title += f"\nunder {RELIABLE_IMPORTANCE_TRIALS} complete trials (hatched): too few to trust"
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    return _save_figure(figure, path)


def plot_history(trials: pd.DataFrame, path: Path) -> Path:
    """Optimisation history: J&F per trial and the best so far, one line per scene type."""
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    for scene_type, group in trials[trials.state == "COMPLETE"].groupby("scene_type", sort=True):
        group = group.sort_values("number")
        line = axis.plot(group.number, group.jf, "o", ms=3, alpha=0.5)[0]
        axis.plot(group.number, group.jf.cummax(), "-", color=line.get_color(), label=f"{scene_type} (best so far)")
    axis.set_xlabel("trial")
    axis.set_ylabel("mean J&F of the type's objects")
    axis.set_title("Optimisation history (in-sample)")
    axis.legend(fontsize=7)
    return _save_figure(figure, path)


def plot_gains(per_type: pd.DataFrame, path: Path) -> Path:
    """Per scene type, the gain of the chosen config over 20/-10 and over 7.5/-4.0 (held-out when available)."""
    held = "heldout_gain_over_sam2_default" in per_type.columns
    prefix, label = ("heldout_gain_over_", "held-out") if held else ("gain_in_sample_over_", "in-sample")
    figure, axis = plt.subplots(figsize=(6.5, 4.0))
    positions = np.arange(len(per_type))
    for offset, (baseline, name) in zip((-0.2, 0.2), (("sam2_default", "over SAM2 20/-10"), ("masseg", "over MASSeg 7.5/-4"))):
        values = per_type[f"{prefix}{baseline}"].to_numpy(dtype=float)
        errors = None
        if held:
            low = per_type[f"heldout_gain_over_{baseline}_ci_low"].to_numpy(dtype=float)
            high = per_type[f"heldout_gain_over_{baseline}_ci_high"].to_numpy(dtype=float)
            errors = np.nan_to_num(np.vstack([values - low, high - values]))
        axis.bar(positions + offset, np.nan_to_num(values), width=0.4, yerr=errors, capsize=3, label=name)
    axis.axhline(0, color="k", linewidth=0.8)
    axis.set_xticks(positions, per_type.scene_type)
    axis.set_ylabel(f"J&F gain ({label})")
    axis.set_title(f"Per-type gain of the chosen configuration ({label})")
    axis.legend(fontsize=7)
    return _save_figure(figure, path)


def plot_policy(policy: Policy, comparison: pd.DataFrame, path: Path) -> Path:
    """The learned policy's rules (left) beside every policy's held-out J&F and the learned policy's paired gains
    over fixed and per_type (right), each with its bootstrap 95% interval over videos."""
    figure = plt.figure(figsize=(12, 4.6))
    grid = figure.add_gridspec(2, 2, width_ratios=[1.25, 1], height_ratios=[1.3, 1], hspace=0.55, wspace=0.25)
    text_axis = figure.add_subplot(grid[:, 0])
    text_axis.axis("off")
    lines = [f"learned policy (depth {policy.depth}, {len(policy.rules)} leaves), fit on all validation objects:", ""]
    for rule in policy.rules:
        when = " and\n      ".join(condition.text() for condition in rule.conditions) if rule.conditions else "every object"
        jf = "n/a" if rule.jf is None else f"{rule.jf:.3f}"
        lines.append(f"{rule.leaf}: {when}")
        lines.append(f"   -> {config_id(rule.config)}   ({rule.objects} objects, J&F {jf} in-sample)")
    text_axis.text(0, 1, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=7.5,
                   transform=text_axis.transAxes)
    rows = comparison.set_index("policy")
    names = [name for name in ("fixed", "per_type", "learned", "oracle") if name in rows.index]
    jf_axis = figure.add_subplot(grid[0, 1])
    for position, name in enumerate(names):
        row = rows.loc[name]
        colour = "C7" if name == "oracle" else "C1" if name == "learned" else "C0"
        jf_axis.errorbar([row.heldout_jf], [position], xerr=[[row.heldout_jf - row.ci_low], [row.ci_high - row.heldout_jf]],
                         fmt="o", color=colour, capsize=3)
        jf_axis.annotate(f"{row.heldout_jf:.3f}", (row.heldout_jf, position), textcoords="offset points", xytext=(0, 5),
                         ha="center", fontsize=7)
    jf_axis.set_yticks(range(len(names)), [f"{n} (upper bound)" if n == "oracle" else n for n in names], fontsize=8)
    jf_axis.set_ylim(len(names) - 0.5, -0.7)
    jf_axis.set_xlabel("held-out J&F (95% CI over videos)")
    jf_axis.grid(axis="x", alpha=0.3)
    gain_axis = figure.add_subplot(grid[1, 1])
    gains = [("over fixed", "gain_over_fixed"), ("over per_type", "gain_over_per_type")]
    if "learned" in rows.index:
        learned = rows.loc["learned"]
        for position, (label, column) in enumerate(gains):
            value, low, high = learned[column], learned[f"{column}_ci_low"], learned[f"{column}_ci_high"]
            colour = "C2" if low > 0 else "C3" if high < 0 else "C7"  # measured gain, measured loss, within noise
            gain_axis.errorbar([value], [position], xerr=[[value - low], [high - value]], fmt="o", color=colour, capsize=3)
            gain_axis.annotate(f"{value:+.3f} [{low:+.3f}, {high:+.3f}]", (value, position), textcoords="offset points",
                               xytext=(0, 5), ha="center", fontsize=7)
        gain_axis.set_yticks(range(len(gains)), [f"learned {label}" for label, _ in gains], fontsize=8)
    gain_axis.axvline(0, color="grey", linewidth=1, linestyle="--")
    gain_axis.set_ylim(len(gains) - 0.5, -0.7)
    gain_axis.set_xlabel("paired held-out gain (95% CI over videos)")
    gain_axis.grid(axis="x", alpha=0.3)
    figure.suptitle("Learned mask-scaling policy: rules and held-out gains", fontsize=10)
    return _save_figure(figure, path)


def rule_text(scene_types: SceneTypesSection, scene_type: str) -> str:
    """The rule that defines a scene type, as readable text."""
    for rule in scene_types.types:
        if rule.name == scene_type:
            parts = []
            for feature, bounds in rule.when.items():
                if bounds.min is not None:
                    parts.append(f"{feature} >= {bounds.min:g}")
                if bounds.max is not None:
                    parts.append(f"{feature} <= {bounds.max:g}")
            return " and ".join(parts) or "always"
    return "no rule matched (default type)"


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def study_note(scene_type: str, row: pd.Series, holdout: HoldoutResult | None) -> str:
    """Markdown note for the dashboard: chosen configuration, held-out estimate next to the baselines."""
    lines = [f"# {scene_type}", "", f"**Chosen configuration:** `{row.config}` (scale {row.scale:g}, bias {row.bias:g}) "
             f"({int(row.objects)} objects in {int(row.videos)} videos, {int(row.trials)} finished trials).", ""]
    if "heldout_chosen" in row and not pd.isna(row.get("heldout_chosen")):
        lines += ["## Held-out estimate (the result)", "", "| configuration | J&F | 95% CI |", "|---|---|---|"]
        for method, name in (("chosen", "tuned on the other folds"), ("sam2_default", "SAM2 20/-10"), ("masseg", "MASSeg 7.5/-4.0")):
            lines.append(f"| {name} | {_fmt(row[f'heldout_{method}'])} | {_fmt(row[f'heldout_{method}_ci_low'])} .. "
                         f"{_fmt(row[f'heldout_{method}_ci_high'])} |")
        lines += ["", f"Folds: {len(holdout.folds) if holdout else '?'}, bootstrap over videos."]
        given_default = int(row.get("heldout_objects_given_default", 0) or 0)
        if given_default:
            lines += [f"{given_default} held-out objects of this type had no objects of their type in the other folds "
                      "and ran SAM2's default instead."]
    else:
        lines += ["No held-out estimate (run with `--cv 3`); the in-sample best below is optimistic."]
    lines += ["", f"In-sample best {_fmt(row.jf_in_sample)} (optimistic: chosen and scored on the same objects); "
              f"20/-10 {_fmt(row.jf_in_sample_sam2_default)}, 7.5/-4.0 {_fmt(row.jf_in_sample_masseg)}."]
    return "\n".join(lines)


def _upload_if_changed(type_study: optuna.Study, store: object, path: Path) -> None:
    from optuna.artifacts import upload_artifact

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    key = ARTIFACT_HASH_ATTR + path.name
    if type_study._storage.get_study_system_attrs(type_study._study_id).get(key) == digest:
        return
    upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=type_study, mimetype="image/png")
    type_study._storage.set_study_system_attr(type_study._study_id, key, digest)


def annotate_studies(studies: dict[str, optuna.Study], per_type: pd.DataFrame, objects: pd.DataFrame, config: ProjectConfig,
                     holdout: HoldoutResult | None, plots: dict[str, list[Path]], artifact_dir: Path,
                     checkpoint: str | None) -> None:
    """Dashboard: user attributes, a markdown note and the plots as artifacts on every scene-type study."""
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import save_note

    artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(artifact_dir))
    rows = per_type.set_index("scene_type")
    for scene_type, type_study in studies.items():
        type_objects = objects[objects.scene_type == scene_type]
        type_study.set_user_attr("scene_type_rule", rule_text(config.scene_types, scene_type))
        type_study.set_user_attr("videos", int(type_objects.video.nunique()))
        type_study.set_user_attr("objects", int(len(type_objects)))
        type_study.set_user_attr("checkpoint", checkpoint or "random weights")
        type_study.set_user_attr("model_config", config.model.config)
        if scene_type in rows.index:
            row = rows.loc[scene_type]
            if holdout is not None and "heldout_chosen" in row:
                type_study.set_user_attr("heldout_jf", float(row["heldout_chosen"]))
            save_note(type_study, study_note(scene_type, row, holdout))
        for path in plots.get(scene_type, []):
            _upload_if_changed(type_study, store, path)


def write_outputs(out_dir: Path, study: str, studies: dict[str, optuna.Study], objects: pd.DataFrame,
                  config: ProjectConfig, holdout: HoldoutResult | None, artifact_dir: Path | None,
                  checkpoint: str | None) -> BestConfigs:
    """Write every table, plot and best_configs.yaml; annotate the studies for the dashboard."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = trials_table(studies)
    per_type = per_type_table(trials, objects, holdout)
    results = MssResults(out_dir)
    _write_csv(trials, results.trials)
    _write_csv(per_type, results.per_type)
    if holdout is not None:
        _write_csv(holdout.per_object, results.holdout_objects)
        _write_csv(holdout.summary, results.holdout_summary)
    importances = knob_importances(studies)
    _write_csv(importances, results.importance)
    knobs = searched_knobs(studies)
    plots: dict[str, list[Path]] = {}
    shared = []
    if not per_type.empty:
        shared = [plot_history(trials, out_dir / "history.png"), plot_gains(per_type, out_dir / "gains.png")]
    if len(importances):
        shared.append(plot_importance(importances, out_dir / "importance.png"))
    for scene_type in per_type.get("scene_type", []):
        landscape = plot_landscape(trials, scene_type, out_dir / f"landscape_{scene_type}.png", config.mss.space.scale.log)
        slices = plot_slices(trials, scene_type, knobs, out_dir / f"slices_{scene_type}.png", importances)
        plots[scene_type] = [landscape, slices, *shared]
    types, details = {}, {}
    for row in per_type.itertuples(index=False):
        types[row.scene_type] = parse_knobs_id(row.config)[0]
        heldout = getattr(row, "heldout_chosen", float("nan"))
        has_heldout = holdout is not None and not math.isnan(heldout)
        details[row.scene_type] = {"jf": float(heldout if has_heldout else row.jf_in_sample),
                                   "jf_source": "heldout" if has_heldout else "in_sample",
                                   "jf_in_sample": float(row.jf_in_sample), "objects": int(row.objects)}
    best = BestConfigs(types, SAM2_DEFAULT, details, study, config.model.config, checkpoint)
    save_best_configs(results.best_configs, best)
    if artifact_dir is not None:
        annotate_studies(studies, per_type, objects, config, holdout, plots, Path(artifact_dir), checkpoint)
    return best
