"""`evaluate --ray-address`: a large split's videos scored as Ray tasks, everything else as a local evaluate.

The evaluation package's dataset scorer (``evaluate_predictions``) checks the inputs, makes one job per video and
builds the tables; here only its ``map_jobs`` is given: the jobs go out in shards, one Ray task each, and their
scores come back in split order, so the tables are those of a local run. The evaluation package stays free of Ray.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator

from masseg_search.cluster.pool import map_tasks
from masseg_search.cluster.session import ray_connection
from masseg_search.cluster.shared import absolute, require_shared_paths
from masseg_search.evaluation import EvaluationResult, evaluate_predictions

SHARDS_PER_CPU = 4  # several shards per CPU: a slow video does not hold up the end of the run


def _score_shard(job: tuple[int, Callable[[tuple], Any], list[tuple]]) -> list[Any]:
    """The scores of one shard's videos (a Ray task); ``job`` is (shard index, the scorer, its jobs)."""
    _, score, shard = job
    return [score(video_job) for video_job in shard]


def map_on_ray(score: Callable[[tuple], Any], jobs: list[tuple]) -> Iterator[Any]:
    """``score`` over ``jobs`` as Ray tasks of a few jobs each (on the connected Ray), yielded in the jobs' order."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    size = max(1, math.ceil(len(jobs) / (cpus * SHARDS_PER_CPU)))
    shards = [(index, score, jobs[start:start + size]) for index, start in enumerate(range(0, len(jobs), size))]
    finished: dict[int, list[Any]] = {}
    following = 0
    for index, scores in map_tasks(_score_shard, shards, key=lambda shard: shard[0]):
        finished[index] = scores
        while following in finished:
            yield from finished.pop(following)
            following += 1


def evaluate_on_ray(address: str, gt_root: str | Path, pred_root: str | Path, split_list: str | Path | None = None,
                    meta: str | Path | None = None, **options: Any) -> EvaluationResult:
    """:func:`masseg_search.evaluation.evaluate_predictions` (same ``options``) with the videos scored on the Ray
    cluster at ``address`` (``auto``: ``RAY_ADDRESS``; ``local``: a Ray started here, on 127.0.0.1 only)."""
    gt_root, pred_root, split_list, meta = absolute(gt_root), absolute(pred_root), absolute(split_list), absolute(meta)
    with ray_connection(address):
        require_shared_paths(inputs={"ground truth": gt_root, "predictions": pred_root})
        return evaluate_predictions(gt_root, pred_root, split_list=split_list, meta=meta, map_jobs=map_on_ray,
                                    **options)
