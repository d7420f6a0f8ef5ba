"""Benchmark tune-mss: trials per hour of the batched search against a naive loop, or pruned against unpruned.

    .venv/bin/python benchmarks/bench_tune_mss.py [--model tiny128] [--videos 16] [--frames 12] [--batch 8]
                                                  [--trials 32] [--naive-trials 6] [--threads 0] [--out DIR]
    .venv/bin/python benchmarks/bench_tune_mss.py --compare-pruners none,sha,wilcoxon [--budget 50] [--folds 3]
                                                  [--checkpoint configs/checkpoints/tiny128_base.pt] [--videos 96]

``--compare-pruners``: for each pruner (optionally ``name:K``, its own trials per pass), the held-out protocol of
tune-mss (per fold: search on the other folds, then ``score_held_out`` scores the chosen configurations on the
held-out videos) with the same seeds, the same folds and the same wall budget per fold's search (``--budget``
seconds: no pass starts after it); within a fold the modes take turns, the order rotating per fold. Prints finished
(complete + pruned) trials per hour of search (wall clock, and per CPU-hour of this process: the machine may be
shared), the engine's row-frames per trial (the work a trial costs, whatever the load), and the held-out J&F of
the chosen configurations with its 95% bootstrap interval over videos; then each mode's ratios over the first mode,
whether its held-out J&F lies inside the first's interval (target: >= 2.5x trials per hour, inside) and the paired
held-out difference on the same objects. The image features of every video are cached before timing.

Makes (once) a synthetic dataset and a tiny random checkpoint whose object-score head is biased to "present" (so
masks are non-empty and the search has real work to score), types the validation objects with the demo config,
then times on the same validation videos and the same scene-type studies:

* batched: ``run_batched_search`` with the engine, ``--batch`` trials per study per pass, ONE engine pass over the
  videos serving every study, image features cached across passes (what ``tune-mss`` runs);
* naive: per trial and video one plain ``SAM2VideoPredictor`` run (``build_plain_predictor`` +
  ``reference_predict_video``, as sam2's ``tools/vos_inference.py``) of the videos holding that study's objects,
  then evaluate; ``--naive-trials`` trials per study through Optuna's ``study.optimize``;

and prints trials per hour of each and the ratio (target >= 4x at K = 8). Both use ``--threads`` torch threads;
the default (0) keeps torch's default, all cores, which is what ``tune-mss`` itself runs with.
A trial is one (study, configuration) scored; both paths use TPE with the same seeds and in-memory storages.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TQDM_DISABLE", "1")  # sam2's per-video bars in the naive loop (read when tqdm is imported)

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from masseg_search.config import load_config  # noqa: E402
from masseg_search.data.layout import atomic_write_bytes, open_dataset  # noqa: E402
from masseg_search.mss.passes import EnginePassWorker, LocalPassScorer, load_ground_truth  # noqa: E402
from masseg_search.mss.search import run_batched_search  # noqa: E402
from masseg_search.mss.studies import StudyStorage, make_sampler, search_distributions, type_seed  # noqa: E402


def prepare(out: Path, model: str, videos: int, frames: int, size: int) -> tuple[Path, Path]:
    """Synthetic data and a 'visible' tiny checkpoint, made once under ``out``."""
    import torch

    from masseg_search.data.synth import generate_dataset
    from masseg_search.model.build import init_checkpoint

    data = out / f"data_{videos}v_{frames}f_{size}px"
    if not (data / "val.txt").is_file():
        generate_dataset(data, videos=videos, seed=0, height=size, width=size, frames=frames)
    checkpoint = out / f"{model}_visible.pt"
    if not checkpoint.is_file():
        plain = out / f"{model}.pt"
        init_checkpoint(model, plain, seed=0)
        state = torch.load(plain, weights_only=True)
        state["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 10.0
        torch.save(state, checkpoint)
    return data, checkpoint


def in_memory_studies(types: list[str], mss, prefix: str, storage: optuna.storages.BaseStorage) -> dict[str, optuna.Study]:
    """One study per type in ``storage``, seeded as tune-mss seeds them, with the two baselines enqueued."""
    studies = {}
    for scene_type in types:
        study = optuna.create_study(storage=storage, direction="maximize", study_name=f"{prefix}/{scene_type}",
                                    sampler=make_sampler("tpe", type_seed(0, scene_type), mss))
        study.enqueue_trial({"scale": 20.0, "bias": -10.0})
        study.enqueue_trial({"scale": 7.5, "bias": -4.0})
        studies[scene_type] = study
    return studies


def run_batched(worker: EnginePassWorker, objects, mss, trials: int, batch: int) -> tuple[float, int]:
    """Seconds and trials told for the batched search."""
    opened = StudyStorage(optuna.storages.InMemoryStorage(), "memory", heartbeat_interval=60, grace_period=180)
    studies = in_memory_studies(sorted(objects.scene_type.unique()), mss, f"batched{batch}", opened.storage)
    start = time.perf_counter()
    run_batched_search(studies, opened, objects, LocalPassScorer(worker, progress=False), trials, batch,
                       space_mss=mss, progress=False)
    seconds = time.perf_counter() - start
    told = sum(len(s.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) for s in studies.values())
    return seconds, told


def run_naive(predictor, dataset, objects, mss, trials: int) -> tuple[float, int]:
    """Seconds and trials for the naive loop: a plain predictor run per trial and video, then evaluate."""
    from masseg_search.evaluation import score_video
    from masseg_search.model.engine import reference_predict_video

    distributions = search_distributions(mss)
    ground_truth = {}
    start = time.perf_counter()
    told = 0
    for scene_type in sorted(objects.scene_type.unique()):
        rows = objects[objects.scene_type == scene_type]
        study = in_memory_studies([scene_type], mss, "naive", optuna.storages.InMemoryStorage())[scene_type]

        def objective(trial: optuna.Trial) -> float:
            scale = trial.suggest_float("scale", distributions["scale"].low, distributions["scale"].high, log=distributions["scale"].log)
            bias = trial.suggest_float("bias", distributions["bias"].low, distributions["bias"].high)
            values = []
            for video_name, group in rows.groupby("video"):
                video = dataset.video(video_name)
                if video_name not in ground_truth:
                    ground_truth[video_name] = load_ground_truth(video)
                _, masks = reference_predict_video(predictor, video, scale, bias)
                gt = ground_truth[video_name]
                ids = sorted(int(i) for i in np.unique(gt[0]) if 0 < i < 255)
                jf = score_video(gt, masks, ids).object_j_and_f_means()
                values.extend(jf[int(obj)] for obj in group.object_id)
            return float(np.mean(values))

        study.optimize(objective, n_trials=trials)
        told += trials
    return time.perf_counter() - start, told


def parse_modes(text: str, batch: int) -> list[tuple[str, str, int]]:
    """``none,sha,sha:16`` -> [(label, pruner, K)]: a pruner, optionally with its own trials per pass."""
    modes = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, k = item.partition(":")
        modes.append((f"{name}@K{int(k)}" if k else name, name, int(k) if k else batch))
    return modes


def compare_pruners(worker: EnginePassWorker, objects, mss, modes: list[tuple[str, str, int]], folds: int,
                    budget: float, seed: int) -> dict:
    """The held-out protocol under each mode (label, pruner, K), same seeds and folds, ``budget`` seconds of search
    per fold; the modes take turns within each fold (the order rotating), so machine load hits them alike."""
    from optuna.trial import TrialState

    from masseg_search.mss.holdout import bootstrap_ci, chosen_configs, held_out_table, score_held_out, summarize, video_folds
    from masseg_search.mss.studies import open_type_studies
    from masseg_search.store.best_configs import SAM2_DEFAULT

    scorer = LocalPassScorer(worker, progress=False)
    videos = sorted(objects.video.unique())  # fill the feature cache first: no mode pays the image encoder
    scorer({video: {int(o): [SAM2_DEFAULT] for o in objects[objects.video == video].object_id} for video in videos})
    fold_videos = video_folds(objects.video.tolist(), folds, seed)
    stats = {label: {"complete": 0, "pruned": 0, "seconds": 0.0, "cpu_seconds": 0.0, "row_frames": 0, "rows": []}
             for label, _, _ in modes}
    for fold, held_videos in enumerate(fold_videos):
        tune_objects = objects[~objects.video.isin(held_videos)]
        held_objects = objects[objects.video.isin(held_videos)]
        for label, pruner, batch in modes[fold % len(modes):] + modes[:fold % len(modes)]:
            opened = StudyStorage(optuna.storages.InMemoryStorage(), "memory", heartbeat_interval=60, grace_period=180)
            studies = open_type_studies(opened, f"{label}/cv{fold}", sorted(tune_objects.scene_type.unique()), mss,
                                        seed=seed)
            rows_before, start, cpu_start = worker.engine.row_frames, time.perf_counter(), time.process_time()
            run_batched_search(studies, opened, tune_objects, scorer, 10**6, batch, space_mss=mss, progress=False,
                               pruner=pruner, seed=seed, budget_seconds=budget)
            stat = stats[label]
            stat["seconds"] += time.perf_counter() - start
            stat["cpu_seconds"] += time.process_time() - cpu_start
            stat["row_frames"] += worker.engine.row_frames - rows_before
            for type_study in studies.values():
                states = [trial.state for trial in type_study.get_trials(deepcopy=False)]
                stat["complete"] += states.count(TrialState.COMPLETE)
                stat["pruned"] += states.count(TrialState.PRUNED)
            stat["rows"] += score_held_out(held_objects, chosen_configs(studies), scorer, fold)
            print(f"fold {fold} {label}: {stat['complete'] + stat['pruned']} trials so far", flush=True)
    results = {}
    base = held_out_table(stats[modes[0][0]]["rows"]) if modes else None
    for label, pruner, batch in modes:
        stat = stats[label]
        per_object = held_out_table(stat["rows"])
        summary = summarize(per_object, mss.bootstrap, seed)
        chosen = summary[(summary.scene_type == "all") & (summary.method == "chosen")].iloc[0]
        finished = stat["complete"] + stat["pruned"]
        row = {"pruner": pruner, "batch": batch, "trials": finished, "complete": stat["complete"], "pruned": stat["pruned"],
               "search_seconds": round(stat["seconds"], 1), "trials_per_hour": round(finished / stat["seconds"] * 3600),
               "search_cpu_seconds": round(stat["cpu_seconds"], 1),
               "trials_per_cpu_hour": round(finished / stat["cpu_seconds"] * 3600),
               "row_frames_per_trial": round(stat["row_frames"] / max(finished, 1), 1),
               "heldout_jf": round(float(chosen.jf), 4), "heldout_ci": [round(float(chosen.ci_low), 4), round(float(chosen.ci_high), 4)],
               "chosen": per_object.groupby(["fold", "scene_type"])[["chosen_scale", "chosen_bias"]].first()
                         .round(3).reset_index().values.tolist()}
        if label != modes[0][0]:  # paired with the first mode on the same held-out objects
            first = stats[modes[0][0]]
            first_trials = first["complete"] + first["pruned"]
            row["trials_per_hour_ratio"] = round(row["trials_per_hour"] / (first_trials / first["seconds"] * 3600), 2)
            row["trials_per_cpu_hour_ratio"] = round(row["trials_per_cpu_hour"] / (first_trials / first["cpu_seconds"] * 3600), 2)
            row["row_frames_per_trial_ratio"] = round(
                (first["row_frames"] / max(first_trials, 1)) / max(row["row_frames_per_trial"], 1e-9), 2)
            base_ci = results[modes[0][0]]["heldout_ci"]
            row["heldout_inside_first_ci"] = bool(base_ci[0] <= row["heldout_jf"] <= base_ci[1])
            difference = per_object.jf_chosen - base.jf_chosen
            low, high = bootstrap_ci(difference, per_object.video, mss.bootstrap, seed)
            row["heldout_paired_difference"] = [round(float(difference.mean()), 4), round(low, 4), round(high, 4)]
        results[label] = row
        print(f"{label:>12}: {finished} trials ({stat['pruned']} pruned) in {stat['seconds']:.0f} s of search = "
              f"{row['trials_per_hour']} trials/h, {row['row_frames_per_trial']} row-frames/trial; held-out J&F "
              f"{row['heldout_jf']:.4f} [{row['heldout_ci'][0]:.4f}, {row['heldout_ci'][1]:.4f}]"
              + (f"; {row['trials_per_hour_ratio']:.2f}x trials/h ({row['trials_per_cpu_hour_ratio']:.2f}x per CPU-hour, "
                 f"{row['row_frames_per_trial_ratio']:.2f}x less work per trial) of {modes[0][0]}, held-out "
                 f"{'inside' if row['heldout_inside_first_ci'] else 'OUTSIDE'} its interval, paired difference "
                 f"{row['heldout_paired_difference'][0]:+.4f} [{row['heldout_paired_difference'][1]:+.4f}, "
                 f"{row['heldout_paired_difference'][2]:+.4f}]" if "trials_per_hour_ratio" in row else ""), flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny128", help="model config under configs/models (default tiny128)")
    parser.add_argument("--videos", type=int, default=16, help="synthetic videos (a quarter are validation)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=128, help="frame height and width")
    parser.add_argument("--batch", type=int, default=8, help="K, trials per study per pass")
    parser.add_argument("--trials", type=int, default=32, help="batched trials per study")
    parser.add_argument("--naive-trials", type=int, default=6, help="naive trials per study")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both paths (0 = torch's default, all cores, as tune-mss runs)")
    parser.add_argument("--max-rows", type=int, default=None, help="engine rows per step (default all)")
    parser.add_argument("--out", default="results/bench/tune_mss")
    parser.add_argument("--compare-pruners", help="comma list of pruners, each optionally with its own K "
                        "(none,sha,sha:16,wilcoxon): the pruned-vs-unpruned mode instead of batched-vs-naive; the first "
                        "is the reference of the ratios")
    parser.add_argument("--budget", type=float, default=50.0, help="seconds of search per fold (--compare-pruners)")
    parser.add_argument("--folds", type=int, default=3, help="held-out folds (--compare-pruners)")
    parser.add_argument("--seed", type=int, default=0, help="sampler, fold and pass-order seed (--compare-pruners)")
    parser.add_argument("--checkpoint", help="SAM2 checkpoint (default: a tiny random one biased to 'present'; the "
                        "pruner comparison is more telling with the bundled configs/checkpoints/tiny128_base.pt)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, checkpoint = prepare(out, args.model, args.videos, args.frames, args.size)
    checkpoint = Path(args.checkpoint) if args.checkpoint else checkpoint
    config = load_config(None)
    mss = config.mss
    dataset = open_dataset(data, split="val")
    from masseg_search.data.scene_types import scene_type_table
    from masseg_search.model.build import build_plain_predictor

    objects = scene_type_table(dataset, config.scene_types)[["video", "object_id", "scene_type"]]
    print(f"validation: {len(dataset)} videos, {len(objects)} objects, types {objects.scene_type.value_counts().to_dict()}")

    worker = EnginePassWorker(args.model, str(checkpoint), str(data), "cpu", mss.feature_cache_mb, threads,
                              max_rows=args.max_rows)
    if args.compare_pruners:
        wall = time.perf_counter()
        results = compare_pruners(worker, objects, mss, parse_modes(args.compare_pruners, args.batch), args.folds,
                                  args.budget, args.seed)
        record = {"model": args.model, "checkpoint": str(checkpoint), "videos": len(dataset), "objects": len(objects),
                  "frames": args.frames, "size": args.size, "threads": threads, "batch": args.batch, "folds": args.folds,
                  "budget_seconds_per_fold": args.budget, "seed": args.seed, "cpu_count": os.cpu_count(),
                  "load_average": [round(x, 1) for x in os.getloadavg()], "wall_seconds": round(time.perf_counter() - wall),
                  "pruners": results}
        name = f"bench_pruners_{args.model}_{args.videos}v_{args.frames}f.json"
        atomic_write_bytes(out / name, json.dumps(record, indent=1).encode())
        return 0
    predictor = build_plain_predictor(args.model, str(checkpoint), device="cpu")
    batched_seconds, batched_trials = run_batched(worker, objects, mss, args.trials, args.batch)
    naive_seconds, naive_trials = run_naive(predictor, dataset, objects, mss, args.naive_trials)
    batched_rate = batched_trials / batched_seconds * 3600
    naive_rate = naive_trials / naive_seconds * 3600
    result = {"model": args.model, "max_rows": args.max_rows, "videos": len(dataset), "objects": len(objects), "frames": args.frames,
              "size": args.size, "threads": threads, "batch": args.batch, "cpu_count": os.cpu_count(),
              "batched": {"trials": batched_trials, "seconds": round(batched_seconds, 2), "trials_per_hour": round(batched_rate)},
              "naive": {"trials": naive_trials, "seconds": round(naive_seconds, 2), "trials_per_hour": round(naive_rate)},
              "speedup": round(batched_rate / naive_rate, 2), "feature_cache": worker.cache_stats()}
    atomic_write_bytes(out / f"bench_{args.model}_K{args.batch}.json", json.dumps(result, indent=1).encode())
    print(f"batched K={args.batch}: {batched_trials} trials in {batched_seconds:.1f} s = {batched_rate:.0f} trials/h")
    print(f"naive:            {naive_trials} trials in {naive_seconds:.1f} s = {naive_rate:.0f} trials/h")
    print(f"speed-up: {batched_rate / naive_rate:.2f}x (target >= 4x at K=8)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
