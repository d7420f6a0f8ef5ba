"""`infer --ray-address`: the videos of a split spread over the workers of a Ray cluster.

Each worker is a Ray actor holding one model (built on the first video it has to run, kept for the next ones) on
``gpus_per_worker`` of a GPU (a fraction puts several workers on one GPU; 0 runs CPU workers, the default on a
cluster without GPUs). A worker runs one video at a time through :func:`run_inference` restricted to that video,
the very path local infer takes, into the same predictions folder: results are the same files, a finished video
is skipped and a half-written one redone exactly as locally. A worker process that dies loses only its current
video: Ray restarts the actor and runs that video again (:mod:`masseg_search.cluster.pool`).

On a cluster of several nodes the data, the checkpoint and the predictions folder must be on storage every node
sees at the same path; that is checked before any video is scheduled (:mod:`masseg_search.cluster.shared`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from masseg_search.cluster import (
    absolute,
    actor_options,
    check_fits_a_node,
    map_on_actors,
    ray_connection,
    require_shared_paths,
    resolve_address,
)
from masseg_search.config import InferSection
from masseg_search.data.layout import open_dataset
from masseg_search.errors import MassegError
from masseg_search.inference.infer import build_engine, run_inference

PATH_OPTIONS = ("split_list", "per_type", "policy", "scene_types")  # run_inference's file arguments besides the positional ones


@dataclass
class DistributedInferResult:
    """What a run over Ray did: which videos its workers ran and which were already complete."""

    out_dir: Path
    ran: list[str] = field(default_factory=list)  # run by a worker (with skip_bad: or skipped as bad, logged there)
    already_done: list[str] = field(default_factory=list)  # complete before this run: skipped
    workers: int = 0
    nodes: set[str] = field(default_factory=set)  # Ray node ids the videos ran on
    restarted_workers: int = 0  # workers whose process died and was replaced by Ray while videos ran


class InferWorker:
    """A Ray actor: the engine of one model, built on the first video that needs it and kept for the next ones."""

    def __init__(self, model_config: str, checkpoint: str | None, device: str, postprocess: bool, flip: bool,
                 threads: int | None):
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.build = (model_config, checkpoint, device, postprocess, flip)
        self.engine: Any = None
        self.built = False

    def _engine(self) -> Any:
        self.built = True
        if self.engine is None:
            self.engine = build_engine(*self.build)
        return self.engine

    def where(self) -> dict[str, Any]:
        """This worker's process, node and the GPUs Ray gave it."""
        import ray

        context = ray.get_runtime_context()
        return {"pid": os.getpid(), "node": context.get_node_id(), "actor": context.get_actor_id(),
                "restarted": context.was_current_actor_reconstructed,
                "gpus": context.get_accelerator_ids().get("GPU", []),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def infer(self, video: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run one video as local infer would (skipped when complete); say whether it ran and where."""
        self.built = False
        run_inference(**arguments, videos=[video], engine=self._engine, progress=False)
        return {"video": video, "ran": self.built, **self.where()}


def plan_workers(gpus_per_worker: float | None, cpus_per_worker: float, workers: int | None, videos: int) -> tuple[int, float]:
    """(workers, GPUs each) on the connected cluster: by default one worker per GPU where it has GPUs, else one per
    ``cpus_per_worker`` CPUs (and never more than its CPUs hold, nor more than videos). Refuses what no node could
    ever run; a worker whose resources are busy elsewhere simply takes no video."""
    import ray

    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    share = (1.0 if gpus else 0.0) if gpus_per_worker is None else float(gpus_per_worker)
    if share > 1:
        raise MassegError(f"--gpus-per-worker {share:g}: a worker runs one model on one GPU",
                          fix="use a value up to 1 (0.5 puts two workers on a GPU)")
    if share > gpus:
        raise MassegError(f"each worker asks for {share:g} GPU but the Ray cluster has {gpus:g}",
                          fix="pass --gpus-per-worker 0 for CPU workers, or join a cluster with GPUs")
    check_fits_a_node(cpus_per_worker, share, "an infer worker",
                      "lower --gpus-per-worker or infer.cpus_per_worker, or add a node that has them")
    fit = math.floor(cpus / cpus_per_worker + 1e-9)
    if share:
        fit = min(fit, math.floor(gpus / share + 1e-9))
    return max(1, min(workers or fit, videos)), share


def run_inference_on_ray(address: str | None, model_config: str, checkpoint: str | Path | None,
                         data_root: str | Path, out_dir: str | Path, configs: Any, *,
                         split_list: str | Path | None = None, videos: Sequence[str] | None = None,
                         workers: int | None = None, gpus_per_worker: float | None = None,
                         cpus_per_worker: float = 1, device: str = "auto", postprocess: bool = False,
                         flip: bool = False, progress: bool = True, **options: Any) -> DistributedInferResult:
    """:func:`run_inference` with its videos spread over Ray workers at ``address`` (``local``: a loopback-only Ray
    started here; None: ``RAY_ADDRESS``). ``options`` are run_inference's own (per_type, view, save_masks...).
    Returns what ran where; the predictions are in ``out_dir`` exactly as a local run writes them."""
    from tqdm import tqdm

    arguments: dict[str, Any] = {
        "model_config": model_config, "checkpoint": absolute(checkpoint), "data_root": absolute(data_root),
        "out_dir": absolute(out_dir), "configs": configs, "split_list": absolute(split_list),
        "device": device, "postprocess": postprocess, "flip": flip, **options}
    for name in PATH_OPTIONS:
        if isinstance(arguments.get(name), (str, Path)):
            arguments[name] = absolute(arguments[name])
    # the arguments are checked here, before any worker starts: no video given = nothing run, no model built
    run_inference(**{**arguments, "save_masks": False}, videos=[], progress=False)
    names = list(videos) if videos is not None else list(open_dataset(data_root, split_list=split_list).video_names)
    result = DistributedInferResult(Path(arguments["out_dir"]))
    if not names:
        return result
    with ray_connection(resolve_address(address)):
        import ray

        count, share = plan_workers(gpus_per_worker, cpus_per_worker, workers, len(names))
        require_shared_paths(
            inputs={name: arguments[key] for name, key in (("dataset", "data_root"), ("checkpoint", "checkpoint"),
                    ("split list", "split_list"), ("best configs", "per_type"), ("policy", "policy"),
                    ("scene types", "scene_types"))
                    if isinstance(arguments.get(key), str)},
            outputs={"predictions folder": arguments["out_dir"]})
        worker_device = "cpu" if share == 0 else device
        threads = max(1, int(cpus_per_worker))  # torch's CPU threads: the CPUs Ray gave the worker
        actor_class = ray.remote(InferWorker).options(**actor_options(cpus_per_worker, share))
        actors = [actor_class.remote(model_config, arguments["checkpoint"], worker_device, postprocess, flip, threads)
                  for _ in range(count)]
        result.workers = count
        restarted: set[str] = set()
        try:
            finished = map_on_actors(actors, lambda actor, video: actor.infer.remote(video, arguments), names,
                                     ready=lambda actor: actor.where.remote())
            for video, outcome in tqdm(finished, total=len(names), desc="infer (ray)", unit="video",
                                       disable=not progress):
                (result.ran if outcome["ran"] else result.already_done).append(video)
                result.nodes.add(outcome["node"])
                if outcome["restarted"]:
                    restarted.add(outcome["actor"])
        finally:
            for actor in actors:
                ray.kill(actor)
        result.restarted_workers = len(restarted)
    return result


def run_inference_anywhere(section: InferSection | None, *args: Any, ray_address: str | None = None,
                           **kwargs: Any) -> Path:
    """The pipeline's infer: on the Ray cluster of ``ray_address`` / ``RAY_ADDRESS`` / ``section.ray_address`` when
    one is named, else in this process (:func:`run_inference`). Returns the predictions folder."""
    section = section or InferSection()
    address = resolve_address(ray_address, section.ray_address)
    if address is None:
        return run_inference(*args, **kwargs)
    return run_inference_on_ray(address, *args, workers=section.workers, gpus_per_worker=section.gpus_per_worker,
                                cpus_per_worker=section.cpus_per_worker, **kwargs).out_dir
