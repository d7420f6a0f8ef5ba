"""`--select-on`: on stored predictions built so that one candidate is known to be best, that candidate is chosen."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from ensemble_store import clean_logits, write_store

from masseg_search.cli import main
from masseg_search.data import layout
from masseg_search.ensemble import load_plan
from masseg_search.ensemble.select import select_fusion


def _shifted(dy: int, dx: int):
    return lambda gt_object, object_id, video_index: np.roll(clean_logits(gt_object), (dy, dx), axis=(1, 2))


def _false_positive_at(corner: tuple[int, int]):
    """Weak but right everywhere, except a very sure false positive block where the object is absent."""
    def make(gt_object: np.ndarray, object_id: int, video_index: int) -> np.ndarray:
        logits = clean_logits(gt_object, gain=1.0)
        block = (slice(None), slice(corner[0], corner[0] + 5), slice(corner[1], corner[1] + 5))
        logits[block] = np.where(logits[block] < 0, 50.0, logits[block])
        return logits
    return make


@pytest.fixture(scope="module")
def videos(tiny_dataset: Path) -> list[str]:
    return layout.open_dataset(tiny_dataset).video_names


@pytest.fixture(scope="module")
def split_list(tiny_dataset: Path, videos: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "all.txt"
    layout.write_split_list(path, videos)
    return path


def test_best_single_config_wins_over_fusing_it_with_worse_ones(tiny_dataset: Path, videos: list[str], split_list: Path, tmp_path: Path) -> None:
    stored = write_store(tmp_path / "val", tiny_dataset, videos,
                         {"s20_b-10": lambda g, i, v: clean_logits(g), "s7.5_b-4": _shifted(2, 2), "s10_b-5": _shifted(-2, -2)})
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"0": videos[::2], "1": videos[1::2]}))
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, folds=folds, top_k=3, progress=False)
    selection = plan.selection
    assert selection["chosen"] == "best-single" and plan.default.method == "single" and plan.default.configs == ("s20_b-10",)
    assert selection["held_out"] is True and set(selection["folds"]) == {"0", "1"}
    names = {c["name"]: c for c in selection["candidates"]}
    assert set(names) == {"best-single", "mean-top3", "logit-mean-top3", "vote-all", "per-video-consensus", "per-video-confidence",
                          "per-object-consensus", "per-object-confidence", "pixel-confidence"}
    assert all(set(c["per_fold"]) == {"0", "1"} and 0 <= c["jf"] <= 1 for c in names.values())
    assert names["best-single"]["jf"] == max(c["jf"] for c in names.values())
    assert max(selection["single_configs"], key=selection["single_configs"].get) == "s20_b-10"
    assert "select not scored" in " ".join(selection["notes"])
    assert load_plan(tmp_path / "plan.yaml").to_dict() == plan.to_dict()  # written as returned


def test_vote_wins_when_each_config_is_confidently_wrong_somewhere_else(tiny_dataset: Path, videos: list[str], split_list: Path,
                                                                       tmp_path: Path) -> None:
    stored = write_store(tmp_path / "val", tiny_dataset, videos,
                         {"s20_b-10": _false_positive_at((0, 0)), "s7.5_b-4": _false_positive_at((11, 0)), "s10_b-5": _false_positive_at((0, 11))})
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, top_k=3, progress=False)
    jf = {c["name"]: c["jf"] for c in plan.selection["candidates"]}
    assert plan.selection["chosen"] == "vote-all" and plan.default.method == "vote"
    assert jf["vote-all"] > max(jf["best-single"], jf["mean-top3"], jf["logit-mean-top3"]) + 0.02
    assert plan.selection["held_out"] is False and plan.selection["folds"] == {"all": len(videos)}


def test_select_candidate_and_the_cli_round_trip(tiny_dataset: Path, videos: list[str], split_list: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Objects 1 are right only under one config, the others only under another: per-type select beats any single."""
    good, bad = (lambda g, i, v: clean_logits(g)), _shifted(3, 3)
    stored = write_store(tmp_path / "val", tiny_dataset, videos, {
        "s20_b-10": lambda g, i, v: (good if i == 1 else bad)(g, i, v),
        "s7.5_b-4": lambda g, i, v: (bad if i == 1 else good)(g, i, v),
    })
    types = tmp_path / "types.csv"
    rows = ["video,object_id,scene_type"]
    for video in videos:
        ids = np.unique(layout.read_mask(layout.open_dataset(tiny_dataset).video(video).annotation_paths()[0]))
        rows += [f"{video},{i},{'first' if i == 1 else 'other'}" for i in ids if i not in (0, 255)]
    types.write_text("\n".join(rows) + "\n")
    best = tmp_path / "mss" / "best_configs.yaml"
    best.parent.mkdir()
    best.write_text("default: {scale: 7.5, bias: -4}\ntypes:\n  first: {scale: 20, bias: -10}\n")
    plan_path = tmp_path / "plan.yaml"
    code = main(["ensemble", "--select-on", "all", "--predictions", str(stored), "--data", str(tiny_dataset), "--split-list", str(split_list),
                 "--best-configs", str(best), "--scene-types", str(types), "--out-plan", str(plan_path), "--top-k", "2", "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "select" in out and "<- chosen" in out and "in-sample" in out
    plan = load_plan(plan_path)
    assert plan.selection["chosen"] == "select" and plan.default.method == "select" and plan.best_configs == str(best)
    # the chosen plan applies to another split's predictions with that split's scene types
    code = main(["ensemble", "--predictions", str(stored), "--plan", str(plan_path), "--data", str(tiny_dataset),
                 "--split-list", str(split_list), "--scene-types", str(types), "--out", str(tmp_path / "subs" / "final")])
    assert code == 0 and (tmp_path / "subs" / "final.zip").is_file()


def test_select_is_scored_with_tune_mss_per_fold_choices_when_they_exist(tiny_dataset: Path, videos: list[str], split_list: Path,
                                                                         tmp_path: Path) -> None:
    """With folds.json and holdout_objects.csv (tune-mss --cv) beside it, select uses each fold's own choices."""
    good, bad = (lambda g, i, v: clean_logits(g)), _shifted(3, 3)
    stored = write_store(tmp_path / "val", tiny_dataset, videos, {
        "s20_b-10": lambda g, i, v: (good if i == 1 else bad)(g, i, v),
        "s7.5_b-4": lambda g, i, v: (bad if i == 1 else good)(g, i, v),
    })
    mss = _write_fold_choices(tmp_path, tiny_dataset, videos, lambda i: (20, -10) if i == 1 else (7.5, -4))  # the right configs
    (mss / "best_configs.yaml").write_text("default: {scale: 20, bias: -10}\ntypes: {}\n")  # wrong for objects 2+
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, scene_types=tmp_path / "types.csv",
                         best_configs=mss / "best_configs.yaml", folds=mss / "folds.json", progress=False)
    assert any("per-fold choices" in note for note in plan.selection["notes"])
    assert plan.selection["chosen"] == "select" and plan.selection["held_out"] is True


def test_per_fold_choices_that_were_not_inferred_fall_back_with_a_note(tiny_dataset: Path, videos: list[str],
                                                                       split_list: Path, tmp_path: Path) -> None:
    """A fold's choice missing from the store (only per_type/ holds the final choice) is not looked up in per_type/:
    select is then scored from best_configs.yaml and the plan says that score is optimistic."""
    good = lambda g, i, v: clean_logits(g)  # noqa: E731
    stored = write_store(tmp_path / "val", tiny_dataset, videos, {"s20_b-10": good, "s7.5_b-4": good})
    (stored / "per_type").mkdir()  # infer --per-type ran: the final choice is stored, the fold choices are not
    mss = _write_fold_choices(tmp_path, tiny_dataset, videos, lambda i: (26.1, -0.235))  # never inferred
    (mss / "best_configs.yaml").write_text("default: {scale: 20, bias: -10}\ntypes: {}\n")
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, scene_types=tmp_path / "types.csv",
                         best_configs=mss / "best_configs.yaml", folds=mss / "folds.json", progress=False)
    assert any("optimistic" in note for note in plan.selection["notes"])


def _write_fold_choices(tmp_path: Path, dataset: Path, videos: list[str], choice) -> Path:
    """What tune-mss --cv leaves in ``tmp_path/mss``: two folds over ``videos`` and each object's per-fold
    (scale, bias) from ``choice(object_id)``; every object typed ``regular`` in ``tmp_path/types.csv``."""
    mss = tmp_path / "mss"
    mss.mkdir()
    (mss / "folds.json").write_text(json.dumps({"0": videos[::2], "1": videos[1::2]}))
    rows, types = ["fold,video,object_id,chosen_scale,chosen_bias"], ["video,object_id,scene_type"]
    for index, video in enumerate(videos):
        ids = np.unique(layout.read_mask(layout.open_dataset(dataset).video(video).annotation_paths()[0]))
        for i in (i for i in ids if i not in (0, 255)):
            scale, bias = choice(i)
            rows.append(f"{index % 2},{video},{i},{scale:g},{bias:g}")
            types.append(f"{video},{i},regular")
    (mss / "holdout_objects.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "types.csv").write_text("\n".join(types) + "\n")
    return mss


def test_select_with_a_policy_is_scored_with_its_per_fold_choices(tiny_dataset: Path, videos: list[str],
                                                                  split_list: Path, tmp_path: Path) -> None:
    """--best-configs policy.yaml: objects go to the policy's leaves by their features; held out, select reads the
    learned per-fold choices of policy_objects.csv (not the per-type ones of holdout_objects.csv)."""
    good, bad = (lambda g, i, v: clean_logits(g)), _shifted(3, 3)
    stored = write_store(tmp_path / "val", tiny_dataset, videos, {
        "s20_b-10": lambda g, i, v: (good if i == 1 else bad)(g, i, v),
        "s7.5_b-4": lambda g, i, v: (bad if i == 1 else good)(g, i, v),
    })
    mss = _write_fold_choices(tmp_path, tiny_dataset, videos, lambda i: (20, -10))  # per-type: wrong for objects 2+
    learned = [f"{row.split(',')[0]},{row.split(',')[1]},{row.split(',')[2]},"
               f"{'20,-10' if row.split(',')[2] == '1' else '7.5,-4'}"
               for row in (mss / "holdout_objects.csv").read_text().split()[1:]]
    (mss / "policy_objects.csv").write_text("fold,video,object_id,learned_scale,learned_bias\n" + "\n".join(learned) + "\n")
    types = (tmp_path / "types.csv").read_text().split()
    (tmp_path / "types.csv").write_text("\n".join([types[0] + ",area_fraction"] + [
        f"{row},{0.5 if row.split(',')[1] == '1' else 0.01}" for row in types[1:]]) + "\n")
    (mss / "policy.yaml").write_text('features: [area_fraction]\ndefault: {scale: 20, bias: -10}\nrules:\n'
                                     '  - {leaf: leaf_1, when: ["area_fraction <= 0.1"], scale: 7.5, bias: -4}\n'
                                     '  - {leaf: leaf_2, when: ["area_fraction > 0.1"], scale: 20, bias: -10}\n')
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, scene_types=tmp_path / "types.csv",
                         best_configs=mss / "policy.yaml", folds=mss / "folds.json", progress=False)
    assert any("policy_objects.csv" in note for note in plan.selection["notes"])
    jf = {c["name"]: c["jf"] for c in plan.selection["candidates"]}
    assert plan.selection["chosen"] == "select" and jf["select"] > jf["best-single"] + 0.05
