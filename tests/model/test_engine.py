"""The engine beyond parity: flat memory on long videos, the feature cache, input checks."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from masseg_search.data.layout import open_dataset, write_mask
from masseg_search.errors import MassegError
from masseg_search.model.build import build_model
from masseg_search.model.engine import FeatureCache, MultiConfigEngine, PerRowValue, check_video
from masseg_search.store.predictions import config_id


@pytest.fixture(scope="module")
def engine(lively_checkpoint):
    return MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu")


def test_memory_stays_flat_on_a_long_video(engine, tmp_path, video_writer):
    """300 frames: the engine holds at most the frames memory attention can read (SAM2 would hold all 300)."""
    root = video_writer(tmp_path, "long", frames=300, height=48, width=48, objects=1, vanish_after=None)
    model = engine.model
    window = max(model.memory_temporal_stride_for_eval * (model.num_maskmem - 2) + 1, model.max_obj_ptrs_in_encoder - 1)
    video = open_dataset(root).video("long")
    results = engine.predict_video(video, {1: [(20.0, -10.0), (7.5, -4.0)]})
    assert engine.peak_stored_frames <= window + 1  # + the conditioning frame
    assert results["s20_b-10"].logits[1].shape == (300, 16, 16)
    assert np.isfinite(results["s7.5_b-4"].logits[1].astype(np.float32)).all()


def test_feature_cache_gives_the_same_result_without_the_encoder(engine, engine_videos):
    video = open_dataset(engine_videos).video("v1")
    configs = {1: [(20.0, -10.0)], 2: [(7.5, -4.0), (20.0, -10.0)]}
    cache = FeatureCache(max_bytes=64 * 2**20)
    first = engine.predict_video(video, configs, feature_cache=cache)
    assert cache.misses == len(video.frame_paths) and cache.hits == 0 and len(cache) == len(video.frame_paths)
    calls = []
    original = engine.model.forward_image
    engine.model.forward_image = lambda images: calls.append(1) or original(images)
    try:
        second = engine.predict_video(video, configs, feature_cache=cache)
    finally:
        del engine.model.forward_image
    assert not calls and cache.hits == len(video.frame_paths)
    for key in first:
        for obj in first[key].object_ids:
            np.testing.assert_array_equal(first[key].logits[obj], second[key].logits[obj])
    assert set(first) == {"s20_b-10", "s7.5_b-4"} and first["s7.5_b-4"].object_ids == [2]


def test_feature_cache_respects_its_byte_budget():
    import torch

    cache = FeatureCache(max_bytes=1000)
    for index in range(5):
        cache.put(("v", index), [torch.zeros(100)])  # 400 bytes each
    assert cache.bytes <= 1000 and len(cache) == 2
    assert cache.get(("v", 4)) is not None and cache.get(("v", 0)) is None


def test_row_chunks_give_the_same_result(lively_checkpoint, engine_videos):
    video = open_dataset(engine_videos).video("v0")
    configs = {obj: [(20.0, -10.0), (7.5, -4.0)] for obj in (1, 2, 3)}
    model = build_model("tiny64", lively_checkpoint)
    whole = MultiConfigEngine(model, "cpu", logits_dtype=np.float32).predict_video(video, configs)
    chunked = MultiConfigEngine(model, "cpu", max_rows=4, logits_dtype=np.float32).predict_video(video, configs)
    for key in whole:
        for obj in whole[key].object_ids:
            np.testing.assert_allclose(whole[key].logits[obj], chunked[key].logits[obj], atol=1e-4)


def test_per_row_value_broadcasts_one_value_per_row():
    import torch

    value = PerRowValue(torch.tensor([1.0, 2.0]))
    masks = torch.ones(2, 1, 3, 3)
    assert value != 1.0 and not (PerRowValue(torch.tensor([1.0, 1.0])) != 1.0)
    assert (masks * value)[:, 0, 0, 0].tolist() == [1.0, 2.0]
    assert (masks + value)[:, 0, 0, 0].tolist() == [2.0, 3.0]


def _copy_video(source_root: Path, root: Path, name: str = "v1") -> Path:
    shutil.copytree(source_root / "JPEGImages" / name, root / "JPEGImages" / name)
    shutil.copytree(source_root / "Annotations" / name, root / "Annotations" / name)
    return root


def test_bad_inputs_are_clear_errors_naming_the_video(engine_videos, tmp_path):
    root = _copy_video(engine_videos, tmp_path / "missing")
    (root / "JPEGImages" / "v1" / "00003.jpg").unlink()
    with pytest.raises(MassegError, match=r"v1.*missing frames.*00003"):
        check_video(open_dataset(root).video("v1"))

    root = _copy_video(engine_videos, tmp_path / "empty")
    write_mask(root / "Annotations" / "v1" / "00000.png", np.zeros((48, 64), np.uint8))
    with pytest.raises(MassegError, match=r"v1.*mask is empty"):
        check_video(open_dataset(root).video("v1"))

    root = _copy_video(engine_videos, tmp_path / "sizes")
    Image.new("RGB", (32, 32)).save(root / "JPEGImages" / "v1" / "00004.jpg")
    with pytest.raises(MassegError, match=r"v1.*frame size"):
        check_video(open_dataset(root).video("v1"))

    root = _copy_video(engine_videos, tmp_path / "noframes")
    for path in (root / "JPEGImages" / "v1").iterdir():
        path.unlink()
    with pytest.raises(MassegError, match=r"v1.*no frames"):
        check_video(open_dataset(root).video("v1"))


def test_configurations_must_cover_exactly_the_first_mask_objects(engine, engine_videos):
    video = open_dataset(engine_videos).video("v1")
    with pytest.raises(MassegError, match=r"no configurations for objects \[2\]"):
        engine.predict_video(video, {1: [(20.0, -10.0)]})
    with pytest.raises(MassegError, match=r"objects \[7\] not in the first mask"):
        engine.predict_video(video, {1: [(20.0, -10.0)], 2: [(20.0, -10.0)], 7: [(1.0, 0.0)]})


def test_duplicate_configurations_run_once(engine, engine_videos):
    video = open_dataset(engine_videos).video("v1")
    results = engine.predict_video(video, {1: [(20, -10), (20.0, -10.0)], 2: [(7.5, -4)]})
    assert set(results) == {config_id(7.5, -4), config_id(20, -10)}
    assert results["s20_b-10"].object_ids == [1] and results["s20_b-10"].first_frames == {1: 0}


def _mirrored_copy(root: Path, name: str, out: Path) -> Path:
    """The video mirrored left-right, frames written losslessly (PNG) so the copy is exactly the mirror."""
    video = open_dataset(root).video(name)
    image_dir = out / "JPEGImages" / name
    image_dir.mkdir(parents=True)
    for path in video.frame_paths:
        Image.fromarray(np.asarray(Image.open(path).convert("RGB"))[:, ::-1]).save(image_dir / f"{path.stem}.png")
    start, first = video.first_annotation()
    write_mask(out / "Annotations" / name / f"{video.frame_names[start]}.png", first[:, ::-1])
    return out


def test_flip_tracks_the_mirrored_video_and_mirrors_the_logits_back(lively_checkpoint, engine_videos, tmp_path):
    """flip=True on a video equals the plain engine on its exact mirror, mirrored back (to float rounding: SAM2's
    resize of a mirrored image equals the mirrored resize up to the last bit), and differs from the plain run."""
    lossless = tmp_path / "lossless"  # the same frames as PNG, so both sides decode identical pixels
    video = open_dataset(engine_videos).video("v0")
    (lossless / "JPEGImages" / "v0").mkdir(parents=True)
    for path in video.frame_paths:
        Image.open(path).convert("RGB").save(lossless / "JPEGImages" / "v0" / f"{path.stem}.png")
    shutil.copytree(engine_videos / "Annotations" / "v0", lossless / "Annotations" / "v0")
    mirrored = _mirrored_copy(lossless, "v0", tmp_path / "mirrored")
    configs = {obj: [(20.0, -10.0), (7.5, -4.0)] for obj in (1, 2, 3)}
    plain = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu", logits_dtype=np.float32)
    flipped = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu", logits_dtype=np.float32, flip=True)
    by_flip = flipped.predict_video(open_dataset(lossless).video("v0"), configs)
    on_mirror = plain.predict_video(open_dataset(mirrored).video("v0"), configs)
    unflipped = plain.predict_video(open_dataset(lossless).video("v0"), configs)
    for key in ("s20_b-10", "s7.5_b-4"):
        for obj in (1, 2, 3):
            expected = on_mirror[key].logits[obj][:, :, ::-1]
            np.testing.assert_allclose(by_flip[key].logits[obj], expected, atol=2e-3, rtol=1e-4)
            assert (by_flip[key].logits[obj] > 0).sum() > 0
    differs = max(float(np.abs(by_flip["s20_b-10"].logits[o] - unflipped["s20_b-10"].logits[o]).max()) for o in (1, 2, 3))
    assert differs > 1e-2  # a real second view, not the same computation


def test_flip_keeps_feature_cache_entries_apart(lively_checkpoint, engine_videos):
    """A shared feature cache never serves the mirrored frame's features to the plain engine or back."""
    model = build_model("tiny64", lively_checkpoint)
    cache = FeatureCache(64 * 2**20)
    video = open_dataset(engine_videos).video("v1")
    configs = {1: [(20.0, -10.0)], 2: [(20.0, -10.0)]}
    plain_first = MultiConfigEngine(model, "cpu").predict_video(video, configs, feature_cache=cache)
    flipped = MultiConfigEngine(model, "cpu", flip=True).predict_video(video, configs, feature_cache=cache)
    fresh_flip = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu", flip=True).predict_video(video, configs)
    for obj in (1, 2):
        np.testing.assert_array_equal(flipped["s20_b-10"].logits[obj], fresh_flip["s20_b-10"].logits[obj])
        assert not np.array_equal(flipped["s20_b-10"].logits[obj], plain_first["s20_b-10"].logits[obj])
