"""Engine passes for tune-mss: one video under K configurations per object -> per-object J&F per slot.

``EnginePassWorker`` holds the model, the engine and a feature cache (image-encoder outputs reused across passes
while they fit ``feature_cache_mb``) and scores one video at a time in memory: for slot ``k`` the id mask merges
every object's low-res logits of its ``k``-th configuration (SAM2's non-overlap rule at video resolution,
``predictions.logits_to_mask``) and the DAVIS evaluator scores it. ``LocalPassScorer`` runs the videos of a pass
in this process; ``RayPassScorer`` runs them as Ray actor tasks (one GPU each where the cluster has GPUs), while
Optuna's storage stays with the driver(s).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from masseg_search.cluster import LOCAL, absolute, require_shared_paths, start_local_ray
from masseg_search.data.layout import Dataset, Video, open_dataset, read_mask
from masseg_search.errors import MassegError
from masseg_search.evaluation import score_video
from masseg_search.model.build import build_model, resolve_device
from masseg_search.mss.search import Config, PassConfigs, PassScores
from masseg_search.store.knobs import as_knobs
from masseg_search.store.predictions import VideoPrediction, config_id, logits_to_mask


def load_ground_truth(video: Video) -> np.ndarray:
    """(T, H, W) uint8 ground-truth id masks for every frame; validation videos need all of them."""
    masks = []
    for name in video.frame_names:
        path = video.annotation_path(name)
        if not path.is_file():
            raise MassegError("validation frame has no ground-truth mask", path,
                              "tune-mss needs fully annotated validation videos: point mss.split at a held-out train list")
        masks.append(read_mask(path))
    return np.stack(masks)


def slot_masks(predictions: dict[str, VideoPrediction], configs_per_object: dict[int, list[Config]], slot: int,
               height: int, width: int) -> np.ndarray:
    """(T, H, W) id masks for one slot: every object under its ``slot``-th configuration, merged per frame."""
    object_ids = sorted(configs_per_object)
    per_object = [predictions[config_id(as_knobs(configs_per_object[obj][slot]))].logits[obj] for obj in object_ids]
    stacked = np.stack(per_object, axis=1)  # (T, N, h, w)
    return np.stack([logits_to_mask(frame, object_ids, height, width) for frame in stacked])


def score_slots(gt_masks: np.ndarray, predictions: dict[str, VideoPrediction], configs_per_object: dict[int, list[Config]],
                video_name: str) -> dict[int, list[float]]:
    """Per object, the J&F mean of every slot (identical slots are scored once)."""
    object_ids = sorted(configs_per_object)
    slots = len(next(iter(configs_per_object.values())))
    height, width = gt_masks.shape[1:]
    by_slot: dict[tuple, dict[int, float]] = {}
    result: dict[int, list[float]] = {obj: [] for obj in object_ids}
    for slot in range(slots):
        key = tuple(configs_per_object[obj][slot] for obj in object_ids)
        if key not in by_slot:
            masks = slot_masks(predictions, configs_per_object, slot, height, width)
            scores = score_video(gt_masks, masks, object_ids, video=video_name)
            by_slot[key] = scores.object_j_and_f_means()
        for obj in object_ids:
            result[obj].append(float(by_slot[key][obj]))
    return result


class EnginePassWorker:
    """The model, engine and caches of one worker (this process, or a Ray actor)."""

    def __init__(self, model_config: str, checkpoint: str | None, data_root: str, device: str = "cpu",
                 feature_cache_mb: int = 512, threads: int | None = None, max_rows: int | None = None,
                 chunk_by_config: bool = False):
        import torch

        from masseg_search.model.engine import FeatureCache, MultiConfigEngine

        if threads:
            torch.set_num_threads(threads)
        self.device = resolve_device(device)
        self.dataset: Dataset = open_dataset(data_root)
        model = build_model(model_config, checkpoint, device=self.device)
        self.engine = MultiConfigEngine(model, self.device, max_rows=max_rows, chunk_by_config=chunk_by_config)
        self.feature_cache = FeatureCache(int(feature_cache_mb) * 2**20)
        self._ground_truth: dict[str, np.ndarray] = {}

    def score_video(self, video_name: str, configs_per_object: dict[int, list[Config]]) -> tuple[str, dict[int, list[float]]]:
        """Run the engine once on ``video_name`` with every object's configurations, score every slot."""
        video = self.dataset.video(video_name)
        if video_name not in self._ground_truth:
            self._ground_truth[video_name] = load_ground_truth(video)
        predictions = self.engine.predict_video(video, configs_per_object, feature_cache=self.feature_cache)
        return video_name, score_slots(self._ground_truth[video_name], predictions, configs_per_object, video_name)

    def cache_stats(self) -> dict[str, int]:
        """Feature-cache hits, misses and bytes, and the engine's row-frames tracked (for the benchmark and logs)."""
        cache = self.feature_cache
        return {"hits": cache.hits, "misses": cache.misses, "bytes": cache.bytes, "entries": len(cache),
                "row_frames": self.engine.row_frames}


class LocalPassScorer:
    """A PassScorer running every video of a pass in this process."""

    def __init__(self, worker: EnginePassWorker, progress: bool = True):
        self.worker = worker
        self.progress = progress

    def __call__(self, pass_configs: PassConfigs) -> PassScores:
        return dict(self.stream(sorted(pass_configs), pass_configs.get))

    def stream(self, videos: list[str], configs_for: Callable[[str], dict[int, list[Config]] | None]
               ) -> Iterator[tuple[str, dict[int, list[float]]]]:
        """Score ``videos`` in order, each with the configurations ``configs_for`` gives when it starts (None:
        skip it); yields (video, per-object scores per slot) as each one finishes."""
        for video_name in tqdm(videos, desc="engine pass", unit="video", leave=False, disable=not self.progress):
            configs = configs_for(video_name)
            if configs is not None:
                yield self.worker.score_video(video_name, configs)


def connect_ray(address: str) -> Any:
    """Join the Ray cluster at ``address`` as the user configured it (``local`` starts one here, on 127.0.0.1
    only); returns the ray module. The connection stays for the rest of the process (the passes reuse it)."""
    import ray

    if not ray.is_initialized():
        if address == LOCAL:
            start_local_ray(num_cpus=os.cpu_count())
        else:
            try:
                ray.init(address=address, log_to_driver=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise MassegError(f"cannot join the Ray cluster at {address!r} ({exc})",
                                  fix="start it with `ray start --head` (or pass --ray-address local)") from None
    return ray


def _placement(worker: EnginePassWorker) -> dict[str, Any]:
    """Where an actor runs: its Ray node id and GPU ids (called inside the actor)."""
    import ray

    context = ray.get_runtime_context()
    return {"node": context.get_node_id(), "gpus": context.get_accelerator_ids().get("GPU", []),
            "device": worker.device}


class RayPassScorer:
    """A PassScorer running the videos of a pass as tasks on Ray actors (each holds a model and a feature cache).

    Actors ask for one GPU each where the cluster has GPUs, else one CPU; data and checkpoint paths must be the
    same on every node (shared file system).
    """

    def __init__(self, address: str, model_config: str, checkpoint: str | None, data_root: str, feature_cache_mb: int,
                 max_actors: int | None = None, progress: bool = True, wait_seconds: float = 10.0,
                 max_rows: int | None = None, chunk_by_config: bool = False):
        ray = connect_ray(address)
        gpus = int(ray.cluster_resources().get("GPU", 0))
        deadline = time.monotonic() + wait_seconds
        while True:  # resources of just-stopped actors come back after a moment
            free = ray.available_resources()
            slots = int(free.get("GPU", 0)) if gpus else int(free.get("CPU", 0))
            if slots >= 1 or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if slots < 1:  # an actor asking for what no node has free would stay PENDING forever
            kind = "GPU" if gpus else "CPU"
            raise MassegError(f"the Ray cluster at {address!r} has no free {kind} for an engine worker "
                              f"(total {ray.cluster_resources()}, free {free})",
                              fix="stop other Ray jobs on the cluster or add nodes, then rerun (the study resumes)")
        count = min(slots, max_actors or slots)
        checkpoint, data_root = absolute(checkpoint), absolute(data_root)
        require_shared_paths(inputs={"dataset (data.root)": data_root, "checkpoint": checkpoint})
        actor_class = ray.remote(EnginePassWorker).options(num_gpus=1 if gpus else 0, num_cpus=1)
        device = "auto" if gpus else "cpu"  # auto: the GPU Ray gave the actor (CPU on a node whose GPUs torch cannot see)
        self.ray = ray
        self.actors = [actor_class.remote(str(model_config), checkpoint, data_root, device, feature_cache_mb,
                                          None if gpus else 1, max_rows, chunk_by_config)
                       for _ in range(count)]
        self.progress = progress

    def placement(self) -> list[dict[str, Any]]:
        """Each actor's Ray node and the GPUs Ray gave it (for logs and checks)."""
        return self.ray.get([actor.__ray_call__.remote(_placement) for actor in self.actors])

    def close(self) -> None:
        """Stop the actors (frees their CPUs/GPUs on the cluster)."""
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors = []

    def __call__(self, pass_configs: PassConfigs) -> PassScores:
        return dict(self.stream(sorted(pass_configs), pass_configs.get))

    def stream(self, videos: list[str], configs_for: Callable[[str], dict[int, list[Config]] | None]
               ) -> Iterator[tuple[str, dict[int, list[float]]]]:
        """Like :meth:`LocalPassScorer.stream`, one video per free actor: a video's configurations are asked when an
        actor takes it, so what was pruned meanwhile leaves it; results come in the order they finish."""
        from ray.util import ActorPool

        pool = ActorPool(self.actors)
        pending = iter(videos)

        def submit_while_free() -> None:
            while pool.has_free():
                for video_name in pending:
                    configs = configs_for(video_name)
                    if configs is not None:
                        pool.submit(lambda actor, item: actor.score_video.remote(*item), (video_name, configs))
                        break
                else:
                    return

        submit_while_free()
        with tqdm(total=len(videos), desc="engine pass (ray)", unit="video", leave=False, disable=not self.progress) as bar:
            while pool.has_next():
                video_name, per_object = pool.get_next_unordered()
                bar.update(1)
                yield video_name, per_object
                submit_while_free()
