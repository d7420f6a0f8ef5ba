"""`run_ensemble` end to end on the synthetic dataset: masks, first frame, zip layout, resume, refusal of a new plan."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from ensemble_store import clean_logits, read_ground_truth, write_store

from masseg_search.cli import main
from masseg_search.data import layout
from masseg_search.ensemble import fuse_logits, plan_from_dict, run_ensemble
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store


def _noisy(gt_object: np.ndarray, object_id: int, video_index: int) -> np.ndarray:
    rng = np.random.default_rng(100 * video_index + object_id)
    return clean_logits(gt_object) + rng.normal(0, 3.0, (gt_object.shape[0], 16, 16))


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    videos = layout.open_dataset(tiny_dataset).video_names
    root = tmp_path_factory.mktemp("predictions") / "all"
    return write_store(root, tiny_dataset, videos, {"s20_b-10": lambda g, i, v: clean_logits(g), "s7.5_b-4": _noisy})


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("method", ["mean", "logit-mean", "vote"])
def test_plan_writes_a_checked_zip_that_follows_the_ground_truth(method: str, stored: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "submissions" / "run"
    plan = plan_from_dict({"method": method, "weights": [3, 1], "configs": ["s20_b-10", "s7.5_b-4"]})
    result = run_ensemble(stored, plan, tiny_dataset, out, progress=False)
    dataset = layout.open_dataset(tiny_dataset)
    assert result.problems == [] and result.videos == len(dataset)
    assert result.frames_written == sum(len(v.frame_paths) for v in dataset.videos())
    mismatches, pixels, ious = 0, 0, []
    for video in dataset.videos():
        _, gt = read_ground_truth(tiny_dataset, video.name)
        written = np.stack([layout.read_mask(out / video.name / f"{name}.png") for name in video.frame_names])
        assert np.array_equal(written[0], gt[0])  # the first frame is the given mask, exactly
        # later frames: the weighted fusion on whole frames, then the store's own upsample + merge rule
        clean = store.load_video_prediction(stored / "s20_b-10" / video.name)
        noisy = store.load_video_prediction(stored / "s7.5_b-4" / video.name)
        fused = {i: fuse_logits([clean.logits[i], noisy.logits[i]], method, (3.0, 1.0)) for i in clean.object_ids}
        for t in range(1, len(gt)):
            expected = store.logits_to_mask(np.stack([fused[i][t] for i in clean.object_ids]), clean.object_ids, *gt.shape[1:])
            mismatches += int((expected != written[t]).sum())
            pixels += expected.size
        ious += [_iou(written[1:] == i, gt[1:] == i) for i in clean.object_ids if (gt[0] == i).sum() >= 100]
    assert mismatches / pixels < 1e-4  # only float rounding at an exact tie may differ
    assert np.mean(ious) > 0.7  # and it follows the ground truth the logits were made from
    with zipfile.ZipFile(result.zip_path) as archive:
        names = archive.namelist()
    assert all(name.count("/") == 1 and name.split("/")[0] in dataset.video_names for name in names)
    assert len(names) == result.frames_written
    assert (out.parent / "run.plan.yaml").is_file() and not list(out.glob(".partial-*"))


def test_resume_rewrites_only_missing_videos_and_refuses_another_plan(stored: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    plan = plan_from_dict({"method": "single", "configs": ["s20_b-10"]})
    first = run_ensemble(stored, plan, tiny_dataset, out, progress=False, write_zip=False)
    assert first.zip_path is None and not (tmp_path / "run.zip").exists()
    again = run_ensemble(stored, plan, tiny_dataset, out, progress=False, write_zip=False)
    assert again.frames_written == 0
    victim = sorted(p for p in out.iterdir())[0]
    frames = len(list(victim.iterdir()))
    for png in victim.iterdir():
        png.unlink()
    victim.rmdir()
    (out / ".partial-leftover").mkdir()  # an interrupted earlier run
    resumed = run_ensemble(stored, plan, tiny_dataset, out, progress=False, workers=2)
    assert resumed.frames_written == frames and resumed.problems == [] and resumed.zip_path.is_file()
    other = plan_from_dict({"method": "vote"})
    with pytest.raises(MassegError, match="another plan"):
        run_ensemble(stored, other, tiny_dataset, out, progress=False)


def test_parallel_and_serial_runs_write_the_same_masks(stored: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    plan = plan_from_dict({"method": "logit-mean"})
    run_ensemble(stored, plan, tiny_dataset, tmp_path / "serial", progress=False, write_zip=False)
    run_ensemble(stored, plan, tiny_dataset, tmp_path / "parallel", progress=False, write_zip=False, workers=2)
    serial = sorted((tmp_path / "serial").rglob("*.png"))
    assert serial and all((tmp_path / "parallel" / p.relative_to(tmp_path / "serial")).read_bytes() == p.read_bytes() for p in serial)


def test_missing_predictions_and_configs_are_clear_errors(stored: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(MassegError, match="not in the predictions"):
        run_ensemble(stored, plan_from_dict({"method": "mean", "configs": ["s1_b0"]}), tiny_dataset, tmp_path / "a", progress=False)
    other_split = tmp_path / "list.txt"
    other_split.write_text("video_9999\n")
    with pytest.raises(MassegError, match="no complete prediction"):
        run_ensemble(stored, plan_from_dict({"method": "mean"}), tiny_dataset, tmp_path / "b", split_list=other_split, progress=False)


def test_cli_ensemble_with_select_plan(stored: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    videos = layout.open_dataset(tiny_dataset, split="test").video_names
    scene_types = tmp_path / "types.csv"
    rows = ["video,object_id,scene_type"]
    for video in videos:
        _, gt = read_ground_truth(tiny_dataset, video)
        rows += [f"{video},{i},{'small' if i == 1 else 'regular'}" for i in np.unique(gt[0])[1:]]
    scene_types.write_text("\n".join(rows) + "\n")
    best = tmp_path / "best_configs.yaml"
    best.write_text("default: {scale: 20, bias: -10}\ntypes:\n  small: {scale: 7.5, bias: -4}\n")
    plan = tmp_path / "plan.yaml"
    plan.write_text("method: select\n")
    out = tmp_path / "subs" / "sel"
    code = main(["ensemble", "--predictions", str(stored), "--plan", str(plan), "--data", str(tiny_dataset), "--split", "test",
                 "--scene-types", str(scene_types), "--best-configs", str(best), "--out", str(out), "--workers", "1"])
    assert code == 0, capsys.readouterr()
    assert "check passed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(videos) and (tmp_path / "subs" / "sel.zip").is_file()
    assert main(["ensemble", "--predictions", str(stored), "--data", str(tiny_dataset), "--out", str(tmp_path / "x")]) == 1
    assert "best-configs" in capsys.readouterr().err  # the default method is select: it says what is missing


def test_select_reads_infer_per_type_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    """infer --per-type stores each object under its type's config in per_type/: select reads it from there."""
    videos = layout.open_dataset(tiny_dataset, split="val").video_names
    root = tmp_path / "pred"
    rows = ["video,object_id,scene_type"]
    for video in videos:
        names, gt = read_ground_truth(tiny_dataset, video)
        ids = [int(i) for i in np.unique(gt[0]) if i not in (0, 255)]
        rows += [f"{video},{i},{'small' if i == 1 else 'regular'}" for i in ids]
        chosen = {i: (7.5, -4.0) if i == 1 else (20.0, -10.0) for i in ids}
        store.save_video_prediction(root / "per_type" / video, store.VideoPrediction(
            video, names, 64, 64, ids, {i: 0 for i in ids}, {i: clean_logits(gt == i).astype(np.float16) for i in ids},
            {i: np.ones(len(names), np.float32) for i in ids}, None, None, chosen))
    (tmp_path / "types.csv").write_text("\n".join(rows) + "\n")
    best = tmp_path / "best.yaml"
    best.write_text("default: {scale: 20, bias: -10}\ntypes:\n  small: {scale: 7.5, bias: -4}\n")
    result = run_ensemble(root, plan_from_dict({"method": "select"}), tiny_dataset, tmp_path / "out", split_list=tiny_dataset / "val.txt",
                          scene_types=tmp_path / "types.csv", best_configs=best, progress=False)
    assert result.problems == [] and result.zip_path.is_file()
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("default: {scale: 20, bias: -10}\ntypes:\n  small: {scale: 3, bias: -1}\n")
    with pytest.raises(MassegError, match="s7.5_b-4"):
        run_ensemble(root, plan_from_dict({"method": "select"}), tiny_dataset, tmp_path / "out2", split_list=tiny_dataset / "val.txt",
                     scene_types=tmp_path / "types.csv", best_configs=wrong, progress=False)


def test_video_stored_without_objects_is_written_as_background(tiny_dataset: Path, tmp_path: Path) -> None:
    video = layout.open_dataset(tiny_dataset, split="val").video_names[0]
    names, _ = read_ground_truth(tiny_dataset, video)
    store.save_video_prediction(tmp_path / "pred" / "s20_b-10" / video,
                                store.VideoPrediction(video, names, 64, 64, [], {}, {}, {}, 20.0, -10.0))
    result = run_ensemble(tmp_path / "pred", plan_from_dict({"method": "mean"}), tiny_dataset, tmp_path / "out", videos=[video],
                          progress=False)
    assert result.problems == [] and result.frames_written == len(names)
    assert not any(layout.read_mask(p).any() for p in (tmp_path / "out" / video).iterdir())


def test_given_mask_with_void_pixels_is_cleaned_not_copied(stored: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    """Frame 0 is the given mask restricted to the objects: a void (255) region becomes background."""
    import shutil

    video = layout.open_dataset(tiny_dataset).video_names[0]
    data = tmp_path / "data"
    for folder in (layout.IMAGE_DIR, layout.ANNOTATION_DIR):
        shutil.copytree(tiny_dataset / folder / video, data / folder / video)
    first = data / layout.ANNOTATION_DIR / video / "00000.png"
    given = layout.read_mask(first)
    given[:4, :4] = 255
    layout.write_mask(first, given)
    result = run_ensemble(stored, plan_from_dict({"method": "single", "configs": ["s20_b-10"]}), data, tmp_path / "out", progress=False)
    written = layout.read_mask(tmp_path / "out" / video / "00000.png")
    assert result.problems == [] and not written[:4, :4].any()
    assert np.array_equal(written[4:], given[4:]) and np.array_equal(written[:4, 4:], given[:4, 4:])


def test_select_with_a_learned_policy_reads_infer_policy_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    """A policy.yaml in place of best_configs.yaml: each object gets its leaf's config from the scene-type CSV's
    features, read from policy/ (infer --policy); a wrong policy is refused as for per_type/."""
    videos = layout.open_dataset(tiny_dataset, split="val").video_names
    root = tmp_path / "pred"
    rows = ["video,object_id,scene_type,compactness"]
    for video in videos:
        names, gt = read_ground_truth(tiny_dataset, video)
        ids = [int(i) for i in np.unique(gt[0]) if i not in (0, 255)]
        rows += [f"{video},{i},regular,{0.9 if i == 1 else 0.2}" for i in ids]
        chosen = {i: (7.5, -4.0) if i == 1 else (20.0, -10.0) for i in ids}
        store.save_video_prediction(root / "policy" / video, store.VideoPrediction(
            video, names, 64, 64, ids, {i: 0 for i in ids}, {i: clean_logits(gt == i).astype(np.float16) for i in ids},
            {i: np.ones(len(names), np.float32) for i in ids}, None, None, chosen))
    (tmp_path / "types.csv").write_text("\n".join(rows) + "\n")
    rules = ('features: [compactness]\ndefault: {scale: 20, bias: -10}\nrules:\n'
             '  - {leaf: leaf_1, when: ["compactness <= 0.5"], scale: 20, bias: -10}\n'
             '  - {leaf: leaf_2, when: ["compactness > 0.5"], scale: %s, bias: %s}\n')
    policy = tmp_path / "policy.yaml"
    policy.write_text(rules % (7.5, -4))
    result = run_ensemble(root, plan_from_dict({"method": "select"}), tiny_dataset, tmp_path / "out",
                          split_list=tiny_dataset / "val.txt", scene_types=tmp_path / "types.csv", best_configs=policy,
                          progress=False)
    assert result.problems == [] and result.zip_path.is_file()
    # object 1 (compactness 0.9) is looked up under leaf_2's 7.5/-4, the others under 20/-10: a policy that sends
    # object 1 elsewhere asks for a configuration policy/ does not hold for it
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(rules % (3, -1))
    with pytest.raises(MassegError, match="s7.5_b-4"):
        run_ensemble(root, plan_from_dict({"method": "select"}), tiny_dataset, tmp_path / "out2",
                     split_list=tiny_dataset / "val.txt", scene_types=tmp_path / "types.csv", best_configs=wrong,
                     progress=False)
