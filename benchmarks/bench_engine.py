"""Benchmark: the multi-configuration engine against K sequential plain SAM2VideoPredictor runs, and flat memory.

One synthetic video with several objects; for K = 1, 4, 8 configurations the engine runs every object under all K
in one pass, plain SAM2 (built as tools/vos_inference.py builds it) runs K times. The engine is also timed with
SAM2's own modules (``fast_modules=False``), which splits its gain into batching/sharing and the fast modules. Both include frame loading and
read the same JPEGs. Timings are the best of ``--repeats`` interleaved runs (the machine is shared). A long video
(``--long-frames``) shows the engine's memory stays flat while plain SAM2 keeps every frame. Each engine run is
also compared with plain SAM2 (largest low-res logit difference; with random weights SAM2 scores every tracked
object absent, so this is only a smoke check: tests/model/test_parity.py checks parity on weights that track).

    .venv/bin/python benchmarks/bench_engine.py --model-config tiny256 --objects 3 --frames 24 --threads 2
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from masseg_search.data.layout import Video, open_dataset, write_mask  # noqa: E402

CONFIGS = [(20.0, -10.0), (7.5, -4.0), (40.0, -20.0), (2.0, 0.0), (12.0, -6.0), (5.0, -2.0), (30.0, -15.0), (1.0, 0.0)]


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


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def stored_bytes(outputs: dict) -> int:
    """Bytes of memory features and object pointers in a plain-SAM2 per-object output dict."""
    return sum(t.numel() * t.element_size() for out in outputs.values()
               for t in (out.get("maskmem_features"), out.get("obj_ptr")) if t is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-config", default="tiny256")
    parser.add_argument("--checkpoint", help="default: a random checkpoint written to a temp folder")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--ks", default="1,4,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--long-frames", type=int, default=300, help="0 = skip the memory check")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="results/bench/engine.json")
    args = parser.parse_args()

    import torch

    from masseg_search.model.build import build_model, build_plain_predictor, init_checkpoint
    from masseg_search.model.engine import MultiConfigEngine, reference_predict_video
    from masseg_search.store.predictions import config_id

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    checkpoint = args.checkpoint or init_checkpoint(args.model_config, tmp / "random.pt", seed=0)
    video = write_video(tmp / "data", "bench", args.objects, args.height, args.width, args.frames)
    engine = MultiConfigEngine(build_model(args.model_config, checkpoint, device=args.device), args.device,
                               logits_dtype=np.float32)
    sam2_modules_engine = MultiConfigEngine(build_model(args.model_config, checkpoint, device=args.device), args.device,
                                            logits_dtype=np.float32, fast_modules=False)
    plain = build_plain_predictor(args.model_config, checkpoint, device=args.device)
    objects = sorted(int(i) for i in np.unique(video.first_annotation()[1]) if i)

    def run_engine(k: int, which=engine) -> tuple[float, dict]:
        start = time.perf_counter()
        results = which.predict_video(video, {obj: CONFIGS[:k] for obj in objects})
        return time.perf_counter() - start, results

    def run_plain(k: int) -> tuple[float, list]:
        start = time.perf_counter()
        outputs = [reference_predict_video(plain, video, scale, bias)[0] for scale, bias in CONFIGS[:k]]
        return time.perf_counter() - start, outputs

    from functools import partialmethod

    import tqdm as tqdm_module  # plain SAM2 prints a bar per run; keep the output readable

    tqdm_module.tqdm.__init__ = partialmethod(tqdm_module.tqdm.__init__, disable=True)
    run_engine(1), run_engine(1, sam2_modules_engine), run_plain(1)  # warm-up
    with torch.inference_mode():  # the image encoder alone: what sharing it across configurations can save
        image = torch.zeros(1, 3, engine.image_size, engine.image_size, device=args.device)
        encoder_ms = 1000 * min(_timed(lambda: engine.model.forward_image(image)) for _ in range(5))
    print(f"image encoder {encoder_ms:.1f} ms/frame", flush=True)
    rows = []
    for k in [int(v) for v in args.ks.split(",")]:
        engine_times, plain_times, sam2_module_times = [], [], []
        for _ in range(args.repeats):
            seconds, results = run_engine(k)
            engine_times.append(seconds)
            sam2_module_times.append(run_engine(k, sam2_modules_engine)[0])
            seconds, references = run_plain(k)
            plain_times.append(seconds)
        diff = max(float(np.abs(results[config_id(*pair)].logits[obj] - reference[obj]).max())
                   for pair, reference in zip(CONFIGS[:k], references) for obj in objects)
        engine_ms, plain_ms = 1000 * min(engine_times) / args.frames, 1000 * min(plain_times) / args.frames
        sam2_modules_ms = 1000 * min(sam2_module_times) / args.frames
        # if the image encoder were the only shared work: plain per run minus (k - 1) encoder passes
        encoder_only = plain_ms / (plain_ms - (k - 1) * encoder_ms)
        rows.append({"k": k, "rows": k * len(objects), "engine_ms_per_frame": round(engine_ms, 1),
                     "plain_ms_per_frame": round(plain_ms, 1), "speedup": round(plain_ms / engine_ms, 2),
                     "engine_sam2_modules_ms_per_frame": round(sam2_modules_ms, 1),
                     "speedup_with_sam2_modules": round(plain_ms / sam2_modules_ms, 2),
                     "speedup_from_sharing_the_encoder_alone": round(encoder_only, 2), "max_logit_diff_vs_plain": diff})
        print(f"K={k}: engine {engine_ms:7.1f} ms/frame, plain SAM2 x{k} {plain_ms:7.1f} ms/frame, "
              f"speed-up {plain_ms / engine_ms:4.2f}x (with SAM2's own modules {sam2_modules_ms:6.1f} ms/frame, "
              f"{plain_ms / sam2_modules_ms:4.2f}x; sharing the encoder alone: {encoder_only:4.2f}x), "
              f"max |logit diff| {diff:.2e}", flush=True)

    memory = None
    if args.long_frames:
        long_video = write_video(tmp / "long", "long", 1, args.height, args.width, args.long_frames)
        start = time.perf_counter()
        engine.predict_video(long_video, {1: CONFIGS[:1]})
        engine_seconds = time.perf_counter() - start
        plain.sigmoid_scale_for_mem_enc, plain.sigmoid_bias_for_mem_enc = CONFIGS[0]
        state = plain.init_state(video_path=str(long_video.image_dir))
        plain.add_new_mask(state, 0, 1, long_video.first_annotation()[1] == 1)
        start = time.perf_counter()
        for _ in plain.propagate_in_video(state):
            pass
        plain_seconds = time.perf_counter() - start
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

    record = {"model_config": args.model_config, "objects": len(objects), "frames": args.frames,
              "image_encoder_ms_per_frame": round(encoder_ms, 1),
              "video_size": [args.height, args.width], "threads": torch.get_num_threads(), "device": args.device,
              "machine": platform.processor() or platform.machine(), "rows": rows, "long_video": memory}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
