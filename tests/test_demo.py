"""`masseg-search demo`: the whole pipeline end to end on synthetic data (--quick: a couple of CPU minutes), and its
own pieces (each stage's paired gain, the submission check of the test zip) on the tiny dataset."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from masseg_search.cli import main
from masseg_search.data.layout import open_dataset, read_mask, write_mask
from masseg_search.errors import MassegError
from masseg_search.pipeline.demo import ROW_WIDTH, STAGE_GAINS, object_jf, paired_gains
from masseg_search.pipeline.plan import ensemble_views, top_trial_checkpoints
from masseg_search.pipeline.stages import check_test_submission as check_demo_submission

QUICK_BUDGET_S = 180  # the bound for --quick on a 2-core CPU
# The test asserts twice that: it catches budgets that grew, not a CPU shared with other jobs (the wall time is
# printed by the demo itself: "demo finished in X min").
QUICK_LIMIT_S = 2 * QUICK_BUDGET_S


def _shifted(dataset_root: Path, out: Path, shifts: dict[str, int]) -> Path:
    """An Annotations-style prediction of the val split: each video's ground truth rolled ``shifts[video]`` px."""
    dataset = open_dataset(dataset_root, split="val")
    for name in dataset.video_names:
        for path in dataset.video(name).annotation_paths():
            write_mask(out / name / path.name, np.roll(read_mask(path), shifts.get(name, 0), axis=1))
    return out


def store_family(predictions: Path, config: str) -> str:
    """The model family of a stored configuration (its first video's meta.json)."""
    from masseg_search.store.predictions import load_video_prediction

    first = sorted(p for p in (predictions / config).iterdir() if p.is_dir())[0]
    return load_video_prediction(first, object_ids=[]).family


def test_paired_gains_measure_a_real_difference_and_not_noise(tmp_path: Path, tiny_dataset: Path) -> None:
    from masseg_search.evaluation import evaluate_predictions

    videos = open_dataset(tiny_dataset, split="val").video_names
    score = {}
    for name, shifts in (("perfect", {}), ("shifted", {v: 3 for v in videos}), ("one video", {videos[0]: 3})):
        prediction = _shifted(tiny_dataset, tmp_path / name.replace(" ", "_"), shifts)
        score[name] = object_jf(evaluate_predictions(tiny_dataset, prediction, split_list=tiny_dataset / "val.txt",
                                                     progress=False))
    # fine-tuning: shifted -> perfect everywhere is a gain on every video, its interval excludes 0
    objects = {"base": score["shifted"], "fine-tuned, SAM2 20/-10": score["perfect"]}
    gains = paired_gains(objects, 500, 0).set_index("stage")
    row = gains.loc["fine-tuning (train-sweep)"]
    expected = float((score["perfect"]["jf"] - score["shifted"]["jf"]).mean())
    assert row["gain"] == pytest.approx(expected) and row["gain"] > 0.05
    assert 0 < row["ci_low"] <= row["gain"] <= row["ci_high"]
    assert row["objects"] == len(score["perfect"]) and row["videos"] == len(videos)
    assert list(gains.index) == ["fine-tuning (train-sweep)"]  # stages whose rows are absent are left out
    # a difference on one video only: with the videos resampled the interval reaches 0
    gains = paired_gains({"base": score["one video"], "fine-tuned, SAM2 20/-10": score["perfect"]}, 500, 0)
    assert gains["ci_low"].iloc[0] == pytest.approx(0.0, abs=1e-12) and gains["gain"].iloc[0] > 0
    # the rows must score the same objects
    with pytest.raises(MassegError, match="scored different objects"):
        paired_gains({"base": score["shifted"], "fine-tuned, SAM2 20/-10": score["perfect"].iloc[1:]}, 100, 0)
    assert {stage for _, _, stage in STAGE_GAINS} >= {"fine-tuning (train-sweep)", "ensemble vs tuned per type"}


def test_the_demo_imports_the_base_as_another_model_and_takes_the_best_choice_rule(tmp_path: Path, tiny_dataset: Path,
                                                                                  tiny_checkpoint: Path) -> None:
    from masseg_search.ensemble import FusionPlan, RuleSpec
    from masseg_search.pipeline.families import BASE_VIEW, best_choice_plan, import_base_view

    import_base_view("tiny64", str(tiny_checkpoint), tiny_dataset, tmp_path, {"val": tiny_dataset / "val.txt"},
                     [(20.0, -10.0), (7.5, -4.0)], device="cpu", progress=False)
    predictions = tmp_path / "predictions" / "val"
    assert sorted(p.name for p in predictions.iterdir() if p.is_dir()) == [f"s20_b-10@{BASE_VIEW}", f"s7.5_b-4@{BASE_VIEW}"]
    assert store_family(predictions, "s20_b-10@untuned") == "imported"
    assert (tmp_path / "masks" / "val_base" / "s20_b-10" / "Annotations").is_dir()
    members = ["s20_b-10", "s20_b-10@untuned"]
    plan = FusionPlan(RuleSpec("mean", ("s20_b-10",)), selection={"candidates": [
        {"name": "per-video-consensus", "jf": 0.5, "rule": {"method": "per-video-consensus", "configs": members}},
        {"name": "per-object-confidence", "jf": 0.6, "rule": {"method": "per-object-confidence", "configs": members}},
        {"name": "mean-top3", "jf": 0.9, "rule": {"method": "mean", "configs": []}}]})
    record, chosen = best_choice_plan(plan)
    assert record["name"] == "per-object-confidence" and chosen.default == RuleSpec("per-object-confidence", tuple(members))
    assert best_choice_plan(FusionPlan(RuleSpec("mean"), selection={"candidates": []})) is None


def test_check_demo_submission_passes_a_valid_zip_and_names_the_problems(tmp_path: Path, tiny_dataset: Path) -> None:
    from masseg_search.ensemble.submission import write_submission_zip
    from masseg_search.ensemble.write import EnsembleResult

    split = tiny_dataset / "val.txt"
    dataset = open_dataset(tiny_dataset, split_list=split)
    folder = _shifted(tiny_dataset, tmp_path / "submission", {})
    zip_path = write_submission_zip(folder, tmp_path / "submission.zip")
    check_demo_submission(EnsembleResult(folder, zip_path, len(dataset.video_names), 0, 0.0), tiny_dataset, split)

    video = dataset.video_names[0]
    sorted((folder / video).glob("*.png"))[-1].unlink()
    broken = write_submission_zip(folder, tmp_path / "broken.zip")
    with pytest.raises(MassegError, match="fails the submission check") as caught:
        check_demo_submission(EnsembleResult(folder, broken, 1, 0, 0.0), tiny_dataset, split)
    assert str(broken) in str(caught.value) and video in str(caught.value)
    refused = EnsembleResult(folder, None, 1, 0, 0.0, problems=["v/00000.png: wrong size. Fix: resize"])
    with pytest.raises(MassegError, match="1 problems: v/00000.png: wrong size"):
        check_demo_submission(refused, tiny_dataset, split)


def test_views_come_from_the_best_trials_and_the_mirror(tmp_path: Path) -> None:
    """The sweep table ranks trials by validation J&F; trials without a checkpoint or a score are skipped."""
    table = tmp_path / "results.csv"
    pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "best_val_jf": [0.61, 0.70, None, 0.65],
                  "checkpoint": ["/ck/a.pt", "/ck/b.pt", "/ck/c.pt", None]}).to_csv(table, index=False)
    assert top_trial_checkpoints(table, 2) == ["/ck/b.pt", "/ck/a.pt"]
    assert top_trial_checkpoints(table, 5) == ["/ck/b.pt", "/ck/a.pt"]
    assert ensemble_views("/ck/b.pt", ["/ck/b.pt"], flip=False) == [(None, "/ck/b.pt", False)]
    assert ensemble_views("/ck/b.pt", ["/ck/b.pt", "/ck/a.pt"], flip=True) == [
        (None, "/ck/b.pt", False), ("flip", "/ck/b.pt", True), ("trial2", "/ck/a.pt", False), ("trial2.flip", "/ck/a.pt", True)]


def test_demo_out_that_is_a_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert main(["demo", "--quick", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "--out is a file, not a folder" in error and str(out) in error and "Traceback" not in error


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    started = time.perf_counter()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    seconds = time.perf_counter() - started
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "demo_table.csv")
    assert list(table["name"]) == ["copy first frame", "untrained", "base", "fine-tuned, SAM2 20/-10",
                                   "fine-tuned, MASSeg 7.5/-4", "fine-tuned, tuned per type",
                                   "fine-tuned, learned policy", "fine-tuned, tuned per type, memory knobs", "ensemble",
                                   "per-video's SAM2 member", "per-video selection"]
    assert table["jf"].between(0, 1).all()
    assert (table["ci_low"] <= table["jf"]).all() and (table["jf"] <= table["ci_high"]).all()
    assert (table["ci_low"] < table["ci_high"]).all()  # a real interval on every row, the ensemble's included
    for row in table.itertuples():  # the printed table is the written one
        assert f"{row.name:<{ROW_WIDTH}} {row.jf:7.4f}   [{row.ci_low:.3f}, {row.ci_high:.3f}]" in printed
    # the bundled base tracks: far above a random model and above repeating the first-frame mask
    rows = table.set_index("name")["jf"]
    assert rows["base"] > rows["untrained"] + 0.3
    assert rows["base"] > rows["copy first frame"]
    # each stage's paired gain, computed from the same per-object scores as the rows
    gains = pd.read_csv(out / "demo_gains.csv").set_index("stage")
    assert list(gains.index) == [stage for _, _, stage in STAGE_GAINS]
    assert gains.loc["pretraining (the bundled base)", "ci_low"] > 0  # measured, not within noise
    for stage, gain in gains.iterrows():
        assert gain["ci_low"] <= gain["gain"] <= gain["ci_high"]
        assert gain["gain"] == pytest.approx(rows[gain["row"]] - rows[gain["against"]], abs=1e-6), stage
    assert "Each stage's gain on the same test objects" in printed
    # every stage left its product; the test zip passed the submission check
    assert (out / "sweeps" / "demo" / "results.csv").is_file()
    assert len(pd.read_csv(out / "sweeps" / "demo" / "results.csv")) >= 4
    assert (out / "mss" / "val" / "best_configs.yaml").is_file()
    assert (out / "mss" / "val" / "holdout_summary.csv").is_file()
    assert list(pd.read_csv(out / "mss" / "val" / "policy_comparison.csv")["policy"]) == ["fixed", "per_type", "learned", "oracle"]
    knob_configs = yaml.safe_load((out / "mss" / "val_knobs" / "best_configs.yaml").read_text())["types"]
    assert knob_configs  # the memory-knobs study chose per type (admit_score set where it beat the policy off)
    assert gains.loc["memory knobs (admit_score) vs tuned per type", "against"] == "fine-tuned, tuned per type"
    assert (out / "plans" / "val.yaml").is_file()
    # the ensemble's views (configs/demo.yaml: the mirror, the second best trial, the untuned base imported as
    # another model) were stored and scored on val, with the label-free choices between them
    selection = yaml.safe_load((out / "plans" / "val.yaml").read_text())["selection"]
    assert selection["views"] == ["flip", "trial2", "trial2.flip", "untuned"]
    candidates = {c["name"]: c for c in selection["candidates"]}
    assert {"select+flip", "select+views", "best-single+flip", "best-single+untuned", "per-video-consensus",
            "per-video-confidence", "per-object-consensus", "pixel-confidence"} <= set(candidates)
    assert sum(candidates["per-video-consensus"]["member_choices"]["videos"].values()) == candidates["per-video-consensus"]["videos"]
    assert any(p.name.endswith("@flip") for p in (out / "predictions" / "val").iterdir())
    assert store_family(out / "predictions" / "val", "s20_b-10@untuned") == "imported"
    assert (out / "submissions" / "per_video.zip").is_file() and (out / "submissions" / "per_video.choices.csv").is_file()
    assert "on test chose videos:" in printed
    assert (out / "submissions" / "demo.zip").is_file() and "submission check: valid" in printed
    assert "optuna-dashboard" in printed and "masseg-search report" in printed
    assert seconds < QUICK_LIMIT_S, f"--quick took {seconds:.0f} s (budget {QUICK_BUDGET_S} s on 2 free cores)"
    # a rerun resumes instead of redoing or refusing
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert pd.read_csv(out / "demo_table.csv")["jf"].tolist() == pytest.approx(table["jf"].tolist())


def test_an_interrupted_sweep_stops_the_demo_before_later_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from masseg_search.finetune import sweep as sweep_module
    from masseg_search.pipeline import stages as stages_module
    from masseg_search.pipeline.demo import run_demo

    def interrupted_sweep(config, name, resume=False, **kwargs):
        experiment = Path(config.train_sweep.storage) / name
        return sweep_module.SweepResult(experiment, experiment / "results.csv", experiment / "results.parquet",
                                        experiment / "checkpoint.pt", 0.5, 4, 2)

    monkeypatch.setattr(stages_module, "run_sweep", interrupted_sweep)
    with pytest.raises(MassegError, match="2 unfinished trials") as caught:
        run_demo(tmp_path / "demo", quick=True, progress=False)
    assert "resumes the sweep" in caught.value.fix
    assert not (tmp_path / "demo" / "mss").exists() and not (tmp_path / "demo" / "predictions").exists()
