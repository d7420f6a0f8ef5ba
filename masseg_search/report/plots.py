"""The report's matplotlib figures, written as PNG files beside the page."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd

from masseg_search.data.layout import atomic_write_bytes
from masseg_search.report.read import MssStudy, Sweep
from masseg_search.store.best_configs import MASSEG_BEST, SAM2_DEFAULT

# ------------------------------------------------------------------------------------------------ plotting


class Figures:
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


def safe_filename(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def plot_sweep_curves(sweep: Sweep, figures: Figures, stopped: set[str]) -> str:
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
    return figures.save(figure, f"sweep_{safe_filename(sweep.name)}_curves.png")


def plot_sweep_parameters(sweep: Sweep, best: pd.Series, stopped: pd.Series, figures: Figures) -> str:
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
    return figures.save(figure, f"sweep_{safe_filename(sweep.name)}_parameters.png")


def mattered_text(study: MssStudy, scene_type: str, top: int = 3) -> str:
    """The knobs that mattered for a scene type (tune-mss's importance.csv, PED-ANOVA shares), as a title line:
    ``\nmattered: admit_score 0.45, bias 0.27, scale 0.24`` plus a warning below 10 complete trials; '' without
    the table."""
    table = study.tables.get("importance.csv")
    if table is None or not {"scene_type", "knob", "importance"} <= set(table.columns):
        return ""
    rows = table[table["scene_type"].astype(str) == scene_type].sort_values("importance", ascending=False)
    if rows.empty:
        return ""
    text = "\nmattered: " + ", ".join(f"{row.knob} {row.importance:.2f}" for row in rows.head(top).itertuples())
    if "reliable" in rows and not rows["reliable"].astype(str).isin(["True", "true", "1"]).all():
        text += " (too few trials to trust)"
    return text


def plot_mss_landscape(study: MssStudy, figures: Figures) -> str:
    """Per scene type: trials over (scale, bias) coloured by J&F, the chosen point and the two fixed baselines; the
    title names the knobs that mattered most (importance.csv, when the study searched memory knobs too)."""
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
            axis.scatter(*study.best.types[scene_type].pair, marker="*", color="magenta", s=260, edgecolors="black",
                         label="chosen")
        axis.set_xscale("log")
        scales = list(trials["scale"]) + [SAM2_DEFAULT[0], MASSEG_BEST[0]]
        axis.set_xlim(min(scales) / 1.3, max(scales) * 1.3)
        axis.set_xticks([t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if min(scales) / 1.3 <= t <= max(scales) * 1.3])
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        axis.set_xlabel("sigmoid scale (log)")
        axis.set_ylabel("sigmoid bias")
        axis.set_title(f"{scene_type} ({len(trials)} trials){mattered_text(study, scene_type)}", fontsize=8)
        figure.colorbar(points, ax=axis, label="J&F")
    for axis in list(axes.flat)[len(types):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="lower left")
    return figures.save(figure, f"mss_{safe_filename(study.name)}_landscape.png")


def plot_bars(names: list[str], values: list[float], highlight: list[bool], title: str, figures: Figures,
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




def plot_intervals(names: list[str], values: list[float], lows: list[float], highs: list[float], title: str,
                   xlabel: str, figures: Figures, file_name: str, zero_line: bool = False) -> str:
    """One point per row with its 95% interval as a horizontal error bar (rows top to bottom).

    With ``zero_line`` (gains) every row gets its own x range around 0, so a gain of 0.005 stays readable beside
    one of 0.5; each row's dashed line is 0."""
    import matplotlib.pyplot as plt
    import numpy as np

    values, lows, highs = (np.asarray(v, dtype=float) for v in (values, lows, highs))
    if not zero_line:
        figure, axis = plt.subplots(figsize=(7, 0.42 * len(names) + 1.3))
        positions = np.arange(len(names))
        axis.errorbar(values, positions, xerr=[values - lows, highs - values], fmt="o", color="C0", capsize=3)
        for position, value in zip(positions, values):
            axis.annotate(f"{value:.3f}", (value, position), textcoords="offset points", xytext=(0, 6), ha="center",
                          fontsize=7)
        axis.set_yticks(positions, names, fontsize=8)
        axis.set_ylim(len(names) - 0.5, -0.7)
        axis.set_xlabel(xlabel)
        axis.set_title(title)
        axis.grid(axis="x", alpha=0.3)
        return figures.save(figure, file_name)
    figure, axes = plt.subplots(len(names), 1, figsize=(7, 0.62 * len(names) + 1.2), squeeze=False)
    for axis, name, value, low, high in zip(axes[:, 0], names, values, lows, highs):
        colour = "C2" if low > 0 else "C3" if high < 0 else "C7"  # measured gain, measured loss, within noise
        axis.errorbar([value], [0], xerr=[[value - low], [high - value]], fmt="o", color=colour, capsize=3)
        axis.axvline(0, color="grey", linewidth=1, linestyle="--")
        span = max(abs(low), abs(high), 1e-3) * 1.25
        axis.set_xlim(min(-span * 0.25, low - span * 0.1), max(span * 0.25, high + span * 0.1))
        axis.set_yticks([0], [name], fontsize=8)
        axis.tick_params(axis="x", labelsize=7)
        axis.annotate(f"{value:+.3f} [{low:+.3f}, {high:+.3f}]", (value, 0), textcoords="offset points", xytext=(0, 5),
                      ha="center", fontsize=7)
        axis.set_ylim(-0.6, 1.0)
        axis.grid(axis="x", alpha=0.3)
    figure.suptitle(f"{title}; each row its own scale", fontsize=10)
    axes[-1, 0].set_xlabel(xlabel)
    return figures.save(figure, file_name)
