"""The HTML report: every section from a fixture results folder, missing pieces said plainly, malformed ones errors."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from masseg_search.errors import MassegError
from masseg_search.report import build_report, find_evaluations, read_ensembles, read_mss_study, read_sweep


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.sources.append(values["src"])
        for key in ("src", "href"):
            if values.get(key, "") and re.match(r"(https?:)?//", values[key]):
                self.external.append(values[key])


def test_readers_understand_the_fixture(results_dir: Path) -> None:
    sweep = read_sweep(results_dir / "sweeps" / "demo")
    assert len(sweep.table) == 4
    assert sweep.parameters == ["loss.dice", "augment.hflip", "lr"]
    assert sorted(sweep.progress["trial_id"].unique()) == ["a0001", "b0002", "c0003", "d0004"]  # csv + json lines
    assert len(sweep.progress) == 3 + 3 + 1 + 1
    study = read_mss_study(results_dir / "mss" / "val")
    assert set(study.trials["scene_type"]) == {"regular", "small"} and len(study.trials) == 16
    assert set(study.best.types) == {"regular", "small"}
    assert sorted(study.tables) == ["holdout_objects.csv", "holdout_summary.csv", "per_type.csv", "scene_types.csv"]
    assert [p.name for p in study.plots] == ["gains.png", "history.png"]  # the report draws its own landscapes
    plan, table = read_ensembles(results_dir)  # plans/ first; the hand-written plan without a selection is skipped
    assert plan.name == "plans/val.yaml" and plan.held_out is True
    assert plan.candidates.loc[plan.candidates["chosen"], "candidate"].tolist() == ["select"]
    assert sorted(plan.candidates.loc[plan.candidates["kind"] == "member", "candidate"]) == [
        "single s12_b-6", "single s20_b-10", "single s7.5_b-4"]
    assert table.candidates.loc[table.candidates["chosen"], "candidate"].tolist() == ["select-per-type"]
    evaluations = {e.name: e for e in find_evaluations(results_dir)}
    assert set(evaluations) == {"evaluations/perfect", "evaluations/shifted", "evaluations/unrecorded"}
    assert evaluations["evaluations/perfect"].jf == 1.0
    worst = evaluations["evaluations/shifted"].video_scores()
    assert list(worst.values) == sorted(worst.values)


def test_report_has_every_section_with_local_images(results_dir: Path, tmp_path: Path) -> None:
    page = build_report(results_dir, tmp_path / "out" / "report.html")
    text = page.read_text()
    for heading in ("Demo: test J&amp;F per setting", "Fine-tuning sweeps", "Mask scaling per scene type", "Ensemble",
                    "Evaluations and worst videos"):
        assert heading in text
    # the demo's table with every row's interval, and each stage's paired gain with its verdict
    demo_table = pd.read_csv(results_dir / "demo_table.csv")
    for row in demo_table.itertuples():
        assert f"{row.jf:.4f} [{row.ci_low:.4f}, {row.ci_high:.4f}]" in text
    gains = pd.read_csv(results_dir / "demo_gains.csv").set_index("stage")
    assert gains.loc["tune-mss per type vs 20/-10", "ci_low"] > 0  # perfect vs shifted by 3 px: a measured gain
    assert "tune-mss per type vs 20/-10" in text and "measured" in text
    assert (page.parent / "report_files" / "demo_table.png").is_file()
    assert (page.parent / "report_files" / "demo_gains.png").is_file()
    assert "2 stopped early by ASHA: c0003, d0004" in text
    assert "<td>run_trial_a0001_0_lr=0.0003/checkpoint_000003" in text  # paths shown relative to the sweep
    assert "gain over its best member (single s12_b-6): +0.0150" in text
    assert "gain over the best other candidate (mean-top3): +0.0100" in text
    assert "Scored on held-out folds" in text
    assert "held-out gain over 7.5/-4" in text 
    assert "Not shown (per-object detail): holdout_objects.csv (12 rows), scene_types.csv (12 rows)" in text
    assert "<h4>holdout_summary.csv</h4>" in text
    parser = _Images()
    parser.feed(text)
    assert not parser.external, "the page must open offline"
    assert len(parser.sources) >= 7
    for source in parser.sources:
        assert not Path(source).is_absolute() and (page.parent / source).is_file(), source
    overlays = [s for s in parser.sources if "/overlays/" in s]
    assert len(overlays) == 4  # the two val videos of each evaluation that records its inputs
    assert text.count("No overlays") == 1  # the one that does not says so
    # The worst videos of the shifted prediction are drawn beside the perfect one (same ground truth).
    shifted = next(s for s in overlays if "evaluations_shifted" in s)
    assert Image.open(page.parent / shifted).size[0] == 3 * 256 + 2 * 4  # ground truth | shifted | perfect
    assert "ground truth | evaluations/shifted | evaluations/perfect" in text


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    empty = tmp_path / "results"
    empty.mkdir()
    text = build_report(empty).read_text()
    assert "No sweep found" in text and "masseg-search train-sweep" in text
    assert "No mask-scaling study found" in text and "No fusion choice found" in text and "No evaluation found" in text
    assert 'id="demo"' not in text  # not a demo's folder: no demo section


def test_malformed_inputs_are_errors_naming_the_file(results_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "results"
    shutil.copytree(results_dir, broken)
    progress = next((broken / "sweeps" / "demo").rglob("progress.csv"))
    progress.write_text("trial_id,training_iteration,loss\nx,1,0.5\n")
    with pytest.raises(MassegError, match="no validation J&F") as caught:
        build_report(broken)
    assert str(progress) in str(caught.value)
    shutil.rmtree(broken / "sweeps")
    (broken / "mss" / "val" / "trials.csv").write_text('scene_type,scale,bias,jf\nregular,"unclosed,1,2\n')
    with pytest.raises(MassegError, match="cannot read the table"):
        build_report(broken)
    shutil.rmtree(broken / "mss")
    demo_table = (broken / "demo_table.csv").read_text()
    (broken / "demo_table.csv").write_text("name,jf\nbase,0.5\n")
    with pytest.raises(MassegError, match="no interval low column") as caught:
        build_report(broken)
    assert "demo_table.csv" in str(caught.value)
    (broken / "demo_table.csv").write_text(demo_table.replace(",0.", ",zero.", 1))
    with pytest.raises(MassegError, match="non-numeric values"):
        build_report(broken)
    (broken / "demo_table.csv").unlink()
    (broken / "evaluations" / "shifted" / "per_object.csv").write_text("Sequence,J-Mean\nv_1,0.5\n")
    with pytest.raises(MassegError, match="no F column") as caught:
        build_report(broken)
    assert "per_object.csv" in str(caught.value)


def test_cli_report(results_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "page.html"
    done = subprocess.run([sys.executable, "-m", "masseg_search", "report", str(results_dir), "--out", str(out),
                           "--no-overlays"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and (tmp_path / "page_files").is_dir()
    assert "/overlays/" not in out.read_text()
    missing = subprocess.run([sys.executable, "-m", "masseg_search", "report", str(tmp_path / "nowhere")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "results folder not found" in missing.stderr


def test_partial_inputs_say_what_is_missing(tmp_path: Path) -> None:
    results = tmp_path / "results"
    (results / "sweeps" / "running").mkdir(parents=True)  # a sweep that has written nothing yet
    (results / "mss" / "val").mkdir(parents=True)  # a study without tables yet
    text = build_report(results).read_text()
    assert "No results table" in text and "No per-epoch trial progress" in text
    assert "No trials table" in text and "No per_type.csv or best_configs.yaml" in text


def test_overlays_find_the_frames_above_an_annotations_folder(tiny_dataset: Path) -> None:
    from masseg_search.report.page import _dataset_root

    assert _dataset_root(tiny_dataset / "Annotations") == tiny_dataset
    assert _dataset_root(tiny_dataset / "Annotations" / "480p") == tiny_dataset
    assert _dataset_root(tiny_dataset) == tiny_dataset


def test_learned_policy_shows_its_rules_comparison_and_gains(results_dir: Path, tmp_path: Path) -> None:
    """tune-mss --policy learned: the rules of policy.yaml, every policy's held-out J&F and the paired gains."""
    import numpy as np

    from masseg_search.mss.outputs import plot_policy
    from masseg_search.mss.policy import compare_policies
    from masseg_search.store.mss_results import MssResults
    from masseg_search.store.policy import policy_from_dict, save_policy

    results = shutil.copytree(results_dir, tmp_path / "results")
    study = MssResults(results / "mss" / "val")
    rng = np.random.default_rng(0)
    base = rng.uniform(0.4, 0.7, 12)
    per_object = pd.DataFrame({"video": [f"v{i // 2}" for i in range(12)], "jf_fixed": base,
                               "jf_per_type": base + 0.01, "jf_learned": base + 0.03, "jf_oracle": base + 0.08})
    comparison = compare_policies(per_object, 200, 0)
    comparison.to_csv(study.policy_comparison, index=False)
    policy = policy_from_dict({"features": ["area_fraction"], "default": {"scale": 20, "bias": -10}, "depth": 1, "rules": [
        {"leaf": "leaf_1", "when": ["area_fraction <= 0.0042"], "scale": 7.5, "bias": -4, "objects": 5, "jf": 0.6},
        {"leaf": "leaf_2", "when": ["area_fraction > 0.0042"], "scale": 20, "bias": -10, "objects": 7, "jf": 0.7}]})
    save_policy(study.policy, policy)
    plot_policy(policy, comparison, study.policy_plot)
    text = build_report(results, tmp_path / "out" / "report.html").read_text()
    assert "<h4>Learned policy</h4>" in text
    assert "area_fraction &lt;= 0.0042 -&gt; s7.5_b-4" in text and "(7 objects)" in text
    learned = comparison.set_index("policy").loc["learned"]
    assert f"{learned.heldout_jf:.4f} [{learned.ci_low:.4f}, {learned.ci_high:.4f}]" in text
    assert f"{learned.gain_over_per_type:.4f} [{learned.gain_over_per_type_ci_low:.4f}" in text
    assert learned.gain_over_per_type == pytest.approx(0.02) and learned.gain_over_fixed == pytest.approx(0.03)
    for name in ("mss_val_policy_jf.png", "mss_val_policy_gains.png", "mss_val/policy.png"):
        assert (tmp_path / "out" / "report_files" / name).is_file(), name
    assert "<h4>policy_comparison.csv</h4>" not in text  # shown once, in the policy part
    comparison.drop(columns=["gain_over_per_type"]).to_csv(study.policy_comparison, index=False)
    with pytest.raises(MassegError, match="gain_over_per_type") as error:
        build_report(results, tmp_path / "out2" / "report.html")
    assert "policy_comparison.csv" in str(error.value)
