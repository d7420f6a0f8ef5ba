"""One fine-tuning run on the tiny model: epochs, validation J&F, checkpoints the engine and plain SAM2 load, exact
resume, and the `train` command."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from masseg_search.cli import main
from masseg_search.config import ProjectConfig, config_from_dict
from masseg_search.errors import MassegError
from masseg_search.finetune.loop import BEST_CHECKPOINT, LAST_CHECKPOINT, lr_multiplier, train_run


def tiny_config(dataset: Path, checkpoint: Path, epochs: int = 2) -> ProjectConfig:
    return config_from_dict({
        "model": {"config": "tiny64", "checkpoint": str(checkpoint), "device": "cpu"},
        "data": {"root": str(dataset), "synth": None},
        "train": {"epochs": epochs, "iterations_per_epoch": 3, "num_frames": 4, "max_objects": 3,
                  "warmup_iterations": 1, "val_videos": 2, "lr": 3e-4, "vision_lr": None},
    })


@pytest.fixture(scope="module")
def two_epoch_run(tiny_dataset, tiny_checkpoint, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    return train_run(tiny_config(tiny_dataset, tiny_checkpoint), out, progress=False)


def test_run_validates_every_epoch_and_writes_sam2_checkpoints(two_epoch_run) -> None:
    result = two_epoch_run
    assert [record.epoch for record in result.history] == [1, 2]
    for record in result.history:
        assert 0.0 <= record.val_jf <= 1.0 and record.val_objects > 0
        assert record.steps == 3 * record.epoch and record.iterations_per_second > 0
        assert 0 < record.train_cpu_seconds < 10 * record.train_seconds  # one torch thread (conftest): CPU ~ wall
        assert set(record.loss_terms) == {"loss_mask", "loss_dice", "loss_iou", "loss_class", "loss_sim", "sim_anchors"}
    state = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "epoch", "steps", "loss", "best_meter_values"} <= set(state)
    assert state["epoch"] == 2 and state["steps"] == 6
    assert result.best_checkpoint == result.last_checkpoint.parent / BEST_CHECKPOINT
    assert result.best_val_jf == max(record.val_jf for record in result.history)
    with (result.out_dir / "history.csv").open() as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2]


def test_checkpoint_loads_into_the_engine_and_plain_sam2(two_epoch_run, tiny_dataset) -> None:
    from masseg_search.data.layout import open_dataset
    from masseg_search.model.build import build_model, build_plain_predictor
    from masseg_search.model.engine import MultiConfigEngine

    trained = torch.load(two_epoch_run.last_checkpoint, map_location="cpu", weights_only=True)["model"]
    model = build_model("tiny64", two_epoch_run.last_checkpoint, device="cpu")
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key
    plain = build_plain_predictor("tiny64", two_epoch_run.last_checkpoint)
    assert all(torch.equal(v, trained[k]) for k, v in plain.state_dict().items())
    dataset = open_dataset(tiny_dataset, split="val")
    video = dataset.video(dataset.video_names[0])
    object_ids = [int(i) for i in np.unique(video.first_annotation()[1]) if i]
    prediction = MultiConfigEngine(model, "cpu").predict_video(video, {i: [(20.0, -10.0)] for i in object_ids})["s20_b-10"]
    assert prediction.object_ids == object_ids
    assert prediction.logits[object_ids[0]].shape[0] == len(video.frame_paths)


class Killed(Exception):
    """Stands for the process dying right after a checkpoint was written."""


def _kill_after(epochs: int):
    def on_epoch(record, checkpoint_path) -> None:
        if record.epoch == epochs:
            raise Killed
    return on_epoch


def test_resume_repeats_a_straight_run(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    three = tiny_config(tiny_dataset, tiny_checkpoint, epochs=3)
    with pytest.raises(Killed):
        train_run(three, tmp_path / "resumed", on_epoch=_kill_after(2), progress=False)
    last = tmp_path / "resumed" / "checkpoints" / LAST_CHECKPOINT
    resumed = train_run(three, tmp_path / "resumed", resume_from=last, progress=False)
    assert [record.epoch for record in resumed.history] == [3]
    straight = train_run(three, tmp_path / "straight", progress=False)
    a = torch.load(resumed.last_checkpoint, weights_only=True)
    b = torch.load(straight.last_checkpoint, weights_only=True)
    assert a["steps"] == b["steps"] == 9
    for key, value in b["model"].items():
        torch.testing.assert_close(a["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert resumed.history[0].val_jf == pytest.approx(straight.history[-1].val_jf, abs=1e-6)


def test_history_of_an_older_run_keeps_its_columns(two_epoch_run, tmp_path) -> None:
    from masseg_search.finetune.loop import _append_history

    old_columns = ["epoch", "steps", "loss", "val_jf"]  # a run started before a column was added, then resumed
    path = tmp_path / "history.csv"
    path.write_text(",".join(old_columns) + "\n1,3,0.5,0.25\n")
    _append_history(path, two_epoch_run.history[-1])
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == old_columns and len(rows) == 3 and len(rows[2]) == len(old_columns)
    assert rows[2][0] == "2" and float(rows[2][3]) == pytest.approx(two_epoch_run.history[-1].val_jf)


def test_schedule_warms_up_then_decays_to_a_tenth() -> None:
    values = [lr_multiplier(step, 100, 10) for step in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:]))
    assert values[-1] == pytest.approx(0.1, abs=0.01)


def test_split_without_usable_clips_is_a_clear_error(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    config = tiny_config(tiny_dataset, tiny_checkpoint)
    config.train.num_frames = 50
    with pytest.raises(MassegError, match="num_frames"):
        train_run(config, tmp_path, progress=False)


def test_train_command_runs_and_refuses_to_overwrite(tiny_dataset, tiny_checkpoint, tmp_path, capsys) -> None:
    import yaml

    config = tiny_config(tiny_dataset, tiny_checkpoint, epochs=1).model_dump(by_alias=True, exclude={"source"})
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "val J&F" in capsys.readouterr().out
    assert (out / "checkpoints" / LAST_CHECKPOINT).is_file() and (out / "config.yaml").is_file()
    assert main(["train", "--config", str(path), "--out", str(out)]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--config", str(path), "--out", str(out), "--resume", "--no-progress"]) == 0  # done: no epoch
    assert np.isfinite(torch.load(out / "checkpoints" / LAST_CHECKPOINT, weights_only=True)["val_jf"])


def test_optimizer_decays_lr_down_the_trunk_and_spares_biases() -> None:
    from masseg_search.config import TrainSection
    from masseg_search.finetune.loop import build_optimizer, build_train_model

    train = TrainSection(lr=1e-3, vision_lr=5e-4, layer_decay=0.5, weight_decay=0.1)
    model = build_train_model("tiny64", None, train)
    optimizer = build_optimizer(model, train)
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    depth = model.image_encoder.trunk.get_num_layers() + 1
    first, last = "image_encoder.trunk.blocks.0.mlp.layers.0.weight", f"image_encoder.trunk.blocks.{depth - 2}.mlp.layers.0.weight"
    assert group_of[id(named[first])]["lr"] == pytest.approx(5e-4 * 0.5 ** (depth - 1))
    assert group_of[id(named[last])]["lr"] == pytest.approx(5e-4 * 0.5)
    assert group_of[id(named["image_encoder.neck.convs.0.conv.weight"])]["lr"] == pytest.approx(5e-4)
    assert group_of[id(named["sam_mask_decoder.iou_token.weight"])]["lr"] == pytest.approx(1e-3)
    assert group_of[id(named["image_encoder.trunk.pos_embed"])]["lr"] == pytest.approx(5e-4)
    assert group_of[id(named["sam_mask_decoder.iou_token.weight"])]["weight_decay"] == 0.1
    assert all(group_of[id(p)]["weight_decay"] == 0.0 for n, p in named.items() if n.endswith(".bias"))


def test_validation_never_scores_void_as_an_object(tiny_dataset, tiny_checkpoint, tmp_path) -> None:
    """A first frame with a void (255) band: validation tracks and scores its real objects only."""
    import shutil

    from masseg_search.data.layout import VOID_ID, open_dataset, read_mask, write_mask
    from masseg_search.finetune.loop import Validator
    from masseg_search.model.build import read_checkpoint

    root = tmp_path / "void"
    shutil.copytree(tiny_dataset, root)
    config = tiny_config(root, tiny_checkpoint)
    dataset = open_dataset(root, split=config.data.val_split)
    video = dataset.video(dataset.video_names[0])
    first_path = video.annotation_paths()[0]
    first = read_mask(first_path)
    first[:4] = VOID_ID
    write_mask(first_path, first)
    validator = Validator(config, "cpu")
    rows = validator.object_scores(read_checkpoint(tiny_checkpoint)["model"])
    scored = {row.object_id for row in rows if row.video == video.name}
    assert VOID_ID not in scored
    assert scored == {int(i) for i in np.unique(first) if 0 < i < VOID_ID}
