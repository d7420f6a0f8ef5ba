"""Each fusion method on hand cases, and the box-restricted upsampling + merge against the full-frame reference."""
from __future__ import annotations

import math

import numpy as np
import pytest

from masseg_search.ensemble import FrameRenderer, fuse_logits
from masseg_search.store import predictions as store


def _one(value: float) -> np.ndarray:
    return np.full((1, 1, 1), value, np.float32)


def test_single_is_the_logits_unchanged() -> None:
    logits = np.array([[[1.5, -2.0]]], np.float16)
    assert np.array_equal(fuse_logits([logits], "single"), logits.astype(np.float32))
    assert np.array_equal(fuse_logits([logits], "mean"), logits.astype(np.float32))


def test_mean_averages_probabilities_and_returns_their_logit() -> None:
    fused = fuse_logits([_one(math.log(3.0)), _one(0.0)], "mean")  # p = (0.75 + 0.5) / 2 = 0.625
    assert fused.item() == pytest.approx(math.log(0.625 / 0.375), abs=1e-5)
    opposite = fuse_logits([_one(2.0), _one(-2.0)], "mean")
    assert opposite.item() == pytest.approx(0.0, abs=1e-5)


def test_mean_with_weights() -> None:
    fused = fuse_logits([_one(math.log(3.0)), _one(-math.log(3.0))], "mean", weights=(3.0, 1.0))  # 0.75*0.75 + 0.25*0.25
    expected = 0.75 * 0.75 + 0.25 * 0.25
    assert fused.item() == pytest.approx(math.log(expected / (1 - expected)), abs=1e-5)


def test_mean_of_saturated_logits_is_clipped_not_infinite() -> None:
    fused = fuse_logits([_one(-1024.0), _one(-1024.0)], "mean")
    assert np.isfinite(fused).all() and fused.item() == pytest.approx(math.log(1e-6 / (1 - 1e-6)), rel=1e-3)


def test_logit_mean_is_the_weighted_mean_of_logits() -> None:
    assert fuse_logits([_one(4.0), _one(-1.0)], "logit-mean").item() == pytest.approx(1.5)
    assert fuse_logits([_one(4.0), _one(-1.0)], "logit-mean", weights=(1.0, 4.0)).item() == pytest.approx(0.0)


def test_vote_is_a_strict_majority() -> None:
    assert fuse_logits([_one(1.0), _one(-5.0), _one(0.1)], "vote").item() == pytest.approx(2 / 3 - 0.5)
    assert fuse_logits([_one(9.0), _one(-0.1), _one(-0.1)], "vote").item() < 0  # one strong vote loses
    assert fuse_logits([_one(1.0), _one(-1.0)], "vote").item() == 0.0  # a tie is not foreground (merge needs > 0)
    assert fuse_logits([_one(1.0), _one(-1.0)], "vote", weights=(2.0, 1.0)).item() == pytest.approx(2 / 3 - 0.5)


def test_vote_differs_from_mean_when_one_config_is_very_sure() -> None:
    logits = [_one(50.0), _one(-1.0), _one(-1.0)]
    assert fuse_logits(logits, "mean").item() > 0 and fuse_logits(logits, "logit-mean").item() > 0
    assert fuse_logits(logits, "vote").item() < 0


def _render(scores: list[np.ndarray], ids: list[int], height: int, width: int) -> np.ndarray:
    renderer = FrameRenderer(scores[0].shape[0], scores[0].shape[1], height, width)
    return renderer.render([(i, s, renderer.box((s > 0).any(axis=1), (s > 0).any(axis=0))) for i, s in zip(ids, scores)])


@pytest.mark.parametrize("size", [(64, 64), (45, 77), (720, 1280), (30, 20)])
def test_renderer_matches_full_frame_upsampling_and_merge(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    height, width = size
    yy, xx = np.mgrid[0:16, 0:16]
    scores = []
    for _ in range(4):  # blobs (with noise) that overlap, one touching the border
        cy, cx, radius = rng.uniform(0, 16), rng.uniform(0, 16), rng.uniform(1, 6)
        scores.append(((radius - np.hypot(yy - cy, xx - cx)) + rng.normal(0, 0.3, (16, 16))).astype(np.float32))
    ids = [3, 1, 7, 2]
    mine = _render(scores, ids, height, width)
    reference = store.logits_to_mask(np.stack(scores), ids, height, width)
    # same rule; both bilinear with half-pixel centres, so only float rounding at an exact tie could differ
    assert np.mean(mine != reference) < 1e-4
    assert set(np.unique(mine)) <= {0, *ids}


def test_renderer_absent_objects_and_ties() -> None:
    negative = np.full((8, 8), -3.0, np.float32)
    assert not _render([negative, negative], [1, 2], 20, 20).any()
    blob = np.full((8, 8), -3.0, np.float32)
    blob[2:5, 2:5] = 4.0
    mask = _render([blob, blob.copy()], [5, 6], 20, 20)
    assert set(np.unique(mask)) == {0, 5}  # equal scores: the object listed first wins, as argmax does
    assert np.array_equal(mask, store.logits_to_mask(np.stack([blob, blob]), [5, 6], 20, 20))


@pytest.mark.parametrize("method", ["mean", "logit-mean", "vote"])
def test_fusing_each_frame_only_near_positive_pixels_changes_no_mask(method: str) -> None:
    """FusedVideo (per frame, boxes around positive pixels, a reused buffer) renders like fuse_logits on whole frames."""
    from masseg_search.ensemble import FusedVideo, FusionRule

    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:24, 0:24]
    sources = {}
    for object_id in (1, 2, 3):
        centres = rng.uniform(3, 21, (6, 2))
        configs = []
        for _ in range(3):  # the configs roughly agree: jittered centre, radius and gain
            frames = [(rng.uniform(2, 6) - np.hypot(yy - cy - rng.uniform(-2, 2), xx - cx - rng.uniform(-2, 2))) * rng.uniform(1, 8)
                      for cy, cx in centres]
            configs.append(np.stack(frames).astype(np.float16))
        configs[0][2] = -20.0  # a frame where one config sees nothing
        sources[object_id] = configs
    rule = FusionRule(method, ("a", "b", "c"))
    fused = FusedVideo("v", [f"{t:05d}" for t in range(6)], [1, 2, 3], {1: 0, 2: 0, 3: 4}, {i: rule for i in sources}, sources)
    renderer = FrameRenderer(24, 24, 70, 90)
    for t in range(6):
        whole = [(i, fuse_logits(c, method)[t]) for i, c in sources.items() if not (i == 3 and t < 4)]
        expected = renderer.render([(i, s, renderer.box((s > 0).any(axis=1), (s > 0).any(axis=0))) for i, s in whole])
        boxes = {i: renderer.boxes(fused.extents[i])[t] for i in sources}  # from every config's positives: larger
        assert np.array_equal(renderer.render([(i, s, tuple(boxes[i])) for i, s in fused.frame(t)]), expected)
        assert expected.any() and (3 in expected) == (t >= 4)  # object 3 is absent before its first frame
