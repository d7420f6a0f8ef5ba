"""`evaluate --ray-address`: a large split's videos scored as Ray tasks, the tables built once on the driver.

Each task scores a shard of videos with the evaluation package's own dataset scorer
(``evaluate_predictions(..., videos=shard)``); the per-video scores come back in split order and go through the
same table builder as a local run, so the tables are the same numbers. Kept outside the evaluation package, which
stays free of Ray.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from masseg_search.cluster.pool import map_tasks
from masseg_search.cluster.session import ray_connection
from masseg_search.cluster.shared import absolute, require_shared_paths
from masseg_search.errors import MassegError
from masseg_search.evaluation import EvaluationResult, evaluate_predictions, open_ground_truth, tables_from_scores

SHARDS_PER_CPU = 4  # several shards per CPU: a slow video does not hold up the end of the run


def _score_shard(job: tuple) -> list[Any]:
    """The per-video scores of one shard (runs as a Ray task); ``job`` is (shard index, what to score)."""
    gt_root, pred_root, split_list, videos, allow_missing, protocol = job[1]
    result = evaluate_predictions(gt_root, pred_root, split_list=split_list, videos=videos, workers=1,
                                  allow_missing=allow_missing, protocol=protocol, progress=False)
    return result.video_scores


def evaluate_on_ray(address: str, gt_root: str | Path, pred_root: str | Path, split_list: str | Path | None = None,
                    videos: Sequence[str] | None = None, allow_missing: bool = False,
                    scene_types: pd.DataFrame | str | Path | None = None, protocol: str = "davis",
                    progress: bool = True) -> EvaluationResult:
    """:func:`masseg_search.evaluation.evaluate_predictions` with the videos scored on the Ray cluster at
    ``address`` (``local``: a Ray started here, on 127.0.0.1 only): the same result, tables included."""
    from tqdm import tqdm

    gt_root, pred_root, split_list = absolute(gt_root), absolute(pred_root), absolute(split_list)
    names = list(open_ground_truth(gt_root, split_list).video_names)
    if videos is not None:
        unknown = sorted(set(videos) - set(names))
        if unknown:
            raise MassegError(f"video(s) {unknown[:5]} are not in the ground truth", gt_root,
                              "check the video names and the split list")
        names = [name for name in names if name in set(videos)]
    with ray_connection(address):
        import ray

        require_shared_paths(inputs={"ground truth": gt_root, "predictions": pred_root, "split list": split_list})
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = max(1, math.ceil(len(names) / (cpus * SHARDS_PER_CPU)))
        shards = [names[start:start + size] for start in range(0, len(names), size)]
        jobs = [(index, (gt_root, pred_root, split_list, shard, allow_missing, protocol))
                for index, shard in enumerate(shards)]
        by_shard: dict[int, list[Any]] = {}
        with tqdm(total=len(names), desc=f"evaluate ({protocol}, ray)", unit="video", disable=not progress) as bar:
            for index, scores in map_tasks(_score_shard, jobs, key=lambda job: job[0]):
                by_shard[index] = scores
                bar.update(len(scores))
    video_scores = [scores for index in sorted(by_shard) for scores in by_shard[index]]
    result = tables_from_scores(video_scores, protocol, scene_types)
    result.sources = {"gt_root": gt_root, "pred_root": pred_root, "split_list": split_list, "protocol": protocol}
    return result
