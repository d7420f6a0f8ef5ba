"""`infer --engine cutie`: Cutie (rf-cutie, a dependency) as a second model family stored as a view, offline.

Skipped only where rf-cutie is genuinely not installed (it is in pyproject's dependencies)."""
from __future__ import annotations

import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from masseg_search.cli import main
from masseg_search.data import layout
from masseg_search.ensemble import plan_from_dict, run_ensemble
from masseg_search.errors import MassegError
from masseg_search.store import predictions as store

pytest.importorskip("cutie.model.cutie", reason="rf-cutie is not installed (pip install rf-cutie)")  # cutie: a namespace package

from masseg_search.model.cutie_engine import CutieEngine, build_cutie, working_tokens  # noqa: E402

LOW_RES = 16


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any network access (an ImageNet or checkpoint download) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_cutie_view_is_stored_offline_and_fuses(tiny_dataset: Path, tmp_path: Path, offline: None) -> None:
    videos = layout.open_dataset(tiny_dataset, split="val").video_names[:2]
    split_list = tmp_path / "two.txt"
    layout.write_split_list(split_list, videos)
    out = tmp_path / "pred"
    assert main(["infer", "--engine", "cutie", "--view", "cutie", "--data", str(tiny_dataset), "--split-list",
                 str(split_list), "--out", str(out), "--low-res", str(LOW_RES), "--device", "cpu", "--threads", "1",
                 "--no-progress"]) == 0
    dataset = layout.open_dataset(tiny_dataset)
    for name in videos:
        prediction = store.load_video_prediction(out / "s20_b-10@cutie" / name)
        assert prediction.family == "cutie" and prediction.view == "cutie"
        start, first = dataset.video(name).first_annotation()
        ids = prediction.object_ids
        assert ids == sorted(int(i) for i in np.unique(first) if 0 < i < 255)
        assert prediction.logits[ids[0]].shape == (len(prediction.frame_names), LOW_RES, LOW_RES)
        # on the given frame Cutie's probabilities are the mask itself: the merge gives its area-argmax back
        low = np.stack([cv2.resize((first == k).astype(np.float32), (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA)
                        for k in [0, *ids]])
        ordered = np.sort(low, axis=0)
        sure = ordered[-1] > ordered[-2] + 0.05
        merged = store.merge_objects(np.stack([prediction.logits[i][start].astype(np.float32) for i in ids]), ids)
        np.testing.assert_array_equal(merged[sure], np.asarray([0, *ids])[np.argmax(low, axis=0)][sure])
    result = run_ensemble(out, plan_from_dict({"method": "single", "configs": ["s20_b-10@cutie"]}), tiny_dataset,
                          tmp_path / "subs" / "cutie", split_list=split_list, progress=False)
    assert result.problems == [] and result.zip_path is not None


def test_cutie_weights_load_from_a_path_and_wrong_ones_are_refused(tiny_dataset: Path, tmp_path: Path, offline: None) -> None:
    torch.manual_seed(0)
    network, cfg = build_cutie("small", None, "cpu")
    weights = tmp_path / "cutie-small.pth"
    torch.save(network.state_dict(), weights)
    torch.manual_seed(1)  # another random init: only the loaded weights can make the two agree
    loaded, _ = build_cutie("small", weights, "cpu")
    video = layout.open_dataset(tiny_dataset, split="val").video(layout.open_dataset(tiny_dataset, split="val").video_names[0])
    first = CutieEngine(network, cfg).predict_video(video, (LOW_RES, LOW_RES))
    second = CutieEngine(loaded, cfg).predict_video(video, (LOW_RES, LOW_RES))
    for object_id in first.object_ids:
        np.testing.assert_array_equal(first.logits[object_id], second.logits[object_id])
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in network.state_dict().items() if not k.startswith("mask_decoder")}, partial)
    with pytest.raises(MassegError, match="do not fit Cutie-small"):
        build_cutie("small", partial, "cpu")
    with pytest.raises(MassegError, match="not found"):
        build_cutie("small", tmp_path / "missing.pth", "cpu")


def test_cutie_config_leaves_sam2s_hydra_as_it_was() -> None:
    """sam2 keeps a global Hydra for its configs (initialised at import); composing Cutie's must not break it."""
    from hydra.core.global_hydra import GlobalHydra

    import sam2  # noqa: F401  (initialises Hydra for sam2's configs)
    from masseg_search.model.cutie_engine import cutie_config

    before = GlobalHydra.instance().hydra
    assert before is not None
    assert cutie_config("small").model.pixel_mean is not None
    assert GlobalHydra.instance().hydra is before


def test_cutie_working_tokens() -> None:
    assert working_tokens((64, 64), 480) == 16
    assert working_tokens((480, 854), 480) == 30 * 54
    assert working_tokens((960, 1708), 480) == 30 * 54  # shortest side brought to 480 first
