"""Per-clip statistics of MOSE-layout clips, the MOSE-like selection (thresholds + quotas), and before/after plots.

Statistics of one clip, from its labelled frames (at most ``stats_max_frames``, evenly spaced):

- ``num_objects``, ``num_frames`` (all frames of the clip);
- ``area_drop``: mean over objects of ``1 - p10(area) / max(area)`` over the frames it is visible in (an object
  partly hidden for a while loses area);
- ``bbox_overlap``: mean over frames of the area covered by two or more objects' bounding boxes divided by the
  area of the boxes' union (OVIS's bounding-box occlusion idea; 0 with fewer than two objects);
- ``occlusion``: the larger of the two;
- ``small_object_share``: share of objects whose median area is below ``small_object_area`` of the frame;
- ``disappearance_share``: share of objects missing from a labelled frame after their first appearance;
- ``reappearance_share``: share of objects that are missing for a while and then come back;
- ``appearance_similarity``: the largest histogram intersection of two objects' hue-saturation histograms
  (pooled over ``similarity_frames`` frames, object boundaries eroded by a pixel), 1 = identical colours
  (look-alike targets).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from masseg_search.config import MosePlusSelection, StatRange
from masseg_search.data.layout import VOID_ID, Dataset, atomic_write_bytes, read_frame, read_mask
from masseg_search.errors import MassegError

STATISTICS = [
    "num_objects", "num_frames", "area_drop", "bbox_overlap", "occlusion", "small_object_share",
    "disappearance_share", "reappearance_share", "appearance_similarity",
]
HIST_BINS = (18, 8)
MIN_INNER_PIXELS = 16


def _bbox_overlap(mask: np.ndarray, object_ids: list[int]) -> float:
    """Area covered by 2+ bounding boxes over the area of their union (0 for fewer than two boxes)."""
    cover = np.zeros(mask.shape, dtype=np.uint16)
    boxes = 0
    for object_id in object_ids:
        rows, cols = np.nonzero(mask == object_id)
        if rows.size:
            cover[rows.min():rows.max() + 1, cols.min():cols.max() + 1] += 1
            boxes += 1
    union = np.count_nonzero(cover)
    return float(np.count_nonzero(cover >= 2) / union) if boxes >= 2 and union else 0.0


def _appearance_similarity(frames: list[np.ndarray], masks: list[np.ndarray], object_ids: list[int]) -> float:
    """Largest hue-saturation histogram intersection between two objects (0 with fewer than two)."""
    if len(object_ids) < 2:
        return 0.0
    histograms = {object_id: np.zeros(HIST_BINS, dtype=np.float32) for object_id in object_ids}
    for rgb, mask in zip(frames, masks):
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
        for object_id in object_ids:
            object_mask = (mask == object_id).astype(np.uint8)
            inner = cv2.erode(object_mask, np.ones((3, 3), np.uint8))
            if np.count_nonzero(inner) >= MIN_INNER_PIXELS:
                object_mask = inner  # boundary pixels mix with the background (and JPEG ringing)
            if object_mask.any():
                histograms[object_id] += cv2.calcHist([hsv], [0, 1], object_mask, list(HIST_BINS), [0, 180, 0, 256])
    normalised = {k: h / h.sum() for k, h in histograms.items() if h.sum() > 0}
    keys = sorted(normalised)
    best = 0.0
    for i, first in enumerate(keys):
        for second in keys[i + 1:]:
            best = max(best, float(np.minimum(normalised[first], normalised[second]).sum()))
    return best


def clip_statistics(dataset: Dataset, video_name: str, selection: MosePlusSelection) -> dict[str, float]:
    """The statistics of one MOSE-layout clip (see the module docstring)."""
    video = dataset.video(video_name)
    frame_index = {name: index for index, name in enumerate(video.frame_names)}
    labelled = [path for path in video.annotation_paths() if path.stem in frame_index]
    if not labelled:
        raise MassegError(f"video {video_name!r} has no annotation", video.annotation_dir,
                          "convert it again, or drop it from the list")
    if len(labelled) > selection.stats_max_frames:
        picks = np.linspace(0, len(labelled) - 1, selection.stats_max_frames).round().astype(int)
        labelled = [labelled[i] for i in sorted(set(picks.tolist()))]
    masks = [read_mask(path) for path in labelled]
    object_ids = sorted(set().union(*(set(np.unique(m).tolist()) for m in masks)) - {0, VOID_ID})
    pixels = masks[0].size
    areas = np.array([[np.count_nonzero(m == object_id) for object_id in object_ids] for m in masks], dtype=np.float64)
    present = areas > 0
    area_drop, small, disappeared, reappeared = [], [], [], []
    for column in range(len(object_ids)):
        visible = areas[present[:, column], column]
        area_drop.append(1.0 - np.percentile(visible, 10) / visible.max())
        small.append(np.median(visible) / pixels < selection.small_object_area)
        seen = present[np.argmax(present[:, column]):, column]
        gaps = np.flatnonzero(~seen)
        disappeared.append(gaps.size > 0)
        reappeared.append(gaps.size > 0 and bool(seen[gaps[0]:].any()))
    overlap = float(np.mean([_bbox_overlap(m, object_ids) for m in masks])) if object_ids else 0.0
    drop = float(np.mean(area_drop)) if object_ids else 0.0
    sample = np.linspace(0, len(masks) - 1, min(selection.similarity_frames, len(masks))).round().astype(int)
    sample = sorted(set(sample.tolist()))
    frames = [read_frame(video.image_dir / f"{labelled[i].stem}{_suffix(video, labelled[i].stem)}") for i in sample]
    similarity = _appearance_similarity(frames, [masks[i] for i in sample], object_ids)
    share = (lambda flags: float(np.mean(flags)) if flags else 0.0)
    return {
        "num_objects": float(len(object_ids)), "num_frames": float(len(video.frame_paths)), "area_drop": drop,
        "bbox_overlap": overlap, "occlusion": max(drop, overlap), "small_object_share": share(small),
        "disappearance_share": share(disappeared), "reappearance_share": share(reappeared),
        "appearance_similarity": similarity,
    }


def _suffix(video, stem: str) -> str:
    for path in video.frame_paths:
        if path.stem == stem:
            return path.suffix
    raise MassegError(f"annotation {stem}.png has no frame", video.image_dir, "add the frame or remove the annotation")


def statistics_table(dataset: Dataset, selection: MosePlusSelection, cache: str | Path | None = None,
                     label: str = "", progress: bool = True, save_every: int = 50) -> pd.DataFrame:
    """Statistics of every video of ``dataset`` (columns ``video`` + STATISTICS), cached in ``cache`` (resumable)."""
    rows: dict[str, dict] = {}
    cache = Path(cache) if cache is not None else None
    if cache is not None and cache.is_file():
        cached = pd.read_csv(cache, dtype={"video": str})
        if list(cached.columns) == ["video", *STATISTICS]:
            rows = {row["video"]: row for row in cached.to_dict("records")}
    todo = [name for name in dataset.video_names if name not in rows]
    for count, name in enumerate(tqdm(todo, desc=f"statistics {label}".strip(), unit="video", disable=not progress), 1):
        rows[name] = {"video": name, **clip_statistics(dataset, name, selection)}
        if cache is not None and count % save_every == 0:
            _save(cache, rows)
    if cache is not None and todo:
        _save(cache, rows)
    return pd.DataFrame([rows[name] for name in dataset.video_names], columns=["video", *STATISTICS])


def _save(path: Path, rows: dict[str, dict]) -> None:
    atomic_write_bytes(path, pd.DataFrame(list(rows.values()), columns=["video", *STATISTICS]).to_csv(index=False).encode())


def _within(values: pd.Series, bounds: StatRange) -> pd.Series:
    inside = pd.Series(True, index=values.index)
    if bounds.min is not None:
        inside &= values >= bounds.min
    if bounds.max is not None:
        inside &= values <= bounds.max
    return inside


def select_clips(stats: pd.DataFrame, selection: MosePlusSelection, quotas: dict[str, int | None] | None = None) -> pd.DataFrame:
    """Mark the MOSE-like clips: ``stats`` has ``source``, ``video`` and STATISTICS; returns it with ``passes_required``,
    ``criteria_met``, ``rank_score``, ``selected`` and ``reason`` added.

    A clip is eligible when every ``required`` range holds and at least ``min_criteria`` of the ``criteria`` ranges
    hold. Eligible clips are ranked by criteria met, then by the mean percentile of their criteria statistics
    (higher is more MOSE-like), then by name; each source keeps its best ``quotas[source]`` clips (None = all),
    then ``max_clips`` caps the total.
    """
    for name in list(selection.required) + list(selection.criteria):
        if name not in STATISTICS:
            raise MassegError(f"unknown clip statistic {name!r} in moseplus.selection", None,
                              f"use one of: {', '.join(STATISTICS)}")
    table = stats.copy()
    table["passes_required"] = True
    for name, bounds in selection.required.items():
        table["passes_required"] &= _within(table[name], bounds)
    met = pd.DataFrame({name: _within(table[name], bounds) for name, bounds in selection.criteria.items()}, index=table.index)
    table["criteria_met"] = met.sum(axis=1).astype(int) if len(met.columns) else 0
    columns = list(selection.criteria)
    table["rank_score"] = table[columns].rank(pct=True).mean(axis=1) if columns and len(table) else 0.0
    eligible = table["passes_required"] & (table["criteria_met"] >= selection.min_criteria)
    table["reason"] = np.where(~table["passes_required"], "fails required",
                               np.where(eligible, "", "too few criteria met"))
    ordered = table[eligible].sort_values(["criteria_met", "rank_score", "video"], ascending=[False, False, True])
    keep: list = []
    for source, group in ordered.groupby("source", sort=False):
        quota = (quotas or {}).get(source)
        keep.extend(group.index[:quota] if quota is not None else group.index)
        table.loc[group.index[quota:] if quota is not None else [], "reason"] = "over source quota"
    ranked = ordered.loc[[i for i in ordered.index if i in set(keep)]]
    if selection.max_clips is not None:
        table.loc[ranked.index[selection.max_clips:], "reason"] = "over max_clips"
        ranked = ranked.iloc[: selection.max_clips]
    table["selected"] = table.index.isin(ranked.index)
    table.loc[table["selected"], "reason"] = "selected"
    return table


def distribution_table(groups: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per statistic and group: count, mean, median, 10th and 90th percentile (what MOSE+ added, in numbers)."""
    rows = []
    for statistic in STATISTICS:
        for group, table in groups.items():
            values = table[statistic].dropna().to_numpy(dtype=float) if statistic in table else np.array([])
            rows.append({
                "statistic": statistic, "group": group, "clips": int(values.size),
                "mean": float(values.mean()) if values.size else np.nan,
                "median": float(np.median(values)) if values.size else np.nan,
                "p10": float(np.percentile(values, 10)) if values.size else np.nan,
                "p90": float(np.percentile(values, 90)) if values.size else np.nan,
            })
    return pd.DataFrame(rows)


def plot_distributions(groups: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """One histogram panel per statistic, one outline per group (density), saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    columns = 3
    rows = (len(STATISTICS) + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows))
    for axis, statistic in zip(axes.flat, STATISTICS):
        pooled = np.concatenate([t[statistic].dropna().to_numpy(dtype=float) for t in groups.values()
                                 if statistic in t and len(t)] or [np.zeros(1)])
        edges = np.histogram_bin_edges(pooled, bins=20) if np.ptp(pooled) > 0 else np.linspace(pooled.min() - 0.5, pooled.max() + 0.5, 3)
        for group, table in groups.items():
            values = table[statistic].dropna().to_numpy(dtype=float) if statistic in table else np.array([])
            if values.size:
                axis.hist(values, bins=edges, density=True, histtype="step", linewidth=1.5, label=f"{group} ({values.size})")
        axis.set_title(statistic)
    for axis in list(axes.flat)[len(STATISTICS):]:
        axis.axis("off")
    axes.flat[0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp, dpi=90)
    plt.close(figure)
    tmp.replace(path)
    return path
