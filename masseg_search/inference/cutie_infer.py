"""`infer --engine cutie --view NAME`: Cutie's predictions of a split stored as a view beside SAM2's.

Each video goes through :class:`masseg_search.model.cutie_engine.CutieEngine` (weights from a path, nothing
downloaded) and is stored as pseudo-logits under ``<config_id>@<view>`` (default ``s20_b-10@<view>``), with
``family: cutie`` in meta.json and ``infer_run@<view>.json`` recording the model and weights. The low resolution is
that of the SAM2 predictions already in ``--out`` (or ``--low-res``). Resumable per video; torch and Cutie load only
when a video runs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from masseg_search.data.layout import open_dataset
from masseg_search.errors import MassegError
from masseg_search.inference.import_masks import check_scale, low_res_for, save_view, view_folders, write_view_record
from masseg_search.store.predictions import is_complete

logger = logging.getLogger(__name__)


def run_cutie_inference(data_root: str | Path, out_dir: str | Path, view: str, model: str = "small",
                        weights: str | Path | None = None, split_list: str | Path | None = None,
                        videos: Sequence[str] | None = None, configs: str | Sequence[Any] | None = None,
                        low_res: int | None = None, scale: float = 1.0, max_internal_size: int = 480,
                        device: str = "auto", skip_bad: bool = False, progress: bool = True) -> Path:
    """Track every selected video with Cutie and store it as view ``view`` of ``out_dir``; returns ``out_dir``."""
    from tqdm import tqdm

    from masseg_search.model.build import resolve_device
    from masseg_search.model.cutie_engine import CUTIE_FAMILY, CutieEngine, build_cutie

    view, pairs, folders = view_folders(view, configs)
    check_scale(scale)
    out_dir = Path(out_dir)
    dataset = open_dataset(data_root, split_list=split_list)
    names = list(videos) if videos is not None else list(dataset.video_names)
    todo = [n for n in names if not all(is_complete(out_dir / folder / n) for folder in folders)]
    logger.info("%d of %d videos already done in %s (view %s)", len(names) - len(todo), len(names), out_dir, view)
    if not todo:
        return out_dir
    sizes = {name: low_res_for(out_dir, name, low_res) for name in todo}  # before the model loads: fail fast
    device = resolve_device(device)
    network, cfg = build_cutie(model, weights, device, max_internal_size)
    write_view_record(out_dir, view, {"family": CUTIE_FAMILY, "model": model,
                                      "weights": str(Path(weights).resolve()) if weights else None,
                                      "max_internal_size": int(max_internal_size), "pseudo_logit_scale": float(scale),
                                      "configs": folders},
                      ("family", "model", "weights", "max_internal_size", "pseudo_logit_scale"))
    engine = CutieEngine(network, cfg, device)
    skipped = []
    for name in tqdm(todo, desc=f"cutie {view}", unit="video", disable=not progress):
        try:
            prediction = engine.predict_video(dataset.video(name), sizes[name], scale)
        except MassegError as exc:
            if not skip_bad:
                raise
            logger.warning("skipping video %s: %s", name, exc)
            skipped.append(name)
            continue
        save_view(out_dir, prediction, view, pairs)
    if skipped:
        logger.warning("skipped %d bad videos: %s", len(skipped), ", ".join(skipped))
    return out_dir
