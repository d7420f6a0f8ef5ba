"""`infer`: the predictions layout, resume after a kill, bad videos, masks, per-type configurations, the CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from masseg_search.cli import main
from masseg_search.data.layout import open_dataset, read_mask, write_mask
from masseg_search.errors import MassegError
from masseg_search.config import load_config
from masseg_search.data.scene_types import save_scene_types, scene_type_table
from masseg_search.inference.infer import PER_TYPE_ID, POLICY_ID, run_inference, save_masks
from masseg_search.store.best_configs import BestConfigs, save_best_configs
from masseg_search.store.policy import load_policy
from masseg_search.store.predictions import META_FILE, is_complete, load_video_prediction, logits_to_mask


def test_predictions_layout_and_masks(tiny_dataset, tiny_checkpoint, tmp_path):
    out = run_inference("tiny64", tiny_checkpoint, tiny_dataset, tmp_path / "pred", "20,-10;7.5,-4",
                        split_list=tiny_dataset / "val.txt", save_masks=True, device="cpu", progress=False)
    dataset = open_dataset(tiny_dataset, split="val")
    for folder in ("s20_b-10", "s7.5_b-4"):
        for name in dataset.video_names:
            assert is_complete(out / folder / name)
            prediction = load_video_prediction(out / folder / name)
            video = dataset.video(name)
            assert prediction.logits[prediction.object_ids[0]].dtype == np.float16
            # SAM2's own confidence, for per-video-confidence: its IoU head per object and frame (1 where given)
            assert prediction.family == "sam2" and set(prediction.predicted_ious) == set(prediction.object_ids)
            for object_id, ious in prediction.predicted_ious.items():
                start = prediction.first_frames[object_id]
                assert ious.shape == (len(prediction.frame_names),) and ious[start] == 1.0 and np.isfinite(ious).all()
            masks = sorted((out / folder / "Annotations" / name).glob("*.png"))
            assert [p.stem for p in masks] == video.frame_names
            start, first_mask = video.first_annotation()
            np.testing.assert_array_equal(read_mask(masks[start]), first_mask)
            assert read_mask(masks[-1]).shape == first_mask.shape
    again = save_masks(out, "s20_b-10", tmp_path / "again", dataset)
    for name in dataset.video_names:
        for path in sorted((out / "s20_b-10" / "Annotations" / name).glob("*.png")):
            np.testing.assert_array_equal(read_mask(path), read_mask(again / "Annotations" / name / path.name))
    record = json.loads((out / "infer_run.json").read_text())
    assert record["configs"] == ["s20_b-10", "s7.5_b-4"] and record["model_config"] == "tiny64"


def test_resume_redoes_only_unfinished_videos(tiny_dataset, tiny_checkpoint, tmp_path):
    out = tmp_path / "pred"
    run_inference("tiny64", tiny_checkpoint, tiny_dataset, out, "20,-10", split_list=tiny_dataset / "val.txt",
                  device="cpu", progress=False)
    names = open_dataset(tiny_dataset, split="val").video_names
    half_written = out / "s20_b-10" / names[0]
    (half_written / META_FILE).unlink()  # what a kill between the object files and meta.json leaves
    stamps = {n: (out / "s20_b-10" / n / META_FILE).stat().st_mtime_ns for n in names[1:]}
    run_inference("tiny64", tiny_checkpoint, tiny_dataset, out, "20,-10", split_list=tiny_dataset / "val.txt",
                  device="cpu", progress=False)
    assert is_complete(half_written)
    assert stamps == {n: (out / "s20_b-10" / n / META_FILE).stat().st_mtime_ns for n in names[1:]}


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_with_the_same_result(tiny_dataset, tiny_checkpoint, tmp_path):
    """A real `kill -9` in the middle of a CLI run, then the same command again."""
    command = [sys.executable, "-m", "masseg_search", "infer", "--model-config", "tiny64", "--checkpoint",
               str(tiny_checkpoint), "--data", str(tiny_dataset), "--configs", "20,-10;7.5,-4", "--device", "cpu",
               "--no-progress"]
    reference = tmp_path / "reference"
    subprocess.run([*command, "--out", str(reference)], check=True, capture_output=True)
    out = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "s7.5_b-4").glob(f"*/{META_FILE}")):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    names = open_dataset(tiny_dataset).video_names
    assert not all(is_complete(out / "s7.5_b-4" / n) for n in names), "the run finished before the kill"
    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
    for folder in ("s20_b-10", "s7.5_b-4"):
        for name in names:
            ours, theirs = load_video_prediction(out / folder / name), load_video_prediction(reference / folder / name)
            for obj in ours.object_ids:
                np.testing.assert_array_equal(ours.logits[obj], theirs.logits[obj])


def _broken_copy(tiny_dataset: Path, root: Path) -> tuple[Path, str]:
    import shutil

    shutil.copytree(tiny_dataset, root)
    name = open_dataset(root, split="val").video_names[0]
    first = sorted((root / "Annotations" / name).glob("*.png"))[0]
    write_mask(first, np.zeros_like(read_mask(first)))
    return root, name


def test_bad_video_stops_the_run_or_is_skipped(tiny_dataset, tiny_checkpoint, tmp_path):
    root, bad = _broken_copy(tiny_dataset, tmp_path / "data")
    with pytest.raises(MassegError, match=bad):
        run_inference("tiny64", tiny_checkpoint, root, tmp_path / "a", "20,-10", split_list=root / "val.txt",
                      device="cpu", progress=False)
    out = run_inference("tiny64", tiny_checkpoint, root, tmp_path / "b", "20,-10", split_list=root / "val.txt",
                        device="cpu", skip_bad=True, save_masks=True, progress=False)
    names = open_dataset(root, split="val").video_names
    assert not (out / "s20_b-10" / bad).exists()
    assert all(is_complete(out / "s20_b-10" / n) for n in names if n != bad)


def test_per_type_gives_each_object_its_type_configuration(tiny_dataset, tiny_checkpoint, tmp_path):
    dataset = open_dataset(tiny_dataset, split="val")
    rows = []
    for name in dataset.video_names:
        _, mask = dataset.video(name).first_annotation()
        for index, obj in enumerate(sorted(int(i) for i in np.unique(mask) if i)):
            rows.append({"video": name, "object_id": obj, "scene_type": "small" if index % 2 else "regular"})
    types_csv = tmp_path / "types.csv"
    pd.DataFrame(rows).to_csv(types_csv, index=False)
    best = tmp_path / "best_configs.yaml"
    save_best_configs(best, BestConfigs(types={"small": (7.5, -4.0)}, default=(20.0, -10.0)))
    out = run_inference("tiny64", tiny_checkpoint, tiny_dataset, tmp_path / "pred", "20,-10",
                        split_list=tiny_dataset / "val.txt", per_type=best, scene_types=types_csv, device="cpu",
                        progress=False, save_masks=True)
    for row in rows:
        merged = load_video_prediction(out / PER_TYPE_ID / row["video"])
        expected = (7.5, -4.0) if row["scene_type"] == "small" else (20.0, -10.0)
        assert merged.object_configs[row["object_id"]].pair == expected
        if row["scene_type"] == "regular":  # these objects also ran under the shared 20,-10: the same logits
            shared = load_video_prediction(out / "s20_b-10" / row["video"])
            np.testing.assert_array_equal(merged.logits[row["object_id"]], shared.logits[row["object_id"]])
    assert (out / PER_TYPE_ID / "Annotations").is_dir()


def test_infer_policy_gives_each_object_its_leaf_configuration(tiny_dataset, tiny_checkpoint, tmp_path):
    """infer --policy policy.yaml (beside --per-type): every object also runs the configuration its first-frame
    features lead to, stored under policy/ next to per_type/ in the same engine pass."""
    table = scene_type_table(open_dataset(tiny_dataset, split="val"), load_config().scene_types)
    types_csv = save_scene_types(table, tmp_path / "types.csv")
    threshold = float(table["area_fraction"].median())
    policy_path = tmp_path / "policy.yaml"
    policy_path.write_text(f'features: [area_fraction]\ndefault: {{scale: 20, bias: -10}}\nrules:\n'
                           f'  - {{leaf: leaf_1, when: ["area_fraction <= {threshold!r}"], scale: 7.5, bias: -4}}\n'
                           f'  - {{leaf: leaf_2, when: ["area_fraction > {threshold!r}"], scale: 12, bias: -6}}\n')
    best = tmp_path / "best_configs.yaml"
    save_best_configs(best, BestConfigs(types={}, default=(20.0, -10.0)))
    out = tmp_path / "pred"
    assert main(["infer", "--model-config", "tiny64", "--checkpoint", str(tiny_checkpoint), "--data", str(tiny_dataset),
                 "--split-list", str(tiny_dataset / "val.txt"), "--per-type", str(best), "--policy", str(policy_path),
                 "--scene-types", str(types_csv), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    policy = load_policy(policy_path)
    chosen = {(row["video"], row["object_id"]): policy.config_for(row).pair for row in table.to_dict("records")}
    assert {(7.5, -4.0), (12.0, -6.0)} <= set(chosen.values())  # both leaves are used
    for video in table["video"].unique():
        learned = load_video_prediction(out / POLICY_ID / video)
        per_type = load_video_prediction(out / PER_TYPE_ID / video)
        assert {obj: knobs.pair for obj, knobs in learned.object_configs.items()} == {
            obj: chosen[(video, obj)] for obj in learned.object_ids}
        assert {knobs.pair for knobs in per_type.object_configs.values()} == {(20.0, -10.0)}
    assert json.loads((out / "infer_run.json").read_text())["policy"] == str(policy_path)


def test_logits_to_mask_matches_sam2_upsampling_and_non_overlap():
    """predictions.logits_to_mask against torch bilinear + SAM2's _apply_non_overlapping_constraints + > 0."""
    from sam2.modeling.sam2_base import SAM2Base

    generator = torch.Generator().manual_seed(0)
    for size in [(64, 80), (37, 50), (16, 16), (12, 9)]:  # up-, non-integer, same-size and down-sampling
        low = torch.randn(3, 1, 16, 16, generator=generator) * 5
        low[2, 0, :4] = -1024.0  # an absent object
        video_res = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        constrained = SAM2Base._apply_non_overlapping_constraints(None, video_res)
        expected = np.zeros(size, np.uint8)
        for index in reversed(range(3)):  # vos_inference's put_per_obj_mask
            expected[(constrained[index, 0] > 0).numpy()] = [1, 2, 5][index]
        ours = logits_to_mask(low[:, 0].numpy(), [1, 2, 5], *size)
        assert (ours == expected).mean() >= 0.9999, size


def test_cli_model_init_and_infer(tiny_dataset, tmp_path, capsys):
    checkpoint = tmp_path / "ckpt.pt"
    assert main(["model", "init", "--model-config", "tiny64", "--out", str(checkpoint), "--seed", "1"]) == 0
    assert main(["infer", "--model-config", "tiny64", "--checkpoint", str(checkpoint), "--data", str(tiny_dataset),
                 "--split-list", str(tiny_dataset / "test.txt"), "--configs", "20,-10", "--out", str(tmp_path / "p"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert list_complete(tmp_path / "p" / "s20_b-10")
    assert main(["infer", "--model-config", "tiny64", "--data", str(tiny_dataset), "--out", str(tmp_path / "q")]) == 1
    assert "nothing to run" in capsys.readouterr().err


def list_complete(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.is_dir() and is_complete(p)]


def test_resuming_with_another_model_is_an_error(tiny_dataset, tiny_checkpoint, tmp_path):
    from masseg_search.model.build import init_checkpoint

    out = tmp_path / "pred"
    run_inference("tiny64", tiny_checkpoint, tiny_dataset, out, "20,-10", videos=["video_0000"], device="cpu", progress=False)
    other = init_checkpoint("tiny64", tmp_path / "other.pt", seed=5)
    with pytest.raises(MassegError, match="another run.*checkpoint"):
        run_inference("tiny64", other, tiny_dataset, out, "7.5,-4", videos=["video_0000"], device="cpu", progress=False)
    run_inference("tiny64", tiny_checkpoint, tiny_dataset, out, "7.5,-4", videos=["video_0000"], device="cpu", progress=False)
    assert json.loads((out / "infer_run.json").read_text())["configs"] == ["s20_b-10", "s7.5_b-4"]


def test_views_store_other_checkpoints_and_the_mirror_beside_the_base(engine_videos, lively_checkpoint, tmp_path, capsys):
    """--view NAME and --flip write <config>@<view> folders (and per_type@<view>) with their own run records: another
    checkpoint goes under a view, never into the base view, and a view keeps its own model on resume."""
    from masseg_search.model.build import init_checkpoint

    out = tmp_path / "pred"
    videos = ["v0"]
    run_inference("tiny64", lively_checkpoint, engine_videos, out, "20,-10", videos=videos, device="cpu", progress=False)
    other = init_checkpoint("tiny64", tmp_path / "other.pt", seed=5)
    run_inference("tiny64", other, engine_videos, out, "20,-10", videos=videos, device="cpu", progress=False, view="trial2")
    best = tmp_path / "best_configs.yaml"
    save_best_configs(best, BestConfigs({}, (7.5, -4.0)))
    types = tmp_path / "types.csv"
    ids = open_dataset(engine_videos).video("v0").first_annotation()[1]
    pd.DataFrame({"video": "v0", "object_id": [int(i) for i in np.unique(ids) if 0 < i < 255],
                  "scene_type": "regular"}).to_csv(types, index=False)
    one = tmp_path / "one.txt"
    one.write_text("v0\n")
    assert main(["infer", "--model-config", "tiny64", "--checkpoint", str(lively_checkpoint), "--data", str(engine_videos),
                 "--split-list", str(one), "--configs", "20,-10", "--per-type", str(best), "--scene-types", str(types),
                 "--out", str(out), "--flip", "--device", "cpu", "--no-progress"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["per_type@flip", "s20_b-10", "s20_b-10@flip", "s20_b-10@trial2"]
    base = load_video_prediction(out / "s20_b-10" / "v0")
    mirrored = load_video_prediction(out / "s20_b-10@flip" / "v0")
    trial2 = load_video_prediction(out / "s20_b-10@trial2" / "v0")
    assert (mirrored.view, mirrored.flipped, trial2.view, trial2.flipped, base.view) == ("flip", True, "trial2", False, None)
    assert any(not np.array_equal(base.logits[i], trial2.logits[i]) for i in base.object_ids)
    assert any(not np.array_equal(base.logits[i], mirrored.logits[i]) for i in base.object_ids)
    per_type = load_video_prediction(out / "per_type@flip" / "v0")
    assert {i: c.pair for i, c in per_type.object_configs.items()} == {i: (7.5, -4.0) for i in per_type.object_ids}
    assert per_type.view == "flip"
    records = {p.name: json.loads(p.read_text()) for p in out.glob("infer_run*.json")}
    assert set(records) == {"infer_run.json", "infer_run@trial2.json", "infer_run@flip.json"}
    assert records["infer_run@trial2.json"]["checkpoint"] == str(other.resolve())
    assert records["infer_run@flip.json"]["flip"] is True and records["infer_run.json"]["view"] is None
    with pytest.raises(MassegError, match="another --view"):  # the base view keeps its model
        run_inference("tiny64", other, engine_videos, out, "7.5,-4", videos=videos, device="cpu", progress=False)
    with pytest.raises(MassegError, match="another run.*flip"):  # a mirrored view stays mirrored
        run_inference("tiny64", lively_checkpoint, engine_videos, out, "7.5,-4", videos=videos, device="cpu",
                      progress=False, view="flip")
    with pytest.raises(MassegError, match="not a view name"):
        run_inference("tiny64", lively_checkpoint, engine_videos, out, "7.5,-4", videos=videos, device="cpu",
                      progress=False, view="../up")
