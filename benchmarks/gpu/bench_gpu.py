"""The engine at real size on a GPU: frames/s against plain SAM2 run K times, peak memory over a long video, and
parity under bf16 autocast. Writes one JSON of figures.

Run it through ``benchmarks/gpu/run.sh`` (which provides sam2 and its needs from a wheelhouse where they are
missing). Default: SAM2.1 Hiera-B+ at 1024 px with random weights in the official ``{"model": state_dict}``
format, on synthetic 480p videos, under ``torch.autocast("cuda", dtype=torch.bfloat16)`` as SAM2's
``tools/vos_inference.py`` runs (the engine enters the same autocast itself). ``--quick`` runs the same sections
with the project's small pretrained tiny128 model, small frames and few of them (the CPU check of this script).

Sections, in this order (each one skipped, and said so, once ``--budget-s`` has passed; the JSON is rewritten
after each):

* ``parity``: per object and configuration, low-res logits against plain SAM2 under the same autocast (largest and
  mean absolute difference, relative L2), agreement of the video-resolution masks, and J&F of each object scored
  alone (the project's evaluator, ``score_video``) on a small synthetic set. Rows: the engine one row at a time
  with SAM2's own modules (the engine's own structure), all rows batched (the batching step), each fast module
  alone on the batched engine, and the default engine (every fast module). On CUDA, plain SAM2 in float32 against
  plain SAM2 under bf16 gives the floor: a row is within tolerance when it differs from plain bf16 by at most twice
  what bf16 itself changes (or the absolute tolerance, whichever is larger). ``fallback_needed`` lists the fast
  modules and steps beyond it: on CUDA the engine should run SAM2's own module there.
* ``fps``: for K = 1 and 8 configurations, frames/s of the engine (fast modules, and ``fast_modules=False``)
  against plain SAM2 run K times, frame loading included; per-stage milliseconds per frame (a separate,
  synchronised pass on CUDA) and the speed-up bound they imply (encoder and loading shared, per-row work not).
* ``memory``: peak memory of the engine (K = 8) and of plain SAM2 (K = 1) on the first ``--memory-frames`` frames
  of one long video: flat in the video's length for the engine, growing for plain SAM2, which keeps every frame.

Random weights: a fresh SAM2 scores every object absent (its masks are then the constant -1024 and parity would be
trivial), so the object-score head's output bias is set to +10 and every object counts as present. Its masks carry
no meaning; J&F differences are a parity measure, not a quality figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from engine_stages import PeakMemory, StageTimer, sharing_bound  # noqa: E402
from masseg_search.data.layout import Video, open_dataset, write_mask  # noqa: E402
from masseg_search.data.synth import generate_video  # noqa: E402
from masseg_search.evaluation import score_video  # noqa: E402

CONFIGS = [(20.0, -10.0), (7.5, -4.0), (40.0, -20.0), (2.0, 0.0), (12.0, -6.0), (5.0, -2.0), (30.0, -15.0), (1.0, 0.0)]
PARITY_CONFIGS = CONFIGS[:2]
LOGIT_CLIP = 32.0  # SAM2 writes -1024 for an absent object: clip so one presence flip does not drown the rest
OBJECT_SCORE_BIAS = 10.0
SETTINGS = {
    "full": {"model_config": "configs/sam2.1/sam2.1_hiera_b+.yaml", "checkpoint": None, "height": 480, "width": 854,
             "objects": 3, "fps_frames": 48, "ks": "1,8", "repeats": 2, "memory_frames": "100,300",
             "parity_videos": 3, "parity_frames": 24, "budget_s": 360.0},
    "quick": {"model_config": "tiny128", "checkpoint": str(REPO / "configs/checkpoints/tiny128_base.pt"),
              "height": 96, "width": 128, "objects": 3, "fps_frames": 6, "ks": "1,8", "repeats": 1,
              "memory_frames": "20,40", "parity_videos": 2, "parity_frames": 6, "budget_s": 0.0},
}
# absolute tolerances: float32 (CPU) and bf16 autocast (CUDA, where the fp32-vs-bf16 floor may raise them)
TOLERANCE = {"float32": {"rel_l2": 1e-4, "mask_disagreement": 1e-3, "jf_abs_diff": 1e-3},
             "bf16": {"rel_l2": 1e-2, "mask_disagreement": 5e-3, "jf_abs_diff": 5e-3}}
FLOOR_FACTOR = 2.0


# ------------------------------------------------------------------------------------------------ data and model
def write_synthetic_video(root: Path, name: str, kind: str, seed: int, height: int, width: int, frames: int,
                          objects: int | None = None) -> tuple[Video, np.ndarray]:
    """A synthetic video (first-frame annotation only on disk) and all its ground-truth masks (T, H, W).

    With ``objects``, the first seed from ``seed`` on whose first frame holds exactly that many objects."""
    for attempt in range(seed, seed + 200):
        images, masks, _ = generate_video(name, kind, attempt, 0, height, width, frames)
        if objects is None or len(np.unique(masks[0])) - 1 == objects:
            break
    else:
        raise SystemExit(f"no synthetic {kind} video with {objects} objects in 200 seeds")
    (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(root / "JPEGImages" / name / f"{index:05d}.jpg", quality=95)
    write_mask(root / "Annotations" / name / "00000.png", masks[0])
    return open_dataset(root).video(name), np.stack(masks)


def first_frames(video: Video, root: Path, frames: int) -> Video:
    """The first ``frames`` frames of ``video`` as a video of their own under ``root`` (hard links)."""
    name = f"{video.name}_{frames}"
    (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
    for path in video.frame_paths[:frames]:
        os.link(path, root / "JPEGImages" / name / path.name)
    write_mask(root / "Annotations" / name / "00000.png", video.first_annotation()[1])
    return open_dataset(root).video(name)


def random_checkpoint(model_config: str, out: Path) -> Path:
    """Random weights (seed 0) in the official format, the object-score head's output bias set to +10."""
    import torch

    from masseg_search.model.build import init_checkpoint

    init_checkpoint(model_config, out, seed=0)
    state = torch.load(out, map_location="cpu", weights_only=True)["model"]
    head = sorted(k for k in state if k.startswith("sam_mask_decoder.pred_obj_score_head") and k.endswith(".bias"))
    if head:  # the last layer of the head (an MLP's layers.N or a single Linear)
        state[head[-1]] = torch.full_like(state[head[-1]], OBJECT_SCORE_BIAS)
    torch.save({"model": state}, out)
    return out


def fast_module_classes(model: Any) -> dict[type, type]:
    """Fast subclass -> SAM2's class, for the fast modules the engine has swapped into ``model``."""
    from masseg_search.model import fast_modules

    return {type(m): type(m).__bases__[0] for m in model.modules() if type(m).__module__ == fast_modules.__name__}


def use_fast_modules(model: Any, fast_to_sam2: dict[type, type], enabled: set[type]) -> None:
    """Give every swappable module of ``model`` its fast class if that class is in ``enabled``, else SAM2's."""
    sam2_to_fast = {base: fast for fast, base in fast_to_sam2.items()}
    for module in model.modules():
        kind = type(module)
        base = fast_to_sam2.get(kind, kind)
        if base in sam2_to_fast:
            module.__class__ = sam2_to_fast[base] if sam2_to_fast[base] in enabled else base


# --------------------------------------------------------------------------------------------------- contenders
class Bench:
    """The engine (one model, its fast modules switched per run) and plain SAM2 on one device."""

    def __init__(self, model_config: str, checkpoint: Path, device: str):
        import torch

        import sam2.sam2_video_predictor as predictor_module
        from masseg_search.model.build import build_model, build_plain_predictor
        from masseg_search.model.engine import MultiConfigEngine

        self.torch = torch
        self.device = device
        self.device_type = "cuda" if device.startswith("cuda") else "cpu"
        self.precision = "bf16" if self.device_type == "cuda" else "float32"
        self.engine = MultiConfigEngine(build_model(model_config, checkpoint, device=device), device,
                                        logits_dtype=np.float32, fast_modules=True)
        self.fast_to_sam2 = fast_module_classes(self.engine.model)
        self.plain = build_plain_predictor(model_config, checkpoint, device=device)
        self.predictor_module = predictor_module

    def _synchronize(self) -> None:
        if self.device_type == "cuda":
            self.torch.cuda.synchronize()

    def measure(self, function: Callable[[], Any], model: Any, io_targets: list, stages: bool) -> dict[str, Any]:
        """Run ``function``: seconds, outputs, peak memory, and the stage timer when ``stages``."""
        timer = StageTimer(model, self.device_type, io_targets)
        with PeakMemory(self.device_type) as memory:
            if stages:
                timer.__enter__()
            try:
                self._synchronize()
                start = time.perf_counter()
                outputs = function()
                self._synchronize()
                seconds = time.perf_counter() - start
            finally:
                timer.__exit__()
        return {"seconds": seconds, "outputs": outputs, "memory": memory, "timer": timer if stages else None}

    def engine_run(self, video: Video, configs: list[tuple[float, float]], fast: set[type] | None = None,
                   max_rows: int | None = None, stages: bool = False) -> dict[str, Any]:
        """The engine on every object under ``configs``; ``fast``: the fast classes to use (None = all)."""
        use_fast_modules(self.engine.model, self.fast_to_sam2, set(self.fast_to_sam2) if fast is None else fast)
        self.engine.max_rows = max_rows
        objects = sorted(int(i) for i in np.unique(video.first_annotation()[1]) if i)

        def run() -> dict[tuple[float, float], dict[int, np.ndarray]]:
            results = self.engine.predict_video(video, {obj: configs for obj in objects})
            return {(p.scale, p.bias): p.logits for p in results.values()}

        return self.measure(run, self.engine.model, [(self.engine, "_load_frame")], stages)

    def plain_run(self, video: Video, configs: list[tuple[float, float]], autocast: bool = True,
                  stages: bool = False) -> dict[str, Any]:
        """Plain SAM2 once per configuration, under bf16 autocast on CUDA (as vos_inference.py) unless told not."""
        from masseg_search.model.engine import reference_predict_video

        torch = self.torch

        def run() -> dict[tuple[float, float], dict[int, np.ndarray]]:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and self.device_type == "cuda"):
                return {(scale, bias): reference_predict_video(self.plain, video, scale, bias)[0] for scale, bias in configs}

        return self.measure(run, self.plain, [(self.predictor_module, "load_video_frames")], stages)


# ------------------------------------------------------------------------------------------------------- parity
def object_masks(logits: np.ndarray, height: int, width: int, device: str) -> np.ndarray:
    """(T, H, W) uint8 0/1 masks: low-res logits upsampled as SAM2 does (bilinear, no corner alignment), > 0."""
    import torch
    import torch.nn.functional as F

    low_res = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))[:, None].to(device)
    video_res = F.interpolate(low_res, size=(height, width), mode="bilinear", align_corners=False)
    return (video_res[:, 0] > 0).to(torch.uint8).cpu().numpy()


def object_jf(mask: np.ndarray, gt: np.ndarray, object_id: int) -> float:
    """J&F of one object scored alone (its mask against its ground truth), with the project's evaluator."""
    scores = score_video((gt == object_id).astype(np.uint8), mask, object_ids=[1])
    return scores.object_j_and_f_means()[1]


class ParitySet:
    """Ground truth and per-object masks and J&F of every logits set, so each is computed once."""

    def __init__(self, videos: list[tuple[Video, np.ndarray]], device: str):
        self.videos = videos
        self.device = device

    def masks_and_jf(self, outputs: list[dict]) -> tuple[dict, dict]:
        """(video, config, object) -> masks and J&F, for per-video outputs (config -> object -> logits)."""
        masks, jf = {}, {}
        for (video, gt), per_config in zip(self.videos, outputs):
            height, width = gt.shape[1:]
            for config, per_object in per_config.items():
                for obj, logits in per_object.items():
                    key = (video.name, config, obj)
                    masks[key] = object_masks(logits, height, width, self.device)
                    jf[key] = object_jf(masks[key], gt, obj)
        return masks, jf

    def compare(self, outputs: list[dict], reference: list[dict], reference_masks: dict, reference_jf: dict) -> dict:
        """Differences of ``outputs`` from ``reference`` over every video, configuration and object."""
        masks, jf = self.masks_and_jf(outputs)
        squared_diff = squared_ref = 0.0
        max_diff, abs_sum, count = 0.0, 0.0, 0
        agree = pixels = 0
        for per_config, per_config_ref in zip(outputs, reference):
            for config, per_object in per_config.items():
                for obj, logits in per_object.items():
                    ours = np.clip(logits, -LOGIT_CLIP, LOGIT_CLIP).astype(np.float64)
                    theirs = np.clip(per_config_ref[config][obj], -LOGIT_CLIP, LOGIT_CLIP).astype(np.float64)
                    diff = ours - theirs
                    squared_diff += float((diff ** 2).sum())
                    squared_ref += float((theirs ** 2).sum())
                    max_diff = max(max_diff, float(np.abs(diff).max()))
                    abs_sum += float(np.abs(diff).sum())
                    count += diff.size
        for key, mask in masks.items():
            agree += int((mask == reference_masks[key]).sum())
            pixels += mask.size
        jf_diffs = [jf[key] - reference_jf[key] for key in jf]
        return {"max_abs_logit_diff": max_diff, "mean_abs_logit_diff": abs_sum / count,
                "rel_l2": (squared_diff / squared_ref) ** 0.5 if squared_ref else 0.0,
                "mask_agreement": agree / pixels, "jf_mean": float(np.mean(list(jf.values()))),
                "jf_mean_diff": float(np.mean(jf_diffs)), "jf_max_abs_diff": float(np.max(np.abs(jf_diffs)))}


def tolerance_for(precision: str, floor: dict | None) -> dict[str, float]:
    """Tolerances for a row's differences from plain SAM2: the absolute ones, raised to twice the floor."""
    tolerance = dict(TOLERANCE[precision])
    if floor is not None:
        tolerance["rel_l2"] = max(tolerance["rel_l2"], FLOOR_FACTOR * floor["rel_l2"])
        tolerance["mask_disagreement"] = max(tolerance["mask_disagreement"], FLOOR_FACTOR * (1 - floor["mask_agreement"]))
        tolerance["jf_abs_diff"] = max(tolerance["jf_abs_diff"], FLOOR_FACTOR * floor["jf_max_abs_diff"])
    return tolerance


def within(row: dict, tolerance: dict[str, float]) -> bool:
    """Whether one parity row's differences are inside ``tolerance``."""
    return (row["rel_l2"] <= tolerance["rel_l2"] and 1 - row["mask_agreement"] <= tolerance["mask_disagreement"]
            and row["jf_max_abs_diff"] <= tolerance["jf_abs_diff"])


def parity_section(bench: Bench, videos: list[tuple[Video, np.ndarray]]) -> dict[str, Any]:
    """Every engine variant against plain SAM2 (see the module docstring)."""
    parity = ParitySet(videos, bench.device)
    plain = [bench.plain_run(video, PARITY_CONFIGS)["outputs"] for video, _ in videos]
    plain_masks, plain_jf = parity.masks_and_jf(plain)
    reference_foreground = float(np.mean([mask.mean() for mask in plain_masks.values()]))
    floor = None
    if bench.precision == "bf16":  # what bf16 autocast itself changes: plain float32 against plain bf16
        plain_fp32 = [bench.plain_run(video, PARITY_CONFIGS, autocast=False)["outputs"] for video, _ in videos]
        floor = parity.compare(plain_fp32, plain, plain_masks, plain_jf)
    tolerance = tolerance_for(bench.precision, floor)
    variants: list[tuple[str, set[type], int | None]] = [
        ("engine_sam2_modules_one_row", set(), 1), ("engine_sam2_modules_batched", set(), None)]
    variants += [(f"engine_fast_{fast.__name__}", {fast}, None) for fast in sorted(bench.fast_to_sam2, key=lambda c: c.__name__)]
    variants.append(("engine_default", set(bench.fast_to_sam2), None))
    rows, batched, batched_masks = [], None, None
    for name, fast, max_rows in variants:
        outputs = [bench.engine_run(video, PARITY_CONFIGS, fast=fast, max_rows=max_rows)["outputs"] for video, _ in videos]
        row = {"name": name, "fast_modules": sorted(c.__name__ for c in fast), "max_rows": max_rows,
               **parity.compare(outputs, plain, plain_masks, plain_jf)}
        if batched is not None and len(fast) == 1:  # the module's own effect: against the batched SAM2-module run
            row["vs_engine_sam2_modules_batched"] = parity.compare(outputs, batched, *batched_masks)
        if name == "engine_sam2_modules_batched":
            batched, batched_masks = outputs, parity.masks_and_jf(outputs)
        row["within_tolerance"] = within(row, tolerance)
        rows.append(row)
        print(f"parity {name:48s} rel L2 {row['rel_l2']:.2e}, max |diff| {row['max_abs_logit_diff']:.2e}, masks agree "
              f"{row['mask_agreement']:.5f}, J&F diff max {row['jf_max_abs_diff']:.4f}, "
              f"{'within' if row['within_tolerance'] else 'BEYOND'} tolerance", flush=True)
    fallback = [row["name"] for row in rows if not row["within_tolerance"]]
    return {"videos": len(videos), "frames": int(videos[0][1].shape[0]), "configs": [list(c) for c in PARITY_CONFIGS],
            "objects": sum(len(np.unique(gt[0])) - 1 for _, gt in videos), "precision": bench.precision,
            "plain_jf_mean": float(np.mean(list(plain_jf.values()))), "plain_foreground_fraction": reference_foreground,
            "bf16_floor_plain_fp32_vs_bf16": floor, "tolerance": tolerance, "rows": rows,
            "all_within_tolerance": not fallback, "fallback_needed": fallback}


# -------------------------------------------------------------------------------------------------- fps, memory
def fps_section(bench: Bench, video: Video, ks: list[int], repeats: int, frames: int,
                out_of_time: Callable[[], bool], separate: bool) -> dict[str, Any]:
    """Frames/s and per-stage times of the engine and of plain SAM2 run K times, for each K; ``separate``: time
    the stages in a pass of their own (on CUDA the stage hooks synchronise, which would slow the timed runs)."""
    everything = set(bench.fast_to_sam2)
    contenders = {"engine": lambda k, stages: bench.engine_run(video, CONFIGS[:k], fast=everything, stages=stages),
                  "engine_sam2_modules": lambda k, stages: bench.engine_run(video, CONFIGS[:k], fast=set(), stages=stages),
                  "plain": lambda k, stages: bench.plain_run(video, CONFIGS[:k], stages=stages)}
    plain_one_run = None
    rows, skipped = [], []
    for k in ks:
        if out_of_time():
            skipped.append(k)
            continue
        best: dict[str, dict] = {}
        for _ in range(repeats):
            for name, run in contenders.items():
                measured = run(k, not separate)
                if name not in best or measured["seconds"] < best[name]["seconds"]:
                    best[name] = measured
        stages = {}
        for name, measured in best.items():
            if separate:
                staged = contenders[name](k if name != "plain" else 1, True)
                scale = 1 if name != "plain" else k  # plain runs K identical passes: one pass, K times
                stages[name] = {s: v * scale for s, v in staged["timer"].breakdown(staged["seconds"], frames).items()}
            else:
                stages[name] = measured["timer"].breakdown(measured["seconds"], frames)
        if plain_one_run is None or k == 1:
            plain_one_run = {stage: value / k for stage, value in stages["plain"].items()}
        fps = {name: frames / measured["seconds"] for name, measured in best.items()}
        row = {"k": k, "rows": k * len(best["engine"]["outputs"][CONFIGS[0]]),
               "engine_fps": fps["engine"], "engine_sam2_modules_fps": fps["engine_sam2_modules"], "plain_fps": fps["plain"],
               "speedup": fps["engine"] / fps["plain"], "speedup_sam2_modules": fps["engine_sam2_modules"] / fps["plain"],
               "speedup_bound_from_breakdown": sharing_bound(plain_one_run, k),
               "stages_ms_per_frame": stages, "peak_memory": {name: m["memory"].record() for name, m in best.items()}}
        rows.append(row)
        print(f"fps K={k}: engine {row['engine_fps']:.2f}, SAM2 modules {row['engine_sam2_modules_fps']:.2f}, plain x{k} "
              f"{row['plain_fps']:.2f} frames/s: {row['speedup']:.2f}x ({row['speedup_sam2_modules']:.2f}x with SAM2's "
              f"modules; bound from the breakdown {row['speedup_bound_from_breakdown']:.2f}x)", flush=True)
    return {"frames": frames, "repeats": repeats, "stage_pass": "separate" if separate else "inline",
            "plain_one_run_stages_ms_per_frame": plain_one_run, "rows": rows, "skipped_ks": skipped}


def memory_section(bench: Bench, long_video: Video, root: Path, lengths: list[int], k: int,
                   out_of_time: Callable[[], bool]) -> dict[str, Any]:
    """Peak memory of the engine (K configurations) and plain SAM2 (one) on the video's first N frames, per N."""
    engine_rows, plain_rows = [], []
    for frames in lengths:
        if out_of_time():
            break
        video = long_video if frames == len(long_video.frame_paths) else first_frames(long_video, root, frames)
        run = bench.engine_run(video, CONFIGS[:k])
        engine_rows.append({"frames": frames, **run["memory"].record(), "seconds": run["seconds"],
                            "stored_frames": bench.engine.peak_stored_frames,
                            "stored_mib": round(bench.engine.peak_stored_bytes / 2**20, 2)})
        run = bench.plain_run(video, CONFIGS[:1])
        plain_rows.append({"frames": frames, **run["memory"].record(), "seconds": run["seconds"]})
        print(f"memory {frames} frames: engine K={k} peak {engine_rows[-1]['peak_mib']} MiB "
              f"({engine_rows[-1]['added_mib']:+} by the run, {engine_rows[-1]['stored_frames']} frames stored), "
              f"plain K=1 peak {plain_rows[-1]['peak_mib']} MiB ({plain_rows[-1]['added_mib']:+} by the run)", flush=True)

    def growth(rows: list[dict]) -> float | None:
        """Added memory at the longest length over that at the shortest."""
        if len(rows) < 2 or rows[0]["added_mib"] <= 0:
            return None
        return rows[-1]["added_mib"] / rows[0]["added_mib"]

    return {"k": k, "engine": engine_rows, "plain": plain_rows, "engine_growth": growth(engine_rows),
            "engine_stored_frames_flat": len({row["stored_frames"] for row in engine_rows}) == 1,
            "plain_growth": growth(plain_rows), "method": engine_rows[0]["method"] if engine_rows else None}


# ---------------------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--quick", action="store_true", help="the small pretrained tiny128 model, few small frames")
    parser.add_argument("--model-config", help="default: Hiera-B+ (tiny128 with --quick)")
    parser.add_argument("--checkpoint", help="default: random official-format weights (tiny128_base.pt with --quick)")
    parser.add_argument("--fps-frames", type=int)
    parser.add_argument("--ks", help="configurations per object for the fps section, e.g. 1,8")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--memory-frames", help="video lengths for the memory section, e.g. 100,300")
    parser.add_argument("--parity-videos", type=int)
    parser.add_argument("--parity-frames", type=int)
    parser.add_argument("--stage-pass", choices=("auto", "inline", "separate"), default="auto",
                        help="stages timed inside the timed runs (CPU's default) or in a pass of their own (CUDA's)")
    parser.add_argument("--budget-s", type=float, help="start no section after this many seconds (0 = no limit)")
    parser.add_argument("--out", default=str(Path(os.environ.get("OUT", REPO / "results/bench")) / "gpu_bench.json"))
    args = parser.parse_args()
    settings = dict(SETTINGS["quick" if args.quick else "full"])
    settings.update({key: value for key, value in vars(args).items() if key in settings and value is not None})

    import torch

    from masseg_search.model.build import resolve_device

    started = time.perf_counter()
    device = resolve_device(args.device)
    budget = float(settings["budget_s"])

    def out_of_time() -> bool:
        return bool(budget) and time.perf_counter() - started > budget

    import tqdm as tqdm_module  # plain SAM2 shows a bar per run; keep the output readable
    from functools import partialmethod

    tqdm_module.tqdm.__init__ = partialmethod(tqdm_module.tqdm.__init__, disable=True)
    out = Path(args.out)
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    record: dict[str, Any] = {
        "mode": "quick" if args.quick else "full", "device": device, "python": platform.python_version(),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu",
        "settings": settings, "sections_skipped": [], "section_errors": {}, "load_average_1_5_15_min": {"before": os.getloadavg()}}

    def write() -> None:
        record["elapsed_s"] = round(time.perf_counter() - started, 1)
        record["load_average_1_5_15_min"]["after"] = os.getloadavg()
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".tmp")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(out)

    try:
        import sam2

        record["sam2"] = getattr(sam2, "__version__", None) or _distribution_version("sam2")
        checkpoint = settings["checkpoint"]
        if checkpoint is None:
            checkpoint = random_checkpoint(settings["model_config"], tmp / "random.pt")
            record["weights"] = f"random (seed 0), object-score head bias {OBJECT_SCORE_BIAS:+g}, official format"
        else:
            record["weights"] = str(checkpoint)
        bench = Bench(settings["model_config"], Path(checkpoint), device)
        record.update({"model_config": settings["model_config"], "image_size": bench.engine.image_size,
                       "parameters": sum(p.numel() for p in bench.engine.model.parameters()),
                       "precision": "bf16 autocast (torch.autocast('cuda', dtype=torch.bfloat16))"
                       if bench.precision == "bf16" else "float32 (the engine's autocast is CUDA-only)",
                       "fast_modules": sorted(c.__name__ for c in bench.fast_to_sam2),
                       "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}})
        height, width, objects = settings["height"], settings["width"], settings["objects"]
        print(f"{settings['model_config']} ({record['parameters'] / 1e6:.1f}M parameters, {bench.engine.image_size} px) on "
              f"{record['device_name']}, {record['precision']}", flush=True)
        kinds = ("regular", "crowded", "occlusion", "lookalike", "small")
        parity_videos = [write_synthetic_video(tmp / "parity", f"parity_{i}", kinds[i % len(kinds)], 100 + i, height,
                                               width, settings["parity_frames"]) for i in range(settings["parity_videos"])]
        fps_video, _ = write_synthetic_video(tmp / "fps", "fps", "regular", 0, height, width, settings["fps_frames"], objects)
        lengths = sorted(int(v) for v in str(settings["memory_frames"]).split(","))
        long_video, _ = write_synthetic_video(tmp / "long", "long", "regular", 0, height, width, lengths[-1], objects)
        warmup = first_frames(fps_video, tmp / "warmup", 2)
        ks = [int(v) for v in str(settings["ks"]).split(",")]
        bench.engine_run(warmup, CONFIGS[:max(ks)]), bench.engine_run(warmup, CONFIGS[:1], fast=set())
        bench.plain_run(warmup, CONFIGS[:1]), bench.plain_run(warmup, CONFIGS[:1], autocast=False)
        record["setup_s"] = round(time.perf_counter() - started, 1)
        write()

        separate = args.stage_pass == "separate" or (args.stage_pass == "auto" and bench.device_type == "cuda")
        sections: list[tuple[str, Callable[[], dict]]] = [
            ("parity", lambda: parity_section(bench, parity_videos)),
            ("fps", lambda: fps_section(bench, fps_video, ks, int(settings["repeats"]), settings["fps_frames"],
                                        out_of_time, separate)),
            ("memory", lambda: memory_section(bench, long_video, tmp / "memory", lengths, max(ks), out_of_time))]
        for name, section in sections:  # one failing section leaves the others' figures (one shot on a lent GPU)
            record[name] = None
            if out_of_time():
                record["sections_skipped"].append(name)
                continue
            try:
                record[name] = section()
            except Exception:
                record["section_errors"][name] = traceback.format_exc(limit=-6)[-3000:]
                print(f"section {name} failed:\n{record['section_errors'][name]}", file=sys.stderr, flush=True)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            write()
        if record["fps"] and record["fps"]["skipped_ks"]:
            record["sections_skipped"].append(f"fps K={record['fps']['skipped_ks']}")
        if record["memory"] and len(record["memory"]["engine"]) < len(lengths):
            record["sections_skipped"].append("memory (some lengths)")
        record["complete"] = not record["sections_skipped"] and not record["section_errors"]
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["complete"] = False
        raise
    finally:
        write()
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"written to {out} ({record['elapsed_s']} s)", flush=True)
    if record["section_errors"]:
        raise SystemExit(f"sections failed: {', '.join(record['section_errors'])} (tracebacks in {out})")


def _distribution_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
