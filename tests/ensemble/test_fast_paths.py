"""The fast paths of ensemble (table fusion, extents, box rendering into a reused mask, the given-frame check) give
exactly what the plain computations give."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from ensemble_store import clean_logits, read_ground_truth

from masseg_search.data import layout
from masseg_search.ensemble import FrameRenderer, FusedVideo, FusionRule, fuse_logits, fuse_video, video_masks
from masseg_search.ensemble.fuse import (
    _positive_rows_cols,
    _TableFusion,
    _vote_hitting_set,
    _vote_table,
    positive_extents,
    stored_extents,
)
from masseg_search.ensemble.render import _axis_table, _palette_largest_index
from masseg_search.store import predictions as store

EVERY_FLOAT16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)  # NaNs and infinities too


def _same_bits(expected: np.ndarray, got: np.ndarray) -> bool:
    """Equal bit for bit, NaN where NaN (whatever its payload)."""
    nan = np.isnan(expected)
    return bool(np.array_equal(nan, np.isnan(got)) and np.array_equal(expected.view(np.uint32)[~nan], got.view(np.uint32)[~nan]))


@pytest.mark.parametrize("method", ["mean", "logit-mean", "vote"])
@pytest.mark.parametrize("weights", [None, (0.5, 0.3, 0.2), (1.0, 3.0, 0.25)])
def test_table_fusion_gives_the_bits_of_fuse_logits_for_every_float16(method: str, weights: tuple | None) -> None:
    rng = np.random.default_rng(1)
    logits = [EVERY_FLOAT16] + [rng.permutation(EVERY_FLOAT16.ravel()).reshape(256, 256) for _ in range(2)]
    with np.errstate(invalid="ignore"):  # inf - inf in the logit mean
        expected = fuse_logits(logits, method, weights)
        got = np.full((256, 256), np.nan, np.float32)
        _TableFusion(method, 3, weights, got.size).fuse([values.view(np.uint16) for values in logits], got)
    assert _same_bits(expected, got)


@pytest.mark.parametrize("method", ["mean", "logit-mean"])
def test_table_fusion_adds_the_first_term_to_zero_as_fuse_logits_does(method: str) -> None:
    logits = [np.full((1, 2), -0.0, np.float16) for _ in range(3)]  # 0 + (-0) is +0: every later term keeps it
    expected = fuse_logits(logits, method)
    got = np.empty((1, 2), np.float32)
    _TableFusion(method, 3, None, got.size).fuse([values.view(np.uint16) for values in logits], got)
    assert not np.signbit(expected).any() and _same_bits(expected, got)


def test_table_fusion_writes_into_a_box_of_a_larger_array() -> None:
    rng = np.random.default_rng(2)
    logits = [rng.normal(0, 8, (20, 30)).astype(np.float16) for _ in range(2)]
    for method in ("mean", "vote"):
        out = np.full((40, 50), 7.0, np.float32)
        _TableFusion(method, 2, (2.0, 1.0), out.size).fuse([values[3:15, 4:29].view(np.uint16) for values in logits], out[5:17, 6:31])
        assert np.array_equal(out[5:17, 6:31], fuse_logits([values[3:15, 4:29] for values in logits], method, (2.0, 1.0)))
        out[5:17, 6:31] = 7.0
        assert (out == 7.0).all()  # nothing outside the box is touched


@pytest.mark.parametrize("count, weights, expected", [
    (3, None, (0, 1)), (2, None, (0,)), (3, (0.6, 0.2, 0.2), (0,)), (3, (1.0, 1.0, 3.0), (2,)), (1, None, (0,)),
    (2, (1.0, 1.0), (0,)), (5, None, (0, 1, 2)),
])
def test_vote_needs_only_the_configurations_every_majority_includes(count: int, weights: tuple | None, expected: tuple) -> None:
    table = _vote_table(count, weights)
    chosen = _vote_hitting_set(table)
    assert chosen == expected
    winning = [code for code in range(1 << count) if table[code] > 0]
    assert all(code & sum(1 << k for k in chosen) for code in winning)
    smaller = [set_ for size in range(len(chosen)) for set_ in itertools.combinations(range(count), size)]
    assert not any(all(code & sum(1 << k for k in set_) for code in winning) for set_ in smaller)


def test_a_vote_no_pattern_wins_never_shows_the_object() -> None:
    # weights (1, 1): one vote each, a strict majority needs both; with one configuration always negative, nothing wins
    logits = [np.full((2, 6, 6), 3.0, np.float16), np.full((2, 6, 6), -3.0, np.float16)]
    fused = FusedVideo("v", ["a", "b"], [1], {1: 0}, {1: FusionRule("vote", ("x", "y"))}, {1: logits})
    assert (fused.extents[1][:, 0] >= 0).all()  # config 0 is positive everywhere: a box is scanned
    assert not (fuse_logits(logits, "vote") > 0).any()


def _reference_mask(scores: list[np.ndarray], object_ids: list[int], height: int, width: int) -> np.ndarray:
    """The whole-frame computation the renderer restricts to boxes, in the same float32 operations: horizontal taps,
    then vertical, then SAM2's merge (the first highest score wins where it is above 0)."""
    rows, cols = _axis_table(scores[0].shape[0], height), _axis_table(scores[0].shape[1], width)
    upsampled = []
    for score in scores:
        score = score.astype(np.float32)
        horizontal = score[:, cols[0]] * cols[2] + score[:, cols[1]] * cols[3]
        upsampled.append(horizontal[rows[0]] * rows[2][:, None] + horizontal[rows[1]] * rows[3][:, None])
    stacked = np.stack(upsampled)
    winner = np.argmax(stacked, axis=0)
    best = np.take_along_axis(stacked, winner[None], axis=0)[0]
    return np.where(best > 0, np.asarray(object_ids, np.uint8)[winner], 0).astype(np.uint8)


def _blobs(rng: np.random.Generator, centres: list[tuple[float, float]], size: tuple[int, int]) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    return [((rng.uniform(2, 5) - np.hypot(yy - cy, xx - cx)) * rng.uniform(0.5, 4)).astype(np.float32) for cy, cx in centres]


@pytest.mark.parametrize("size", [(72, 96), (45, 77), (720, 1280)])
def test_renderer_gives_the_whole_frame_computation_exactly_and_reuses_its_mask(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    renderer = FrameRenderer(24, 32, *size)
    ids = [4, 1, 7, 2, 9]
    layouts = [
        [(6, 6), (6, 11), (6, 16), (18, 26), (18, 8)],  # a chain: 1st overlaps 2nd, 2nd overlaps 3rd, 1st not 3rd
        [(12, 16), (12, 16), (3, 3), (20, 28), (12, 17)],  # equal blobs (ties go to the earlier object) and overlaps
        [(2, 2), (21, 29), (2, 29), (21, 2), (12, 16)],  # apart: every object thresholded alone
        [(12, 16), (13, 17), (12, 15), (11, 16), (12, 16)],  # all on top of each other
    ]
    for centres in layouts + layouts[::-1]:  # the reused mask must be cleared where the previous frame painted
        scores = _blobs(rng, centres, (24, 32))
        if centres == layouts[1]:
            scores[1] = scores[0].copy()
        expected = _reference_mask(scores, ids, *size)
        objects = [(i, s, renderer.box((s > 0).any(axis=1), (s > 0).any(axis=0))) for i, s in zip(ids, scores)]
        assert np.array_equal(renderer.render(objects), expected)
        assert np.array_equal(renderer.render(objects, reuse=True), expected)
        assert set(np.unique(expected)) > {0}


def test_renderer_reused_mask_after_an_empty_frame() -> None:
    renderer = FrameRenderer(8, 8, 30, 30)
    blob = np.full((8, 8), -2.0, np.float32)
    blob[2:5, 2:5] = 3.0
    box = renderer.box((blob > 0).any(axis=1), (blob > 0).any(axis=0))
    assert renderer.render([(3, blob, box)], reuse=True).any()
    assert not renderer.render([(3, blob, None)], reuse=True).any()
    assert np.array_equal(renderer.render([(3, blob, box)], reuse=True), renderer.render([(3, blob, box)]))


def test_stored_extents_match_the_row_and_column_flags() -> None:
    rng = np.random.default_rng(3)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 6e-8, -6e-8], np.float16)
    for count in (1, 2, 3):
        arrays = []
        for _ in range(count):
            values = rng.normal(-6, 4, (6, 20, 30)).astype(np.float16)
            mask = rng.random(values.shape) < 0.02
            values[mask] = rng.choice(special, int(mask.sum()))
            values[2] = -1.0  # a frame where nothing is positive
            arrays.append(values)
        assert np.array_equal(stored_extents(arrays), positive_extents(*_positive_rows_cols(arrays)))
    # other dtypes go through the row and column flags (as floats: a NaN is not > 0, unlike its float16 bits)
    finite = [np.where(np.isnan(values), np.float16(-1.0), values) for values in arrays]
    assert np.array_equal(stored_extents([values.astype(np.float32) for values in finite]), stored_extents(finite))


@pytest.mark.parametrize("method, weights", [("vote", None), ("vote", (3.0, 1.0, 1.0, 1.0)), ("mean", (1.0, 2.0, 3.0, 4.0)),
                                             ("logit-mean", None), ("vote", None)])
def test_fused_frames_render_like_whole_frame_fusion(method: str, weights: tuple | None) -> None:
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:20, 0:26]
    sources = {}
    for object_id in (1, 2):
        configs = []
        for _ in range(4):
            frames = [(rng.uniform(2, 5) - np.hypot(yy - cy, xx - cx)) * rng.uniform(1, 6) for cy, cx in rng.uniform(3, 17, (5, 2))]
            configs.append(np.stack(frames).astype(np.float16))
        sources[object_id] = configs
    rule = FusionRule(method, ("a", "b", "c", "d"), weights)
    fused = FusedVideo("v", [f"{t:05d}" for t in range(5)], [1, 2], {1: 0, 2: 1}, {1: rule, 2: rule}, sources)
    renderer = FrameRenderer(20, 26, 50, 70)
    for t in range(5):
        present = [i for i in (1, 2) if t >= fused.first_frames[i]]
        whole = {i: fuse_logits(sources[i], method, weights)[t] for i in present}
        expected = _reference_mask([whole[i] for i in present], present, 50, 70) if present else np.zeros((50, 70), np.uint8)
        boxes = {i: tuple(int(v) for v in renderer.boxes(fused.extents[i])[t]) for i in (1, 2)}
        assert np.array_equal(renderer.render([(i, s, boxes[i]) for i, s in fused.frame(t)]), expected)


@pytest.mark.parametrize("late", [False, True])
def test_video_masks_reusing_one_array_give_the_masks_of_fresh_ones(late: bool, tiny_dataset: Path, tmp_path: Path) -> None:
    """An exact first frame sent as the file; a late-starting object (its given frame merged into a rendered one)."""
    dataset = layout.open_dataset(tiny_dataset)
    video = dataset.video(dataset.video_names[0])
    names, gt = read_ground_truth(tiny_dataset, video.name)
    ids = sorted(int(i) for i in np.unique(gt[0]) if i not in (0, 255))
    assert len(ids) >= 2
    first_frames = {i: 0 for i in ids} | ({ids[-1]: 3} if late else {})
    for config, gain in (("s20_b-10", 8.0), ("s7.5_b-4", 3.0)):
        logits = {i: clean_logits(gt == i, gain).astype(np.float16) for i in ids}
        if late:  # the late object is lost right after it is given: its given pixels must not stay in the reused mask
            logits[ids[-1]][:] = -5.0
        store.save_video_prediction(tmp_path / config / video.name, store.VideoPrediction(
            video.name, names, 64, 64, ids, first_frames, logits, {i: np.ones(len(names), np.float32) for i in ids},
            *store.parse_config_id(config).pair))
    rules = {i: FusionRule("mean", ("s20_b-10", "s7.5_b-4")) for i in ids}
    fresh = list(video_masks(fuse_video(tmp_path, video.name, rules), video, 64, 64))
    exact: set[str] = set()
    reused = [(name, None if mask is None else mask.copy())
              for name, mask in video_masks(fuse_video(tmp_path, video.name, rules), video, 64, 64, exact, reuse=True, given_as_file=True)]
    assert [name for name, _ in reused] == names
    for (name, mask), (_, expected) in zip(reused, fresh):
        if mask is None:  # the given PNG is written as it is
            assert name in exact and np.array_equal(layout.read_mask(video.annotation_path(name)), expected)
        else:
            assert name not in exact and np.array_equal(mask, expected)
    assert exact == (set() if late else {names[0]})  # with a late object, frames 0 and 3 merge given and rendered ids
    if late:
        assert (fresh[3][1] == ids[-1]).any() and not (fresh[4][1] == ids[-1]).any()


def test_palette_largest_index(tmp_path: Path) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[2:4, 3:5] = 6
    layout.write_mask(tmp_path / "m.png", mask)
    assert _palette_largest_index(tmp_path / "m.png", 10, 12) == 6
    assert _palette_largest_index(tmp_path / "m.png", 12, 10) is None  # another size: read_mask reports it
    from PIL import Image

    Image.fromarray(mask).save(tmp_path / "gray.png")
    assert _palette_largest_index(tmp_path / "gray.png", 10, 12) is None  # not a palette PNG
    assert _palette_largest_index(tmp_path / "missing.png", 10, 12) is None
    (tmp_path / "broken.png").write_bytes((tmp_path / "m.png").read_bytes()[:40])
    assert _palette_largest_index(tmp_path / "broken.png", 10, 12) is None


def test_frames_asked_in_any_order_are_fused_alike() -> None:
    """frame(t) fuses a window of frames ahead; asking out of order (or twice) fuses again what is needed."""
    rng = np.random.default_rng(5)
    frames = 2 * 8 + 3  # windows of 8 and a partial one
    sources = {i: [rng.normal(-1, 4, (frames, 12, 14)).astype(np.float16) for _ in range(3)] for i in (1, 2)}
    rule = FusionRule("mean", ("a", "b", "c"), (1.0, 2.0, 1.0))

    def scores(order: list[int]) -> dict[int, list[tuple[int, np.ndarray]]]:
        fused = FusedVideo("v", [f"{t:05d}" for t in range(frames)], [1, 2], {1: 0, 2: 0}, {1: rule, 2: rule}, sources)
        result = {}
        for t in order:
            result[t] = [(i, fuse_logits([values[t] for values in sources[i]], "mean", rule.weights), score.copy(), fused.extents[i][t])
                         for i, score in fused.frame(t)]
        return result

    in_order = scores(list(range(frames)))
    shuffled = scores([18, 3, 17, 0, 9, 9, 2, 16, 1] + list(range(frames))[::-1])
    for t, objects in in_order.items():
        assert [i for i, *_ in objects] == [i for i, *_ in shuffled[t]]
        for (_, whole, score, extent), (_, _, other, _) in zip(objects, shuffled[t]):
            r0, r1, c0, c1 = max(extent[0] - 1, 0), extent[1] + 2, max(extent[2] - 1, 0), extent[3] + 2
            assert np.array_equal(score[r0:r1, c0:c1], whole[r0:r1, c0:c1]) and np.array_equal(other[r0:r1, c0:c1], whole[r0:r1, c0:c1])
