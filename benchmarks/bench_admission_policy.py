"""What the memory admission policy changes where objects vanish and come back: synthetic videos in which an
object disappears and reappears, the bundled tiny128 pretrained checkpoint, CPU.

Every object is tracked under SAM2's default (20/-10, default knobs) and under the admission policies at the same
scale/bias (``admit_score``: a frame enters memory only if its object-score logit is above the threshold;
``keep_present``: the last frames where the object was confidently present keep memory slots), all in one engine
pass per video. The masks are scored with ``--protocol mosev2``; per object, a policy's gain over the default on
J&F_dot and on the disappearance / reappearance J&F_dot (objects with such segments), as a mean with a paired
bootstrap 95% interval over videos (:func:`masseg_search.mss.holdout.bootstrap_ci`). Writes
``results/bench/admission_policy.json`` and ``.csv`` (per object).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from masseg_search import CONFIGS_DIR
from masseg_search.data.layout import atomic_write_bytes, open_dataset
from masseg_search.data.synth import generate_dataset
from masseg_search.evaluation import evaluate_predictions
from masseg_search.inference.infer import run_inference, write_masks
from masseg_search.mss.holdout import bootstrap_ci
from masseg_search.store.knobs import Knobs, knobs_id

DEFAULT = Knobs(20, -10)
POLICIES = {"admit_score 0": Knobs(20, -10, admit_score=0.0),
            "keep_present 2": Knobs(20, -10, keep_present=2),
            "admit_score 0 + keep_present 2": Knobs(20, -10, admit_score=0.0, keep_present=2)}
METRICS = {"J&F_dot": ("J-Mean", "F_dot-Mean"), "Disappear-J&F_dot": ("Disappear-J", "Disappear-F_dot"),
           "Reappear-J&F_dot": ("Reappear-J", "Reappear-F_dot")}


def reappearing_videos(root: Path) -> list[str]:
    """Videos in which some object disappears and later reappears (the synthetic metadata's measured events)."""
    names = []
    for path in sorted((root / "metadata").glob("*.json")):
        meta = json.loads(path.read_text())
        for obj in meta["objects"]:
            events = [event["event"] for event in obj.get("events", [])]
            if "disappears" in events and "reappears" in events[events.index("disappears"):]:
                names.append(path.stem)
                break
    return names


def per_object_metrics(result: object) -> pd.DataFrame:
    """video, Sequence and the three J&F_dot values of every object (NaN where it has no such segment)."""
    table = result.per_object
    frame = pd.DataFrame({"video": table["video"].astype(str).values, "Sequence": table["Sequence"].astype(str).values})
    for name, (j, f) in METRICS.items():
        frame[name] = ((table[j] + table[f]) / 2).values
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=160, help="synthetic videos generated (those with a "
                        "disappearance and reappearance are kept)")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--work", default="/tmp/bench_admission_policy")
    parser.add_argument("--out", default="results/bench/admission_policy.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    work = Path(args.work)
    data = generate_dataset(work / "data", videos=args.videos, seed=args.seed, height=128, width=128,
                            frames=args.frames, splits={"all": 1.0})
    videos = reappearing_videos(data)
    (work / "reappearing.txt").write_text("\n".join(videos) + "\n")
    split = work / "reappearing.txt"
    configs = [DEFAULT, *POLICIES.values()]
    started = time.perf_counter()
    run_inference("tiny128", CONFIGS_DIR / "checkpoints" / "tiny128_base.pt", data, work / "predictions", configs,
                  split_list=split, device="cpu")
    seconds = time.perf_counter() - started
    dataset = open_dataset(data, split_list=split)
    scored = {}
    for knobs in configs:
        masks = write_masks(work / "predictions", knobs_id(knobs), work / "masks", dataset) / "Annotations"
        result = evaluate_predictions(data, masks, split_list=split, protocol="mosev2", progress=False)
        scored[knobs_id(knobs)] = per_object_metrics(result)
    base = scored[knobs_id(DEFAULT)]
    summary: dict = {"videos": len(videos), "objects": len(base), "frames": args.frames, "model": "tiny128_base",
                     "device": "cpu", "inference_seconds": round(seconds, 1), "default": knobs_id(DEFAULT),
                     "default_scores": {m: float(base[m].mean()) for m in METRICS}, "policies": {}}
    rows = [base.assign(config=knobs_id(DEFAULT))]
    for name, knobs in POLICIES.items():
        other = scored[knobs_id(knobs)]
        merged = base.merge(other, on=["video", "Sequence"], suffixes=("_default", "_policy"), validate="one_to_one")
        rows.append(other.assign(config=knobs_id(knobs)))
        figures = {}
        for metric in METRICS:
            valid = merged[merged[f"{metric}_default"].notna() & merged[f"{metric}_policy"].notna()]
            diff = valid[f"{metric}_policy"] - valid[f"{metric}_default"]
            low, high = bootstrap_ci(diff.reset_index(drop=True), valid["video"].reset_index(drop=True),
                                     args.bootstrap, args.seed)
            figures[metric] = {"policy": float(valid[f"{metric}_policy"].mean()),
                               "default": float(valid[f"{metric}_default"].mean()), "gain": float(diff.mean()),
                               "ci_low": low, "ci_high": high, "objects": len(valid),
                               "videos": int(valid["video"].nunique())}
        summary["policies"][name] = {"config": knobs_id(knobs), **figures}
    out = Path(args.out)
    atomic_write_bytes(out, json.dumps(summary, indent=1).encode())
    atomic_write_bytes(out.with_suffix(".csv"), pd.concat(rows).to_csv(index=False).encode())
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
