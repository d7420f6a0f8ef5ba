"""`data build-moseplus`: convert every source, select the MOSE-like clips, merge them with MOSE train.

Under ``moseplus.out``::

    converted/<source>/      one MOSE-layout root per source (masseg_search.data.moseplus.writer), resumable, with its
                             per-clip statistics cached in clip_statistics_<settings>.csv
    stats/mose-<...>.csv     the same statistics of MOSE train (cached; resumable)
    selection.csv            every candidate clip with its statistics, selected flag and reason
    report/distributions.csv, report/distributions.png   MOSE train before vs MOSE+ after (and the candidates)
    merged/                  the MOSE+ root: JPEGImages/, Annotations/, <list_name>.txt (+ val.txt for a holdout),
                             manifest_videos.csv, manifest_objects.csv, manifest_frames.csv

Merged video names are ``<prefix>_<video>`` (prefixes are lowercase letters and digits, so names never collide).
Each merged video is linked (hard link, falling back to a copy across file systems; or symlink / copy) into hidden
temporary folders, renamed into place, then recorded in ``merged/.done/``; a rerun skips recorded videos, redoes
half-written ones and removes videos no longer selected, so it is idempotent and resumes after a kill (a rerun
first removes the temporary files and folders a killed run left).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from masseg_search.config import MosePlusSection, ProjectConfig
from masseg_search.data.check import ERROR, check_dataset
from masseg_search.data.layout import (
    ANNOTATION_DIR,
    IMAGE_DIR,
    Dataset,
    atomic_write_bytes,
    open_dataset,
    read_split_list,
    write_split_list,
)
from masseg_search.data.moseplus.convert import convert_source
from masseg_search.data.moseplus.select import distribution_table, plot_distributions, select_clips, statistics_table
from masseg_search.data.moseplus.writer import FIRST_APPEARANCE_LABELS, remove_leftovers
from masseg_search.errors import MassegError

DONE_DIR = ".done"


@dataclass
class MergePlan:
    """One merged video: its merged name and where its frames and annotations come from."""

    video: str
    source: str
    source_video: str
    image_dir: Path
    annotation_dir: Path


@dataclass
class BuildResult:
    """What build-moseplus produced."""

    root: Path
    train_list: Path
    val_list: Path | None
    selection: pd.DataFrame
    distributions: pd.DataFrame
    videos: list[str]


def _link_file(source: Path, target: Path, mode: str) -> None:
    if mode == "symlink":
        target.symlink_to(source.resolve())
        return
    if mode == "hardlink":
        try:
            os.link(source, target)
            return
        except OSError:
            pass  # another file system, or links not allowed: a copy gives the same bytes
    shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def merge_videos(plans: list[MergePlan], root: Path, mode: str = "hardlink", progress: bool = True) -> list[str]:
    """Link every planned video into ``root`` (resumable, idempotent); videos recorded but not planned are removed."""
    done_dir = root / DONE_DIR
    done_dir.mkdir(parents=True, exist_ok=True)
    for folder in (root, done_dir, root / IMAGE_DIR, root / ANNOTATION_DIR):
        remove_leftovers(folder)
    planned = {plan.video for plan in plans}
    for marker in sorted(done_dir.glob("*.done")):
        if marker.stem not in planned:
            for folder in (root / IMAGE_DIR / marker.stem, root / ANNOTATION_DIR / marker.stem):
                _remove(folder)
            marker.unlink()
    for plan in tqdm(plans, desc="merge MOSE+", unit="video", disable=not progress):
        marker = done_dir / f"{plan.video}.done"
        if marker.is_file():
            continue
        targets = []
        for folder_name, source_dir in ((IMAGE_DIR, plan.image_dir), (ANNOTATION_DIR, plan.annotation_dir)):
            final, tmp = root / folder_name / plan.video, root / folder_name / f".tmp-{plan.video}"
            _remove(final)
            _remove(tmp)
            tmp.mkdir(parents=True)
            if not source_dir.is_dir():
                raise MassegError(f"video {plan.source_video!r} of {plan.source} has no {folder_name} folder",
                                  source_dir, "convert the source again, or remove the video from its list")
            for file in sorted(source_dir.iterdir()):
                if file.is_file() and not file.name.startswith("."):
                    _link_file(file, tmp / file.name, mode)
            targets.append((tmp, final))
        for tmp, final in targets:
            tmp.rename(final)
        atomic_write_bytes(marker, f"{plan.source}\t{plan.source_video}\n".encode())
    return [plan.video for plan in plans]


def _stats_name(section: MosePlusSection) -> str:
    """Cache file name of clip statistics: the settings they depend on are part of it, so a change recomputes."""
    selection = section.selection
    return (f"clip_statistics_small{selection.small_object_area:g}_frames{selection.stats_max_frames}"
            f"_similarity{selection.similarity_frames}.csv")


def _mose_names(section: MosePlusSection) -> tuple[list[str], set[str]]:
    """(MOSE videos to use, held-out ones)."""
    root = Path(section.mose_root)
    if section.mose_list is None:
        names = open_dataset(root).video_names
    else:
        as_path = Path(section.mose_list)
        names = read_split_list(as_path) if as_path.is_file() else open_dataset(root, split=section.mose_list).video_names
    holdout = set(read_split_list(section.mose_holdout_list)) if section.mose_holdout_list else set()
    unknown = sorted(holdout - set(names))
    if unknown:
        raise MassegError(f"{len(unknown)} held-out video(s) are not among the MOSE videos used, e.g. {unknown[:3]}",
                          section.mose_holdout_list, "list MOSE train video names (without the mose_ prefix)")
    return names, holdout


def build_moseplus(config: ProjectConfig | MosePlusSection, progress: bool = True, check: bool = True) -> BuildResult:
    """Convert, select and merge as ``config.moseplus`` says; see the module docstring for the outputs."""
    section = config.moseplus if isinstance(config, ProjectConfig) else config
    out = Path(section.out)
    for folder in (out, out / "stats", out / "report"):
        remove_leftovers(folder)
    sources = [source for source in section.sources if source.enabled]
    if not sources and section.mose_root is None:
        raise MassegError("moseplus has no enabled sources and no mose_root", getattr(config, "source", None),
                          "list sources under moseplus.sources and/or set moseplus.mose_root")
    candidates = []
    converted_roots: dict[str, Path] = {}
    for source in sources:
        target = out / "converted" / source.name
        summary = convert_source(source.format, source.src, target, ann=source.ann, shorter_side=section.shorter_side,
                                 upscale=section.upscale, frames=source.frames, split=source.split,
                                 images=source.images, max_videos=source.max_videos,
                                 jpeg_quality=section.jpeg_quality, progress=progress, workers=section.workers)
        if FIRST_APPEARANCE_LABELS in summary.labels:
            raise MassegError(f"source {source.name!r} has masks only where objects first appear (YouTube-VOS valid): "
                              "they are prompts, not training labels", source.src,
                              "use the train split of this source for MOSE+")
        converted_roots[source.name] = target
        dataset = open_dataset(target, split_list=target / "videos.txt")
        table = statistics_table(dataset, section.selection, target / _stats_name(section), source.name, progress)
        table.insert(0, "source", source.name)
        candidates.append(table)
        if progress:
            print(f"{source.name}: {len(summary.videos)} clips converted ({len(summary.skipped)} without objects)")
    candidate_table = pd.concat(candidates, ignore_index=True) if candidates else pd.DataFrame(columns=["source", "video"])
    quotas = {source.name: source.quota for source in sources}
    selection = select_clips(candidate_table, section.selection, quotas) if len(candidate_table) else candidate_table.assign(selected=False)
    atomic_write_bytes(out / "selection.csv", selection.to_csv(index=False).encode())

    plans: list[MergePlan] = []
    mose_train: list[str] = []
    holdout_names: list[str] = []
    groups: dict[str, pd.DataFrame] = {}
    prefix = section.mose_prefix
    if section.mose_root is not None:
        mose = open_dataset(section.mose_root)
        names, holdout = _mose_names(section)
        for name in names:
            plans.append(MergePlan(f"{prefix}_{name}", "mose", name, mose.image_root / name, mose.annotation_root / name))
            (holdout_names if name in holdout else mose_train).append(f"{prefix}_{name}")
        train_set = set(n for n in names if n not in holdout)
        train_videos = Dataset(mose.root, mose.image_root, mose.annotation_root, [n for n in names if n in train_set])
        mose_stats = statistics_table(train_videos, section.selection, out / "stats" / f"{prefix}-{_stats_name(section)}",
                                      prefix, progress)
        groups["MOSE train (before)"] = mose_stats
    chosen = selection[selection["selected"]] if len(selection) else selection
    added = []
    for row in chosen.itertuples():
        root = converted_roots[row.source]
        plans.append(MergePlan(f"{row.source}_{row.video}", row.source, row.video,
                               root / IMAGE_DIR / row.video, root / ANNOTATION_DIR / row.video))
        added.append(f"{row.source}_{row.video}")
    if len(candidate_table):
        groups["candidates"] = candidate_table
        groups["selected"] = chosen
    after = [g for k, g in groups.items() if k in ("MOSE train (before)", "selected") and len(g)]
    groups["MOSE+ (after)"] = pd.concat(after, ignore_index=True) if after else pd.DataFrame(columns=["video"])

    merged = out / "merged"
    merge_videos(plans, merged, section.link, progress)
    train_list = merged / f"{section.list_name}.txt"
    write_split_list(train_list, mose_train + added)
    val_list = None
    if holdout_names:
        val_list = merged / "val.txt"
        write_split_list(val_list, holdout_names)
    _write_manifests(merged, plans, chosen, converted_roots)
    distributions = distribution_table(groups)
    atomic_write_bytes(out / "report" / "distributions.csv", distributions.to_csv(index=False).encode())
    plot_distributions(groups, out / "report" / "distributions.png")
    if check:
        _check_merged(merged, [train_list] + ([val_list] if val_list else []))
    return BuildResult(merged, train_list, val_list, selection, distributions, mose_train + added)


def _write_manifests(merged: Path, plans: list[MergePlan], chosen: pd.DataFrame, converted_roots: dict[str, Path]) -> None:
    videos = pd.DataFrame([{"video": p.video, "source": p.source, "source_video": p.source_video} for p in plans],
                          columns=["video", "source", "source_video"])
    atomic_write_bytes(merged / "manifest_videos.csv", videos.to_csv(index=False).encode())
    for kind in ("objects", "frames"):
        parts = []
        for source, root in converted_roots.items():
            table = pd.read_csv(root / f"manifest_{kind}.csv", dtype=str, keep_default_na=False)
            keep = set(chosen.loc[chosen["source"] == source, "video"]) if len(chosen) else set()
            table = table[table["video"].isin(keep)].copy()
            table.insert(0, "merged_video", source + "_" + table["video"])
            parts.append(table)
        merged_table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        atomic_write_bytes(merged / f"manifest_{kind}.csv", merged_table.to_csv(index=False).encode())


def _check_merged(merged: Path, list_files: list[Path]) -> None:
    """Run `data check` on the merged root (late objects allowed: YouTube-VOS-style training clips)."""
    for list_file in list_files:
        errors = [p for p in check_dataset(merged, list_file, allow_late_objects=True, workers=4) if p.severity == ERROR]
        if errors:
            shown = "; ".join(str(p) for p in errors[:5])
            raise MassegError(f"the merged MOSE+ videos of {list_file.name} fail `data check` ({len(errors)} errors): "
                              f"{shown}", merged, "fix the named files (or drop their videos) and rerun build-moseplus")
