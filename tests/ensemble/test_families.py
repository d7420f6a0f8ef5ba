"""Model families: another tool's masks imported as a view (pseudo-logits, checked like a submission), members chosen
per video or object without labels, and pixel-level confidence fusion."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ensemble_store import LOW_RES, clean_logits, read_ground_truth, write_store
from PIL import Image

from masseg_search.cli import main
from masseg_search.data import layout
from masseg_search.ensemble import FusionRule, fuse_logits, fuse_video, load_plan, plan_from_dict, run_ensemble
from masseg_search.ensemble.agreement import choose, frame_ious, member_scores, resolve_choices
from masseg_search.ensemble.plan import RuleResolver
from masseg_search.ensemble.select import family_members, select_fusion
from masseg_search.errors import MassegError
from masseg_search.evaluation import evaluate_predictions
from masseg_search.inference.import_masks import import_masks
from masseg_search.store import predictions as store
from masseg_search.store.pseudo_logits import mask_pseudo_logits, probability_pseudo_logits, pseudo_logits

FULL = float(np.log(1 / 0.01))  # the pseudo-logit of a cell one label covers fully (eps = 0.01), with its sign


@pytest.fixture(scope="module")
def videos(tiny_dataset: Path) -> list[str]:
    return layout.open_dataset(tiny_dataset).video_names


@pytest.fixture(scope="module")
def split_list(tiny_dataset: Path, videos: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lists") / "all.txt"
    layout.write_split_list(path, videos)
    return path


# ------------------------------------------------------------------------------------------ the pseudo-logit rule


def test_pseudo_logits_give_back_the_tools_argmax_at_low_resolution() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[:, :4] = 1  # left half object 1
    mask[:4, 4:] = 2  # top-right quarter object 2
    mask[4:6, 4:6] = 2
    logits = mask_pseudo_logits(mask, [1, 2], 4, 4)
    assert logits.shape == (2, 4, 4) and logits.dtype == np.float32
    assert logits[0, 0, 0] == pytest.approx(FULL, abs=1e-5) and logits[1, 0, 0] == pytest.approx(-FULL, abs=1e-5)
    assert logits[1, 2, 2] == pytest.approx(FULL, abs=1e-5) and logits[0, 3, 3] == pytest.approx(-FULL, abs=1e-5)
    assert logits[1, 3, 3] == pytest.approx(-FULL, abs=1e-5)  # background only: every object at the floor
    # the store's merge (highest > 0 wins) of the pseudo-logits = the area-argmax of the mask (background included)
    fractions = np.stack([cv2.resize((mask == k).astype(np.float32), (4, 4), interpolation=cv2.INTER_AREA) for k in (0, 1, 2)])
    np.testing.assert_array_equal(store.merge_objects(logits, [1, 2]), np.argmax(fractions, axis=0))
    # a lone object: logit of its clipped coverage, scaled
    half = pseudo_logits(np.array([[[0.5, 0.25]]], np.float32), scale=2.0)
    assert half[0, 0, 0] == pytest.approx(0.0, abs=1e-6) and half[0, 0, 1] == pytest.approx(2 * np.log(0.25 / 0.75), abs=1e-5)


def test_probability_maps_with_a_background_channel_reproduce_the_softmax_argmax() -> None:
    rng = np.random.default_rng(0)
    raw = rng.random((3, 8, 8)).astype(np.float32) ** 3
    softmax = raw / raw.sum(axis=0, keepdims=True)  # channel 0 = background, as Cutie gives it
    logits = probability_pseudo_logits(softmax[1:], 8, 8, background=softmax[0])
    np.testing.assert_array_equal(store.merge_objects(logits, [1, 2]), np.argmax(softmax, axis=0))
    assert ((logits > 0).sum(axis=0) <= 1).all()  # only the largest label can be above 0


# ------------------------------------------------------------------------------------------ importing masks


def _write_masks(root: Path, dataset_root: Path, videos: list[str], shift: int = 0) -> Path:
    """The ground truth (shifted right by ``shift`` px after the first frame) as another tool's Annotations tree."""
    for video in videos:
        names, gt = read_ground_truth(dataset_root, video)
        for t, name in enumerate(names):
            layout.write_mask(root / video / f"{name}.png", gt[t] if t == 0 else np.roll(gt[t], shift, axis=1))
    return root


def test_imported_masks_are_stored_as_a_view_that_reproduces_them(tiny_dataset: Path, videos: list[str], split_list: Path,
                                                                   tmp_path: Path) -> None:
    stored = write_store(tmp_path / "pred", tiny_dataset, videos, {"s20_b-10": lambda g, i, v: clean_logits(g)})
    masks = _write_masks(tmp_path / "other" / "Annotations", tiny_dataset, videos, shift=3)
    assert main(["infer", "--import-masks", str(tmp_path / "other"), "--view", "other", "--data", str(tiny_dataset),
                 "--split-list", str(split_list), "--out", str(stored), "--configs", "20,-10;7.5,-4", "--no-progress"]) == 0
    assert store.list_config_ids(stored) == ["s20_b-10", "s20_b-10@other", "s7.5_b-4@other"]
    prediction = store.load_video_prediction(stored / "s20_b-10@other" / videos[0])
    assert prediction.family == "imported" and prediction.view == "other" and not prediction.predicted_ious
    assert prediction.logits[prediction.object_ids[0]].shape[1:] == (LOW_RES, LOW_RES)  # the store's size
    assert float(np.abs(prediction.logits[prediction.object_ids[0]]).max()) == pytest.approx(FULL, abs=1e-2)
    # fused alone, the view's masks are the imported ones up to the low-res rounding of edges: as close to them as
    # logits made from the ground truth's own coverage (the base member) are to the ground truth
    fidelity = {}
    for config, truth in (("s20_b-10@other", masks), ("s20_b-10", tiny_dataset)):
        plan = plan_from_dict({"method": "single", "configs": [config]})
        result = run_ensemble(stored, plan, tiny_dataset, tmp_path / "subs" / config, split_list=split_list, progress=False)
        assert result.problems == []
        scores = evaluate_predictions(truth, result.out_dir, split_list=split_list, workers=1, progress=False)
        fidelity[config] = scores.global_table.iloc[0]["J-Mean"]
    assert fidelity["s20_b-10@other"] >= fidelity["s20_b-10"] - 0.02, fidelity
    # a rerun resumes (nothing to do); the same view from another source is refused
    import_masks(tmp_path / "other", tiny_dataset, stored, "other", split_list=split_list, configs="20,-10", progress=False)
    with pytest.raises(MassegError, match="already holds other predictions"):
        import_masks(_write_masks(tmp_path / "another", tiny_dataset, videos), tiny_dataset, stored, "other",
                     split_list=split_list, progress=False)


def test_every_bad_imported_file_is_named(tiny_dataset: Path, videos: list[str], split_list: Path, tmp_path: Path) -> None:
    stored = write_store(tmp_path / "pred", tiny_dataset, videos, {"s20_b-10": lambda g, i, v: clean_logits(g)})
    masks = _write_masks(tmp_path / "bad", tiny_dataset, videos)
    first, second, third = videos[:3]
    names = layout.open_dataset(tiny_dataset).video(first).frame_names
    (masks / first / f"{names[2]}.png").unlink()  # a missing frame
    layout.write_mask(masks / second / f"{names[1]}.png", np.zeros((32, 32), np.uint8))  # wrong size
    layout.write_mask(masks / third / f"{names[1]}.png", np.full((64, 64), 9, np.uint8))  # an id the video lacks
    Image.new("RGB", (64, 64)).save(masks / third / f"{names[2]}.png")  # not a palette PNG
    with pytest.raises(MassegError) as caught:
        import_masks(masks, tiny_dataset, stored, "bad", split_list=split_list, progress=False)
    message = str(caught.value)
    assert "4 problems" in message
    for text in (f"{first}: 1 of", f"{second}/{names[1]}.png: is 32x32", f"{third}/{names[1]}.png: has values [9]",
                 f"{third}/{names[2]}.png: is a mode-RGB image"):
        assert text in message, message
    assert not (stored / "s20_b-10@bad").exists()  # nothing stored from a bad tree


def test_probability_maps_import_and_their_bad_files(tiny_dataset: Path, videos: list[str], split_list: Path,
                                                    tmp_path: Path) -> None:
    two = videos[:2]
    lst = tmp_path / "two.txt"
    layout.write_split_list(lst, two)
    maps = tmp_path / "maps"
    for video in two:
        names, gt = read_ground_truth(tiny_dataset, video)
        ids = np.array(sorted(int(i) for i in np.unique(gt[0]) if i not in (0, 255)))
        for t, name in enumerate(names):
            probabilities = np.stack([(gt[t] == i) for i in ids]).astype(np.uint8) * 255  # uint8 = value / 255
            (maps / video).mkdir(parents=True, exist_ok=True)
            np.savez(maps / video / f"{name}.npz", object_ids=ids, probabilities=probabilities)
    out = import_masks(maps, tiny_dataset, tmp_path / "pred", "probs", split_list=lst, low_res=LOW_RES, progress=False)
    prediction = store.load_video_prediction(out / "s20_b-10@probs" / two[0])
    names, gt = read_ground_truth(tiny_dataset, two[0])
    merged = store.merge_objects(np.stack([prediction.logits[i][3].astype(np.float32) for i in prediction.object_ids]),
                                 prediction.object_ids)
    low_gt = np.stack([cv2.resize((gt[3] == k).astype(np.float32), (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA)
                       for k in [0, *prediction.object_ids]])
    sure = np.sort(low_gt, axis=0)[-1] > np.sort(low_gt, axis=0)[-2]  # cells with one clear majority
    np.testing.assert_array_equal(merged[sure], np.asarray([0, *prediction.object_ids])[np.argmax(low_gt, axis=0)][sure])
    # bad files: out-of-range values, an unknown id, a wrong size; each named
    np.savez(maps / two[0] / f"{names[1]}.npz", object_ids=np.array([1]), probabilities=np.full((1, 64, 64), 1.5, np.float32))
    np.savez(maps / two[0] / f"{names[2]}.npz", object_ids=np.array([77]), probabilities=np.zeros((1, 64, 64), np.float32))
    np.savez(maps / two[1] / f"{names[1]}.npz", object_ids=np.array([1]), probabilities=np.zeros((1, 30, 64), np.float32))
    with pytest.raises(MassegError) as caught:
        import_masks(maps, tiny_dataset, tmp_path / "pred", "probs2", split_list=lst, low_res=LOW_RES, progress=False)
    message = str(caught.value)
    assert f"{two[0]}/{names[1]}.npz: probabilities fall outside [0, 1]" in message
    assert f"{two[0]}/{names[2]}.npz: has object ids [77]" in message
    assert f"{two[1]}/{names[1]}.npz: maps are 64x30" in message


def test_import_needs_a_view_and_a_low_resolution(tiny_dataset: Path, videos: list[str], split_list: Path, tmp_path: Path) -> None:
    masks = _write_masks(tmp_path / "m", tiny_dataset, videos)
    with pytest.raises(MassegError, match="needs a view name"):
        import_masks(masks, tiny_dataset, tmp_path / "pred", None, split_list=split_list, progress=False)  # type: ignore[arg-type]
    with pytest.raises(MassegError, match="--low-res"):
        import_masks(masks, tiny_dataset, tmp_path / "pred", "m", split_list=split_list, progress=False)


# ------------------------------------------------------------------------------------- choosing without labels


def test_frame_ious_and_the_consensus_member() -> None:
    empty = np.zeros((2, 4, 4), bool)
    full = np.ones((2, 4, 4), bool)
    np.testing.assert_allclose(frame_ious(empty, empty), [1.0, 1.0])
    np.testing.assert_allclose(frame_ious(empty, full), [0.0, 0.0])
    half = full.copy()
    half[:, :2] = False
    np.testing.assert_allclose(frame_ious(half, full), [0.5, 0.5])


def _prediction(logits: dict[int, np.ndarray], family: str = "sam2", ious: dict[int, float] | None = None) -> store.VideoPrediction:
    frames = len(next(iter(logits.values())))
    return store.VideoPrediction(
        video="v", frame_names=[f"{t:05d}" for t in range(frames)], height=8, width=8, object_ids=sorted(logits),
        first_frames={i: 0 for i in logits}, logits=logits, object_scores={i: np.full(frames, 10.0, np.float32) for i in logits},
        family=family, predicted_ious={} if ious is None else {i: np.full(frames, ious[i], np.float32) for i in logits})


def test_member_scores_choose_per_video_and_per_object() -> None:
    """Object 1: members a and b agree, c is off; object 2: b and c agree, a is off. Per object, consensus takes a
    and b; per video, b (it agrees with someone on both objects). Confidence takes a SAM2 member's own estimate."""
    right = np.full((4, 8, 8), -5.0, np.float32)
    right[:, 2:6, 2:6] = 5.0
    off = np.roll(right, 3, axis=2)
    members = ("a", "b", "c")
    predictions = [_prediction({1: right, 2: off}, ious={1: 0.9, 2: 0.1}), _prediction({1: right, 2: right}, "imported"),
                   _prediction({1: off, 2: right}, "imported")]
    scores = member_scores(predictions, members, [1, 2])
    assert scores.own_confidence == [True, False, False]
    assert choose(scores, "per-object-consensus") == {1: "a", 2: "b"}
    assert choose(scores, "per-video-consensus") == {1: "b", 2: "b"}
    np.testing.assert_allclose(scores.confidence[0], [0.9, 0.1], atol=1e-3)  # sigmoid(10) * predicted IoU
    np.testing.assert_allclose(scores.confidence[1:], scores.agreement[1:])
    assert choose(scores, "per-object-confidence")[1] == "a"


def test_pixel_confidence_takes_the_surer_member_where_they_disagree() -> None:
    first = np.array([[2.0, -1.0, 3.0]], np.float16)[None]
    second = np.array([[-6.0, 0.5, 1.0]], np.float16)[None]
    fused = fuse_logits([first, second], "confidence")
    np.testing.assert_array_equal(fused, np.array([[[-6.0, -1.0, 3.0]]], np.float32))
    assert fuse_logits([first], "confidence").tolist() == first.astype(np.float32).tolist()
    with pytest.raises(MassegError, match="weights make no sense"):
        plan_from_dict({"method": "confidence", "configs": ["s20_b-10", "s7.5_b-4"], "weights": [1, 1]})


def test_plans_take_per_video_rules_and_refuse_unresolved_choices(tiny_dataset: Path, videos: list[str], tmp_path: Path) -> None:
    plan = plan_from_dict({"method": "per-video-consensus", "configs": ["s20_b-10", "s7.5_b-4", "s10_b-5"],
                           "per_video": {videos[0]: {"method": "single", "configs": ["s7.5_b-4"]}}})
    resolver = RuleResolver(plan, ["s20_b-10", "s7.5_b-4", "s10_b-5"])
    assert resolver.rule_for(videos[0], 1) == FusionRule("single", ("s7.5_b-4",))
    assert resolver.rule_for(videos[1], 1).method == "per-video-consensus"
    assert plan_from_dict(plan.to_dict()).per_video == plan.per_video
    assert plan.needed_configs() == {"s20_b-10", "s7.5_b-4", "s10_b-5"}
    stored = write_store(tmp_path / "p", tiny_dataset, videos[:1], {"s20_b-10": lambda g, i, v: clean_logits(g)})
    with pytest.raises(MassegError, match="must be resolved"):
        fuse_video(stored, videos[0], {1: FusionRule("per-video-consensus", ("s20_b-10",))})


def _members_bad_in_turn(bad_shift: int = 6):
    """Three members, each right on two thirds of the videos (its own confidence: gain) and far off (its objects
    shifted) on the others: the two right ones agree with each other more than with the bad one."""
    def member(index: int, gain: float):
        def make(gt_object: np.ndarray, object_id: int, video_index: int) -> np.ndarray:
            shift = bad_shift if video_index % 3 == index else 0
            return np.roll(clean_logits(gt_object, gain), shift, axis=2)
        return make
    return {"s20_b-10": member(0, 8.0), "s20_b-10@other": member(1, 6.0), "s20_b-10@third": member(2, 4.0)}


def test_per_video_selection_beats_every_member_better_on_some_videos_and_worse_on_others(
        tiny_dataset: Path, videos: list[str], split_list: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stored = write_store(tmp_path / "val", tiny_dataset, videos, _members_bad_in_turn())
    for config in ("s20_b-10@other", "s20_b-10@third"):  # two other families, as imported masks are
        for video in videos:
            prediction = store.load_video_prediction(stored / config / video)
            prediction.family = "imported"
            store.save_video_prediction(stored / config / video, prediction)
    assert family_members(["s20_b-10"], ["other", "third"], store.list_config_ids(stored), 3) == \
        ("s20_b-10", "s20_b-10@other", "s20_b-10@third")
    plan_path = tmp_path / "plan.yaml"
    assert main(["ensemble", "--select-on", "val", "--predictions", str(stored), "--data", str(tiny_dataset),
                 "--split-list", str(split_list), "--out-plan", str(plan_path), "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    plan = load_plan(plan_path)
    candidates = {c["name"]: c for c in plan.selection["candidates"]}
    singles = plan.selection["single_configs"]
    consensus = candidates["per-video-consensus"]
    assert set(singles) >= {"s20_b-10", "s20_b-10@other", "s20_b-10@third"}
    assert consensus["jf"] > max(singles.values()) + 0.02, (consensus["jf"], singles)
    # counted by view (a fold may take another configuration under a view)
    counts = consensus["member_choices"]["videos"]
    assert sum(counts.values()) == len(videos) and set(counts) <= {"base view", "other", "third"}
    assert "chosen: videos" in printed and "per-video-consensus" in printed
    # applied to a split (here the same videos), the rule chooses again without labels and counts its choices
    rule = plan_from_dict(consensus["rule"])
    result = run_ensemble(stored, rule, tiny_dataset, tmp_path / "subs" / "pv", split_list=split_list, progress=False)
    assert result.problems == [] and result.choices_path is not None and result.choices_path.is_file()
    for index, video in enumerate(videos):  # never the member that is off on this video
        bad = ("s20_b-10", "s20_b-10@other", "s20_b-10@third")[index % 3]
        assert bad not in set(result.choices[video].values())
    by_view = {(store.config_view(m) or "base view"): n for m, n in result.choice_counts()["videos"].items()}
    assert by_view == counts
    members = ("s20_b-10", "s20_b-10@other", "s20_b-10@third")
    rules, chosen = resolve_choices(stored, videos[0], {1: FusionRule("per-object-consensus", members)})
    assert rules[1] == FusionRule("single", (chosen[1],)) and chosen[1] in members[1:]  # video 0: the base is off


def test_per_video_confidence_reads_sam2s_own_estimate(tiny_dataset: Path, videos: list[str], split_list: Path,
                                                       tmp_path: Path) -> None:
    """Two members: SAM2 (right on even videos, and it says so with its predicted IoU) and an imported one (right on
    odd videos). With two members consensus cannot choose; confidence can, and beats both members."""
    def sam2(g, i, v):
        return np.roll(clean_logits(g), 0 if v % 2 == 0 else 3, axis=2)

    def other(g, i, v):
        return np.roll(clean_logits(g), 3 if v % 2 == 0 else 0, axis=2)

    stored = write_store(tmp_path / "val", tiny_dataset, videos, {"s20_b-10": sam2, "s20_b-10@other": other})
    for index, video in enumerate(videos):
        prediction = store.load_video_prediction(stored / "s20_b-10" / video)
        prediction.predicted_ious = {i: np.full(len(prediction.frame_names), 0.95 if index % 2 == 0 else 0.01, np.float32)
                                     for i in prediction.object_ids}
        prediction.object_scores = {i: np.full(len(prediction.frame_names), 10.0, np.float32) for i in prediction.object_ids}
        store.save_video_prediction(stored / "s20_b-10" / video, prediction)
        imported = store.load_video_prediction(stored / "s20_b-10@other" / video)
        imported.family = "imported"
        store.save_video_prediction(stored / "s20_b-10@other" / video, imported)
    plan = select_fusion(stored, tiny_dataset, tmp_path / "plan.yaml", split_list=split_list, progress=False)
    jf = {c["name"]: c["jf"] for c in plan.selection["candidates"]}
    singles = plan.selection["single_configs"]
    assert jf["per-video-confidence"] > max(singles.values()) + 0.02
    assert plan.selection["chosen"] in ("per-video-confidence", "per-object-confidence")
    choices = {c["name"]: c for c in plan.selection["candidates"]}["per-video-confidence"]["member_choices"]["videos"]
    assert choices == {"base view": (len(videos) + 1) // 2, "other": len(videos) // 2}


def test_infer_cli_keeps_families_apart(tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    base = ["infer", "--data", str(tiny_dataset), "--out", str(tmp_path / "pred")]
    assert main([*base, "--import-masks", str(tmp_path), "--engine", "cutie", "--view", "x"]) == 1
    assert "--import-masks and --engine cutie both given" in capsys.readouterr().err
    for flag in (["--flip"], ["--ray-address", "local"]):
        assert main([*base, "--import-masks", str(tmp_path), "--view", "x", *flag]) == 1
        assert "apply to SAM2 runs only" in capsys.readouterr().err


def test_choices_are_counted_per_video_and_per_object() -> None:
    from masseg_search.ensemble.agreement import count_choices, format_choice_counts

    choices = {"a": {1: "s20_b-10", 2: "s20_b-10"}, "b": {1: "s20_b-10@x", 2: "s20_b-10"}, "c": {1: "s20_b-10@x"}}
    counts = count_choices(choices)
    assert counts == {"videos": {"mixed": 1, "s20_b-10": 1, "s20_b-10@x": 1}, "objects": {"s20_b-10": 3, "s20_b-10@x": 2}}
    by_view = count_choices(choices, lambda member: store.config_view(member) or "base view")
    assert by_view["videos"] == {"base view": 1, "mixed": 1, "x": 1}
    assert format_choice_counts(by_view) == "videos: base view 1, mixed 1, x 1; objects: base view 3, x 2"
