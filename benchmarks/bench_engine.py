"""Benchmark: the multi-configuration engine against K sequential plain SAM2VideoPredictor runs, where the time
goes, and peak memory.

One synthetic video with several objects; for K = 1, 4, 8 configurations the engine runs every object under all K
in one pass, plain SAM2 (built as tools/vos_inference.py builds it) runs K times. The engine is also timed with
SAM2's own modules (``fast_modules=False``), which splits its gain into batching/sharing and the fast modules. Both
include frame loading and read the same JPEGs. Timings are the best of ``--repeats`` interleaved runs (the machine
is shared). Every run is split into stages (``engine_stages.StageTimer``: image encoder, memory attention, mask
decoder, memory encoder, I/O = frame decoding/resizing/normalising, other = SAM2's glue), and the breakdown of one
plain run gives the speed-up bound of sharing the encoder and I/O while every row keeps its own tracking work.
Peak memory per run: the resident set on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. A long video
(``--long-frames``) shows the engine's stored memory stays flat while plain SAM2 keeps every frame. Each engine run
is also compared with plain SAM2 (largest low-res logit difference; with random weights SAM2 scores every tracked
object absent, so this is only a smoke check: tests/model/test_parity.py checks parity on weights that track).

Tiny model (the default), and SAM2.1's shipped models at their real size (1024 px; ``--model-config`` takes
``hiera_t``, ``hiera_s``, ``hiera_b+``, ``hiera_l`` or any name ``masseg_search.model.build`` resolves)::

    .venv/bin/python benchmarks/bench_engine.py --model-config tiny256 --objects 3 --frames 24 --threads 2
    .venv/bin/python benchmarks/bench_engine.py --model-config hiera_t --objects 3 --frames 4 --height 240 \\
        --width 320 --ks 1,4 --repeats 1 --long-frames 0 --clock cpu --threads 1

On CUDA the stage hooks synchronise, so there the stages are timed in a pass of their own (``--stage-pass``). On a
shared CPU, ``--clock cpu --threads 1`` times in the process's CPU time, which other jobs change much less than
wall-clock time (benchmarks/README.md has the real-size figures).
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
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_stages import PeakMemory, StageTimer, sharing_bound  # noqa: E402
from masseg_search.data.layout import Video, open_dataset, write_mask  # noqa: E402

CONFIGS = [(20.0, -10.0), (7.5, -4.0), (40.0, -20.0), (2.0, 0.0), (12.0, -6.0), (5.0, -2.0), (30.0, -15.0), (1.0, 0.0)]
# SAM2.1's shipped models, as sam2 installs them (all 1024 px)
SHIPPED = {f"hiera_{size}": f"configs/sam2.1/sam2.1_hiera_{size}.yaml" for size in ("t", "s", "b+", "l")}
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def write_video(root: Path, name: str, objects: int, height: int, width: int, frames: int) -> Video:
    """A synthetic video (masseg_search.data.synth) with exactly ``objects`` objects in its first frame."""
    from masseg_search.data.synth import generate_video

    kind = "regular" if objects <= 3 else "crowded"
    for seed in range(200):
        images, masks, _ = generate_video(name, kind, seed, 0, height, width, frames)
        if len(np.unique(masks[0])) - 1 == objects:
            break
    else:
        raise SystemExit(f"no synthetic {kind} video with {objects} objects in 200 seeds")
    for index, image in enumerate(images):
        (root / "JPEGImages" / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / name / f"{index:05d}.jpg", quality=95)
    write_mask(root / "Annotations" / name / "00000.png", masks[0])
    return open_dataset(root).video(name)


def stored_bytes(outputs: dict) -> int:
    """Bytes of memory features and object pointers in a plain-SAM2 per-object output dict."""
    return sum(t.numel() * t.element_size() for out in outputs.values()
               for t in (out.get("maskmem_features"), out.get("obj_ptr")) if t is not None)


def logits_by_config(results: dict) -> dict[tuple[float, float], dict[int, np.ndarray]]:
    """The engine's results (config id -> VideoPrediction) keyed by (scale, bias)."""
    return {(prediction.scale, prediction.bias): prediction.logits for prediction in results.values()}


class Runner:
    """The three contenders on one video, each run returning (seconds, outputs, stage timer, peak memory)."""

    def __init__(self, args: argparse.Namespace, checkpoint: Path, clock: Callable[[], float]):
        import sam2.sam2_video_predictor as predictor_module

        from masseg_search.model.build import build_model, build_plain_predictor
        from masseg_search.model.engine import MultiConfigEngine

        self.device_type = "cuda" if args.device.startswith("cuda") else "cpu"
        self.engine = MultiConfigEngine(build_model(args.model_config, checkpoint, device=args.device), args.device,
                                        logits_dtype=np.float32)
        self.sam2_modules_engine = MultiConfigEngine(build_model(args.model_config, checkpoint, device=args.device),
                                                     args.device, logits_dtype=np.float32, fast_modules=False)
        self.plain = build_plain_predictor(args.model_config, checkpoint, device=args.device)
        self.predictor_module = predictor_module
        self.clock = clock

    def _measure(self, function: Callable[[], Any], model: Any, io_targets: list, stages: bool) -> tuple:
        """(seconds, outputs, stage timer, peak memory) of one call of ``function``; stages timed when ``stages``."""
        import torch

        timer = StageTimer(model, self.device_type, io_targets, self.clock)
        with PeakMemory(self.device_type) as memory:
            if stages:
                timer.__enter__()
            try:
                if self.device_type == "cuda":
                    torch.cuda.synchronize()
                start = self.clock()
                outputs = function()
                if self.device_type == "cuda":
                    torch.cuda.synchronize()
                seconds = self.clock() - start
            finally:
                timer.__exit__()
        return seconds, outputs, timer, memory

    def engine_run(self, video: Video, objects: list[int], k: int, sam2_modules: bool = False, stages: bool = True) -> tuple:
        """One engine pass over every object under the first ``k`` configurations."""
        engine = self.sam2_modules_engine if sam2_modules else self.engine
        return self._measure(lambda: engine.predict_video(video, {obj: CONFIGS[:k] for obj in objects}),
                             engine.model, [(engine, "_load_frame")], stages)

    def plain_run(self, video: Video, k: int, stages: bool = True) -> tuple:
        """Plain SAM2 run once per configuration (the first ``k``); outputs: per run, object id -> logits."""
        from masseg_search.model.engine import reference_predict_video

        return self._measure(lambda: [reference_predict_video(self.plain, video, scale, bias)[0] for scale, bias in CONFIGS[:k]],
                             self.plain, [(self.predictor_module, "load_video_frames")], stages)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", default="tiny256", help=f"our names, {', '.join(SHIPPED)}, a sam2 name or a yaml path")
    parser.add_argument("--checkpoint", help="default: a random official-format checkpoint written to a temp folder")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--ks", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--long-frames", type=int, default=300, help="0 = skip the memory check")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stage-pass", choices=("auto", "inline", "separate"), default="auto",
                        help="time the stages inside the timed runs (inline, CPU's default) or in one extra run per "
                             "contender (separate, CUDA's default: the stage hooks synchronise)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall-clock time, or the process's CPU time (CPU only; with --threads 1 it is the work "
                             "done, which other processes on a shared machine barely change)")
    parser.add_argument("--warmup-frames", type=int, default=2, help="frames of the warm-up video (0 = no warm-up)")
    parser.add_argument("--out", default="results/bench/engine.json")
    args = parser.parse_args()
    args.model_config = SHIPPED.get(args.model_config, args.model_config)
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures CPU time: use it with --device cpu")
    clock = CLOCKS[args.clock]

    import torch

    from masseg_search.model.build import init_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    separate = args.stage_pass == "separate" or (args.stage_pass == "auto" and args.device.startswith("cuda"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    checkpoint = args.checkpoint or init_checkpoint(args.model_config, tmp / "random.pt", seed=0)
    video = write_video(tmp / "data", "bench", args.objects, args.height, args.width, args.frames)
    runner = Runner(args, checkpoint, clock)
    engine = runner.engine
    objects = sorted(int(i) for i in np.unique(video.first_annotation()[1]) if i)

    import tqdm as tqdm_module  # plain SAM2 prints a bar per run; keep the output readable
    from functools import partialmethod

    tqdm_module.tqdm.__init__ = partialmethod(tqdm_module.tqdm.__init__, disable=True)
    if args.warmup_frames:
        warmup = write_video(tmp / "warmup", "warmup", args.objects, args.height, args.width, args.warmup_frames)
        runner.engine_run(warmup, objects, 1), runner.engine_run(warmup, objects, 1, sam2_modules=True)
        runner.plain_run(warmup, 1)
    with torch.inference_mode():  # the image encoder alone: what sharing it across configurations can save
        image = torch.zeros(1, 3, engine.image_size, engine.image_size, device=args.device)
        timings = []
        for _ in range(3):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = clock()
            engine.model.forward_image(image)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            timings.append(clock() - start)
        encoder_ms = 1000 * min(timings)
    print(f"{args.model_config}: {engine.image_size} px, {sum(p.numel() for p in engine.model.parameters()) / 1e6:.1f}M "
          f"parameters; image encoder {encoder_ms:.1f} ms/frame ({args.clock} clock, {torch.get_num_threads()} "
          f"threads)", flush=True)
    rows = []
    plain_one_run = None
    for k in [int(v) for v in args.ks.split(",")]:
        best: dict[str, tuple] = {}
        for _ in range(args.repeats):
            for name, run in (("engine", lambda: runner.engine_run(video, objects, k, stages=not separate)),
                              ("sam2_modules", lambda: runner.engine_run(video, objects, k, True, stages=not separate)),
                              ("plain", lambda: runner.plain_run(video, k, stages=not separate))):
                measured = run()
                if name not in best or measured[0] < best[name][0]:
                    best[name] = measured
        if separate:  # stages from one extra run each; the timings stay those of the untimed runs
            for name, run in (("engine", lambda: runner.engine_run(video, objects, k)),
                              ("sam2_modules", lambda: runner.engine_run(video, objects, k, True)),
                              ("plain", lambda: runner.plain_run(video, k))):
                seconds, _, timer, _ = run()
                best[name] = best[name][:2] + (timer, best[name][3], seconds)
        breakdown = {name: measured[2].breakdown(measured[4] if separate else measured[0], args.frames)
                     for name, measured in best.items()}
        if plain_one_run is None or k == 1:
            plain_one_run = {stage: value / k for stage, value in breakdown["plain"].items()}
        engine_logits = logits_by_config(best["engine"][1])
        diff = max(float(np.abs(engine_logits[pair][obj] - reference[obj]).max())
                   for pair, reference in zip(CONFIGS[:k], best["plain"][1]) for obj in objects)
        engine_ms, plain_ms = 1000 * best["engine"][0] / args.frames, 1000 * best["plain"][0] / args.frames
        sam2_modules_ms = 1000 * best["sam2_modules"][0] / args.frames
        # if the image encoder were the only shared work: plain per run minus (k - 1) encoder passes
        encoder_only = plain_ms / (plain_ms - (k - 1) * encoder_ms)
        bound = sharing_bound(plain_one_run, k)
        rows.append({"k": k, "rows": k * len(objects), "engine_ms_per_frame": round(engine_ms, 1),
                     "plain_ms_per_frame": round(plain_ms, 1), "speedup": round(plain_ms / engine_ms, 2),
                     "engine_sam2_modules_ms_per_frame": round(sam2_modules_ms, 1),
                     "speedup_with_sam2_modules": round(plain_ms / sam2_modules_ms, 2),
                     "speedup_from_sharing_the_encoder_alone": round(encoder_only, 2),
                     "speedup_bound_from_breakdown": round(bound, 2),
                     "stages_ms_per_frame": breakdown,
                     "peak_memory": {name: measured[3].record() for name, measured in best.items()},
                     "max_logit_diff_vs_plain": diff})
        print(f"K={k}: engine {engine_ms:7.1f} ms/frame, plain SAM2 x{k} {plain_ms:7.1f} ms/frame, "
              f"speed-up {plain_ms / engine_ms:4.2f}x (with SAM2's own modules {sam2_modules_ms:6.1f} ms/frame, "
              f"{plain_ms / sam2_modules_ms:4.2f}x; bound from the breakdown {bound:4.2f}x), "
              f"max |logit diff| {diff:.2e}", flush=True)
        for name, stages in breakdown.items():
            memory = best[name][3]
            print(f"    {name:12s} " + ", ".join(f"{stage} {value:.1f}" for stage, value in stages.items())
                  + f" ms/frame; peak {memory.peak_bytes / 2**20:.0f} MiB (+{(memory.peak_bytes - memory.baseline_bytes) / 2**20:.0f})",
                  flush=True)

    memory = None
    if args.long_frames:
        plain = runner.plain
        long_video = write_video(tmp / "long", "long", 1, args.height, args.width, args.long_frames)
        start = clock()
        engine.predict_video(long_video, {1: CONFIGS[:1]})
        engine_seconds = clock() - start
        plain.sigmoid_scale_for_mem_enc, plain.sigmoid_bias_for_mem_enc = CONFIGS[0]
        state = plain.init_state(video_path=str(long_video.image_dir))
        plain.add_new_mask(state, 0, 1, long_video.first_annotation()[1] == 1)
        start = clock()
        for _ in plain.propagate_in_video(state):
            pass
        plain_seconds = clock() - start
        outputs = state["output_dict_per_obj"][0]
        memory = {"frames": args.long_frames,
                  "engine_stored_frames": engine.peak_stored_frames, "engine_stored_bytes": engine.peak_stored_bytes,
                  "plain_stored_frames": len(outputs["cond_frame_outputs"]) + len(outputs["non_cond_frame_outputs"]),
                  "plain_stored_bytes": stored_bytes(outputs["cond_frame_outputs"]) + stored_bytes(outputs["non_cond_frame_outputs"]),
                  "engine_ms_per_frame": round(1000 * engine_seconds / args.long_frames, 1),
                  "plain_ms_per_frame": round(1000 * plain_seconds / args.long_frames, 1)}
        print(f"{args.long_frames} frames, 1 object: engine holds {memory['engine_stored_frames']} frames "
              f"({memory['engine_stored_bytes'] / 2**20:.2f} MiB), plain SAM2 holds {memory['plain_stored_frames']} "
              f"({memory['plain_stored_bytes'] / 2**20:.2f} MiB)", flush=True)

    record = {"model_config": args.model_config, "image_size": engine.image_size,
              "parameters": sum(p.numel() for p in engine.model.parameters()),
              "objects": len(objects), "frames": args.frames, "repeats": args.repeats,
              "image_encoder_ms_per_frame": round(encoder_ms, 1), "stage_pass": "separate" if separate else "inline",
              "clock": args.clock,
              "plain_one_run_stages_ms_per_frame": {stage: round(value, 2) for stage, value in plain_one_run.items()},
              "video_size": [args.height, args.width], "threads": torch.get_num_threads(), "device": args.device,
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
              "rows": rows, "long_video": memory}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
