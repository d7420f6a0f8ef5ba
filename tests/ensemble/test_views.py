"""Views: the same configuration under another checkpoint or the mirrored video, stored as ``<config_id>@<view>``
and fused by the ensemble (test-time augmentation and multi-model ensembles)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ensemble_store import clean_logits, write_store

from masseg_search.data import layout
from masseg_search.ensemble import FusionPlan, FusionRule, RuleSpec, fuse_video, load_plan, run_ensemble
from masseg_search.ensemble.plan import RuleResolver, per_type_views
from masseg_search.ensemble.select import select_fusion, with_views
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store


def test_config_ids_carry_an_optional_view() -> None:
    assert store.config_id(20, -10, "flip") == "s20_b-10@flip"
    assert store.config_id(7.5, -4.0, None) == "s7.5_b-4"
    assert store.split_config_id("s7.5_b-4@trial2.flip") == (7.5, -4.0, "trial2.flip")
    assert store.split_config_id("s20_b-10") == (20.0, -10.0, None)
    assert store.parse_config_id("s20_b-10@flip").pair == (20.0, -10.0)
    assert store.config_view("per_type@flip") == "flip" and store.config_view("s20_b-10") is None
    assert store.view_folder("per_type", "trial2") == "per_type@trial2" and store.view_folder("per_type", None) == "per_type"
    for bad in ("has space", "@x", "a/b", ".hidden"):
        with pytest.raises(MassegError, match="not a view name"):
            store.config_id(20, -10, bad)
    with pytest.raises(MassegError, match=r"s<scale>_b<bias>.*\[@<view>\]"):
        store.split_config_id("s20_b-10@")


def test_stored_views_are_listed_and_per_type_views_found(tiny_dataset: Path, tmp_path: Path) -> None:
    videos = layout.open_dataset(tiny_dataset).video_names[:2]
    good = lambda g, i, v: clean_logits(g)  # noqa: E731
    root = write_store(tmp_path / "p", tiny_dataset, videos, {"s20_b-10": good, "s20_b-10@flip": good})
    (root / "per_type@flip").mkdir()
    (root / "per_typeX").mkdir()  # not a per_type folder
    assert store.list_config_ids(root) == ["s20_b-10", "s20_b-10@flip"]
    assert per_type_views(root) == {"flip"}
    loaded = store.load_video_prediction(root / "s20_b-10@flip" / videos[0])
    assert loaded.view == "flip"


def test_with_views_fuses_each_member_under_every_view() -> None:
    rule = with_views(FusionRule("mean", ("s20_b-10", "s7.5_b-4")), ("flip", "trial2"))
    assert rule.method == "mean"
    assert rule.configs == ("s20_b-10", "s7.5_b-4", "s20_b-10@flip", "s7.5_b-4@flip", "s20_b-10@trial2", "s7.5_b-4@trial2")
    assert with_views(FusionRule("single", ("s20_b-10",)), ("flip",)) == FusionRule("mean", ("s20_b-10", "s20_b-10@flip"))
    assert with_views(FusionRule("logit-mean", ("s20_b-10",)), ("flip",)).method == "logit-mean"
    assert with_views(FusionRule("single", ("s20_b-10",)), ()) == FusionRule("single", ("s20_b-10",))


def _shifted(dy: int, dx: int):
    return lambda gt_object, object_id, video_index: np.roll(clean_logits(gt_object), (dy, dx), axis=(1, 2))


def _false_positive_at(corner: tuple[int, int]):
    """Sure and right everywhere, except a block where the object is absent that it calls foreground (logit +2):
    another view that is sure the block is background (logit -8) outvotes it in the mean of probabilities."""
    def make(gt_object: np.ndarray, object_id: int, video_index: int) -> np.ndarray:
        logits = clean_logits(gt_object)
        block = (slice(None), slice(corner[0], corner[0] + 5), slice(corner[1], corner[1] + 5))
        logits[block] = np.where(logits[block] < 0, 2.0, logits[block])
        return logits
    return make


def test_select_on_chooses_the_view_fusion_when_views_err_in_opposite_directions(tiny_dataset: Path, tmp_path: Path) -> None:
    """Every base-view configuration makes the same false positive, the flip view another one: fused over the two
    views both vanish, so a view variant beats every base-view candidate; the plan applies to the test predictions
    and makes a valid submission."""
    dataset = layout.open_dataset(tiny_dataset)
    videos = dataset.video_names
    split_list = tmp_path / "all.txt"
    layout.write_split_list(split_list, videos)
    base, mirrored = _false_positive_at((0, 0)), _false_positive_at((11, 11))
    makers = {"s20_b-10": base, "s20_b-10@flip": mirrored, "s7.5_b-4": base, "s7.5_b-4@flip": mirrored}
    stored = write_store(tmp_path / "val", tiny_dataset, videos, makers)
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, top_k=2, progress=False)
    jf = {c["name"]: c["jf"] for c in plan.selection["candidates"]}
    assert plan.selection["views"] == ["flip"]
    assert {"best-single+flip", "mean-top2+flip"} <= set(jf)
    assert jf["best-single+flip"] > max(jf["best-single"], jf["mean-top2"], jf["logit-mean-top2"]) + 0.02
    # pixel-confidence fuses the same two members and keeps the sure -8 instead of a mean near 0 at the false
    # positives' edges (a sharper upsampled edge): it edges out their mean of probabilities and is chosen
    assert plan.selection["chosen"] == "pixel-confidence" and jf["pixel-confidence"] >= jf["best-single+flip"]
    assert plan.default == RuleSpec("confidence", ("s20_b-10", "s20_b-10@flip"))
    assert load_plan(tmp_path / "plan.yaml").default == plan.default
    # the chosen fusion's members are scored alone too (the report's "gain over its members"), no other view configs
    assert set(plan.selection["single_configs"]) == {"s20_b-10", "s7.5_b-4", "s20_b-10@flip"}
    assert plan.selection["single_configs"]["s20_b-10@flip"] < jf["best-single+flip"]
    result = run_ensemble(stored, plan, tiny_dataset, tmp_path / "subs" / "views", split_list=split_list, progress=False)
    assert result.problems == [] and result.zip_path is not None and result.zip_path.is_file()


def test_select_over_views_is_scored_and_written_as_per_type_rules(tiny_dataset: Path, tmp_path: Path) -> None:
    """Objects 1 need s20_b-10, the others s7.5_b-4 (select); under each config the base view and the flip view
    make different false positives, so select fused over the views wins and becomes one mean rule per scene type."""
    dataset = layout.open_dataset(tiny_dataset)
    videos = dataset.video_names
    split_list = tmp_path / "all.txt"
    layout.write_split_list(split_list, videos)

    def config(right_for_first: bool, corner: tuple[int, int]):
        good, bad = _false_positive_at(corner), _shifted(4, 4)
        return lambda g, i, v: ((good if (i == 1) == right_for_first else bad)(g, i, v))

    stored = write_store(tmp_path / "val", tiny_dataset, videos, {
        "s20_b-10": config(True, (0, 0)), "s20_b-10@flip": config(True, (11, 11)),
        "s7.5_b-4": config(False, (0, 0)), "s7.5_b-4@flip": config(False, (11, 11))})
    rows = ["video,object_id,scene_type"]
    for video in videos:
        ids = np.unique(layout.read_mask(dataset.video(video).annotation_paths()[0]))
        rows += [f"{video},{i},{'first' if i == 1 else 'other'}" for i in ids if i not in (0, 255)]
    types = tmp_path / "types.csv"
    types.write_text("\n".join(rows) + "\n")
    best = tmp_path / "best_configs.yaml"
    best.write_text("default: {scale: 7.5, bias: -4}\ntypes:\n  first: {scale: 20, bias: -10}\n")
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, scene_types=types,
                         best_configs=best, top_k=2, progress=False)
    jf = {c["name"]: c["jf"] for c in plan.selection["candidates"]}
    assert plan.selection["chosen"] == "select+flip", jf
    assert jf["select+flip"] > jf["select"] + 0.02
    assert plan.default == RuleSpec("mean", ("s7.5_b-4", "s7.5_b-4@flip"))
    assert plan.per_type == {"first": RuleSpec("mean", ("s20_b-10", "s20_b-10@flip"))}
    saved = load_plan(tmp_path / "plan.yaml")
    assert saved.per_type == plan.per_type and not saved.uses_select()
    result = run_ensemble(stored, saved, tiny_dataset, tmp_path / "subs" / "select_flip", split_list=split_list,
                          scene_types=types, progress=False)
    assert result.problems == []


def test_view_variants_need_every_configuration_under_their_views(tiny_dataset: Path, tmp_path: Path) -> None:
    """A view that lacks some configurations gets no variant that needs them, and the plan says why."""
    dataset = layout.open_dataset(tiny_dataset)
    videos = dataset.video_names
    split_list = tmp_path / "all.txt"
    layout.write_split_list(split_list, videos)
    good = lambda g, i, v: clean_logits(g)  # noqa: E731
    stored = write_store(tmp_path / "val", tiny_dataset, videos,
                         {"s20_b-10": good, "s7.5_b-4": _shifted(1, 1), "s7.5_b-4@flip": good})
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, top_k=2, progress=False)
    names = {c["name"] for c in plan.selection["candidates"]}
    assert "best-single+flip" not in names and "mean-top2+flip" not in names  # s20_b-10@flip is not stored
    assert plan.selection["chosen"] == "best-single" and plan.default.configs == ("s20_b-10",)


def test_per_type_of_a_view_serves_that_views_configurations(tiny_dataset: Path, tmp_path: Path) -> None:
    """A configuration stored only in per_type@flip/ (infer --per-type --flip) is found there, and a rule naming
    a configuration that folder does not hold for the object is a clear error."""
    dataset = layout.open_dataset(tiny_dataset)
    video = dataset.video_names[0]
    good = lambda g, i, v: clean_logits(g)  # noqa: E731
    stored = write_store(tmp_path / "p", tiny_dataset, [video], {"s20_b-10": good})
    source = store.load_video_prediction(stored / "s20_b-10" / video)
    source.object_configs = {i: (7.5, -4.0) for i in source.object_ids}
    source.scale = source.bias = None
    source.view = "flip"
    store.save_video_prediction(stored / "per_type@flip" / video, source)
    resolver = RuleResolver(FusionPlan(RuleSpec("mean", ("s20_b-10", "s7.5_b-4@flip"))), store.list_config_ids(stored),
                            per_type_views=per_type_views(stored))
    rules = resolver.rules_for_video(video, source.object_ids)
    fused = fuse_video(stored, video, rules)
    assert set(fused.object_ids) == set(source.object_ids)
    wrong = {i: FusionRule("single", ("s10_b-5@flip",)) for i in source.object_ids}
    with pytest.raises(MassegError, match="stored under"):
        fuse_video(stored, video, wrong)
    with pytest.raises(MassegError, match="not in the predictions"):
        RuleResolver(FusionPlan(RuleSpec("single", ("s10_b-5@trial2",))), store.list_config_ids(stored),
                     per_type_views=per_type_views(stored)).rules_for_video(video, source.object_ids)


def test_a_plan_names_the_configurations_it_needs() -> None:
    """What the demo infers under each view on test: exactly the configurations the chosen plan can read."""
    from masseg_search.store.best_configs import BestConfigs

    best = BestConfigs({"small": (38.9, -3.7)}, (20.0, -10.0))
    plan = FusionPlan(RuleSpec("mean", ("s20_b-10", "s20_b-10@flip")),
                      {"small": RuleSpec("mean", ("s38.9_b-3.7", "s38.9_b-3.7@flip"))})
    assert plan.needed_configs() == {"s20_b-10", "s20_b-10@flip", "s38.9_b-3.7", "s38.9_b-3.7@flip"}
    assert FusionPlan(RuleSpec("select")).needed_configs(best) == {"s20_b-10", "s38.9_b-3.7"}
    assert FusionPlan(RuleSpec("mean")).needed_configs(best) is None  # every stored configuration
    with pytest.raises(MassegError, match="no best_configs.yaml"):
        FusionPlan(RuleSpec("select")).needed_configs()
