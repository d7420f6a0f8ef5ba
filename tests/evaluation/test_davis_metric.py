"""The DAVIS J&F metric: hand-worked cases, the boundary rule, statistics, and fast == plain bit for bit."""
from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from masseg_search.errors import MassegError
from masseg_search.evaluation import FrameScorer, first_frame_object_ids, score_video
from masseg_search.evaluation.kernels import compiled, score_frame_fast
from masseg_search.evaluation.kernels import packed as packed_kernel
from masseg_search.evaluation.kernels.boxes import Workspace, _runs, object_boxes_tight
from masseg_search.evaluation.kernels.boxes import object_boxes_and_check as _object_boxes_and_check
from masseg_search.evaluation.kernels.crop import boundary_f, boundary_map_fast
from masseg_search.evaluation.kernels.disk import footprint_plan as _footprint_plan
from masseg_search.evaluation.kernels.packed import dilate_packed, object_counts
from masseg_search.evaluation.kernels.packed import disk_program as _bit_program
from masseg_search.evaluation.metric import boundary_radius, davis_statistics, disk_footprint, nonzero_ids, score_frame_plain, seg2bmap

# the fast path's kernels: the compiled one where it is built (test_compiled_kernel.py fails when it is not)
KERNEL_MATCHERS = ["bits"] + (["compiled"] if compiled.kernel is not None else [])


def frame_scores(gt: np.ndarray, pred: np.ndarray, object_ids: list[int]) -> tuple[list[float], list[float]]:
    """J and F of one frame by the fast path, after checking the plain path and every kernel agree exactly."""
    radius = boundary_radius(*gt.shape)
    fast = score_frame_fast(gt, pred, object_ids, radius)
    assert fast == score_frame_plain(gt, pred, object_ids)
    for matcher in KERNEL_MATCHERS:
        assert score_frame_fast(gt, pred, object_ids, radius, matcher) == fast
    return fast


# --------------------------------------------------------------------------------------------- hand-worked cases
def test_empty_vs_empty_scores_one() -> None:
    gt = np.zeros((10, 12), np.uint8)
    gt[2:4, 2:4] = 1  # object 1 present, object 2 absent in both
    assert frame_scores(gt, gt.copy(), [1, 2]) == ([1.0, 1.0], [1.0, 1.0])


def test_one_side_empty_scores_zero() -> None:
    gt = np.zeros((10, 12), np.uint8)
    gt[2:5, 3:7] = 1
    pred = np.zeros_like(gt)
    pred[6:9, 1:4] = 2
    # object 1 missed (P empty), object 2 hallucinated (G empty): J = 0 and F = 0 for both
    assert frame_scores(gt, pred, [1, 2]) == ([0.0, 0.0], [0.0, 0.0])


def test_full_frame_masks_have_no_boundary() -> None:
    full = np.ones((9, 11), np.uint8)
    assert not seg2bmap(full).any()
    assert frame_scores(full, full.copy(), [1]) == ([1.0], [1.0])
    partial = np.zeros_like(full)
    partial[:, :5] = 1
    j_values, f_values = frame_scores(full, partial, [1])
    assert j_values == [45 / 99]
    assert f_values == [0.0]  # G boundary empty, P boundary not: precision 0


def test_border_touching_rectangle_boundary_and_scores() -> None:
    gt = np.zeros((6, 8), np.uint8)
    gt[3:6, 4:8] = 1  # touches the bottom and right borders
    expected = np.zeros((6, 8), bool)
    expected[2, 3:8] = True  # above (and above-left), last column: lower neighbour only
    expected[3:6, 3] = True  # left of it, last row: right neighbour only
    assert np.array_equal(seg2bmap(gt), expected)
    assert np.array_equal(boundary_map_fast(gt.astype(bool)).astype(bool), expected)

    pred = np.zeros_like(gt)
    pred[3:6, 3:7] = 1  # one pixel to the left, no longer touching the right border
    # radius ceil(0.008 * 10) = 1: a plus-shaped disk; 9 of 11 predicted boundary pixels and 8 of 8 ground-truth
    # boundary pixels are matched (worked by hand in the module's notes), overlap 9 of a 15-pixel union.
    assert boundary_radius(6, 8) == 1.0
    j_values, f_values = frame_scores(gt, pred, [1])
    precision, recall = 9 / 11.0, 8 / 8.0
    assert j_values == [9 / 15]
    assert f_values == [2 * precision * recall / (precision + recall)]
    assert f_values[0] == pytest.approx(0.9, abs=1e-15)


def test_radius_at_480p_and_1080p() -> None:
    assert boundary_radius(480, 854) == 8.0
    assert boundary_radius(1080, 1920) == 18.0
    assert boundary_radius(720, 1280) == 12.0


def test_1080p_boundary_matched_exactly_at_the_radius() -> None:
    gt = np.zeros((1080, 1920), np.uint8)
    gt[:, :960] = 1  # boundary: column 959
    at_radius, beyond = np.zeros_like(gt), np.zeros_like(gt)
    at_radius[:, :978] = 1  # boundary 18 px away: inside the disk
    beyond[:, :979] = 1  # 19 px away: outside
    for matcher in ["auto", *KERNEL_MATCHERS]:
        assert score_frame_fast(gt, at_radius, [1], 18.0, matcher)[1] == [1.0]
        assert score_frame_fast(gt, beyond, [1], 18.0, matcher)[1] == [0.0]


def test_void_pixels_count_as_background() -> None:
    gt = np.zeros((8, 8), np.uint8)
    gt[1:3, 1:6] = 1  # 10 object pixels
    gt[5:6, 1:6] = 255  # 5 void pixels
    pred = np.zeros_like(gt)
    pred[1:3, 1:6] = 1
    pred[5:6, 1:6] = 1  # predicting the object on void is a false positive, as in the official code
    j_values, _ = frame_scores(gt, pred, [1])
    assert j_values == [10 / 15]
    assert score_frame_plain(np.where(gt == 255, 0, gt).astype(np.uint8), pred, [1]) == score_frame_plain(gt, pred, [1])


def test_ids_not_in_first_frame_are_background() -> None:
    masks = np.zeros((4, 6, 6), np.uint8)
    masks[:, 1:3, 1:3] = 1
    masks[2, 4:6, 4:6] = 2  # a late object: not scored, and its pixels are background for object 1
    scores = score_video(masks, np.where(masks == 2, 0, masks).astype(np.uint8))
    assert scores.object_ids == [1]
    assert scores.frame_names == ["00001", "00002"]
    assert scores.j.tolist() == [[1.0, 1.0]]


# ------------------------------------------------------------------------------------------------ statistics
def test_statistics_hand_worked() -> None:
    values = np.array([1, 1, 1, 0.5, 0.5, 0, 0, 0.3])
    mean, recall, decay = davis_statistics(values)
    assert mean == np.mean(values)
    assert recall == 3 / 8
    # bin edges round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7: first bin values[0:3], last bin values[5:8]
    assert decay == pytest.approx(1.0 - 0.1, abs=1e-15)


def test_decay_is_correct_for_long_sequences() -> None:
    values = np.zeros(300)
    values[:76] = 1.0  # edges 0, 75, 150, 224, 299: the first bin is exactly values[0:76]
    assert davis_statistics(values)[2] == 1.0
    values = np.linspace(0, 1, 260)
    edges = (np.round(np.linspace(1, 260, 5) + 1e-10) - 1).astype(int)
    expected = values[edges[0] : edges[1] + 1].mean() - values[edges[3] : edges[4] + 1].mean()
    assert davis_statistics(values)[2] == pytest.approx(expected, abs=0)


# ------------------------------------------------------------------------------------------------- errors
def test_score_video_rejects_unknown_ids_and_bad_shapes() -> None:
    gt = np.zeros((4, 6, 6), np.uint8)
    gt[:, 1:3, 1:3] = 1
    pred = gt.copy()
    pred[1, 4, 4] = 3
    with pytest.raises(MassegError, match=r"id\(s\) \[3\] are not in the ground truth"):
        score_video(gt, pred)
    with pytest.raises(MassegError, match="frames"):
        score_video(gt[:2], pred[:2])
    with pytest.raises(MassegError, match="uint8"):
        score_video(gt.astype(np.int32), gt)
    with pytest.raises(MassegError, match="ground-truth frames"):
        score_video(gt, gt[:3])


# ----------------------------------------------------------------------------------------- definition checks
def literal_boundary(mask: np.ndarray) -> np.ndarray:
    """The boundary rule pixel by pixel, straight from its statement."""
    height, width = mask.shape
    out = np.zeros((height, width), bool)
    for y in range(height):
        for x in range(width):
            if y == height - 1 and x == width - 1:
                continue
            if y == height - 1:
                neighbours = [(y, x + 1)]
            elif x == width - 1:
                neighbours = [(y + 1, x)]
            else:
                neighbours = [(y, x + 1), (y + 1, x), (y + 1, x + 1)]
            out[y, x] = any(mask[y, x] != mask[ny, nx] for ny, nx in neighbours)
    return out


binary_masks = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(lambda shape: arrays(np.bool_, shape))


@settings(max_examples=150, deadline=None)
@given(binary_masks)
def test_boundary_maps_follow_the_rule(mask: np.ndarray) -> None:
    expected = literal_boundary(mask)
    assert np.array_equal(seg2bmap(mask), expected)
    assert np.array_equal(boundary_map_fast(mask).astype(bool), expected)


@pytest.mark.parametrize("radius", [0.5, 1.0, 2.0, 3.0, 7.837, 8.0, 12.0, 17.62, 18.0])
def test_disk_footprint_equals_scikit_image(radius: float) -> None:
    from skimage.morphology import disk

    assert np.array_equal(disk_footprint(radius), disk(radius).astype(np.uint8))


@st.composite
def frame_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """Random ground truth (with void) and prediction of 1-4 objects: noise, rectangles, full and empty masks."""
    height, width = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    objects = draw(st.integers(1, 4))
    frames = []
    for allow_void in (True, False):
        style = draw(st.sampled_from(["noise", "rectangles", "full", "empty"]))
        if style == "noise":
            alphabet = list(range(objects + 1)) + ([255] if allow_void else [])
            frame = draw(arrays(np.uint8, (height, width), elements=st.sampled_from(alphabet)))
        else:
            frame = np.zeros((height, width), np.uint8)
            if style == "full":
                frame[:] = draw(st.integers(1, objects))
            elif style == "rectangles":
                for object_id in range(1, objects + 1):
                    y0, x0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
                    y1, x1 = draw(st.integers(y0 + 1, height)), draw(st.integers(x0 + 1, width))
                    frame[y0:y1, x0:x1] = object_id
        frames.append(frame)
    if draw(st.booleans()):  # a near copy: shared boundaries, the common case for good predictions
        frames[1] = np.where(frames[0] == 255, 0, frames[0]).astype(np.uint8)
        for _ in range(draw(st.integers(0, 3))):
            frames[1][draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))] = draw(st.integers(0, objects))
    radius = draw(st.sampled_from([None, 0.0, 1.0, 2.0, 3.0, 5.0, 8.0]))
    return frames[0], frames[1], radius


@settings(max_examples=300, deadline=None)
@given(frame_pairs())
def test_fast_path_equals_plain_bit_for_bit(case: tuple[np.ndarray, np.ndarray, float | None]) -> None:
    gt, pred, radius = case
    radius = boundary_radius(*gt.shape) if radius is None else radius
    object_ids = [1, 2, 3, 4]
    expected = score_frame_plain(gt, pred, object_ids, radius)
    for matcher in ("auto", "dilate", "integral", *KERNEL_MATCHERS):
        assert score_frame_fast(gt, pred, object_ids, radius, matcher) == expected


def scattered_frame(rng: np.random.Generator, shape: tuple[int, int], ids: list[int]) -> np.ndarray:
    """A frame of blobs (ellipses, rectangles, single pixels) of the given ids, some touching the borders."""
    frame = np.zeros(shape, np.uint8)
    height, width = shape
    for object_id in ids:
        for _ in range(int(rng.integers(1, 3))):
            cy, cx = int(rng.integers(-5, height + 5)), int(rng.integers(-5, width + 5))
            kind = rng.integers(3)
            if kind == 0:
                axes = (int(rng.integers(1, width // 3 + 2)), int(rng.integers(1, height // 3 + 2)))
                cv2.ellipse(frame, (cx, cy), axes, float(rng.integers(180)), 0, 360, int(object_id), -1)
            elif kind == 1:
                frame[max(cy, 0) : cy + int(rng.integers(1, 40)), max(cx, 0) : cx + int(rng.integers(1, 60))] = object_id
            else:
                frame[min(max(cy, 0), height - 1), min(max(cx, 0), width - 1)] = object_id
    return frame


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_equals_plain_on_larger_scattered_frames(seed: int) -> None:
    """Many objects, several islands per frame, objects split over islands, borders, void: DAVIS's 480p radius."""
    rng = np.random.default_rng(seed)
    shape = (96 + 7 * seed, 171 - 5 * seed)
    object_ids = [1, 2, 3, 5, 9]
    gt = scattered_frame(rng, shape, object_ids + [7, 255])  # 7: not an object; 255: void
    pred = scattered_frame(rng, shape, object_ids + [4])  # 4: not an object (the scorer itself does not check)
    for radius in (boundary_radius(*shape), 8.0, 18.0):
        expected = score_frame_plain(gt, pred, object_ids, radius)
        for matcher in ["auto", *KERNEL_MATCHERS]:
            assert score_frame_fast(gt, pred, object_ids, radius, matcher) == expected


def test_bits_matcher_needs_a_symmetric_disk() -> None:
    gt = np.zeros((6, 6), np.uint8)
    gt[1:4, 1:4] = 1
    assert _bit_program(7.837) is None
    for matcher in ("bits", "compiled"):
        with pytest.raises(ValueError, match="matcher='dilate'"):
            score_frame_fast(gt, gt, [1], 7.837, matcher=matcher)
    assert score_frame_fast(gt, gt, [1], 7.837) == score_frame_plain(gt, gt, [1], 7.837)


@settings(max_examples=200, deadline=None)
@given(
    arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 30))),
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0, 12.0]),
)
def test_packed_dilation_equals_opencv_dilation(bitmap: np.ndarray, radius: float) -> None:
    """Rows packed with enough free columns on the right dilate exactly like cv2.dilate by the same disk."""
    program = _bit_program(radius)
    rows, cols = bitmap.shape
    stride = (cols + program.pad + 7) & ~7
    canvas = np.zeros((rows, stride), np.bool_)
    canvas[:, :cols] = bitmap
    packed = int.from_bytes(np.packbits(canvas, bitorder="little"), "little")
    dilated = dilate_packed(packed, stride, program)
    size = max(rows * stride // 8, (dilated.bit_length() + 7) // 8)  # spill below the last row is kept
    unpacked = np.unpackbits(np.frombuffer(dilated.to_bytes(size, "little"), np.uint8), bitorder="little")
    expected = cv2.dilate(bitmap.astype(np.uint8), disk_footprint(radius)).astype(bool)
    assert np.array_equal(unpacked[: rows * stride].reshape(rows, stride)[:, :cols], expected)


@st.composite
def label_frames(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth (void and non-object ids allowed) and prediction made of rectangles and single pixels."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    frames = []
    for alphabet in ([1, 2, 3, 6, 200, 255], [1, 2, 3, 6, 9]):  # 200, 9: ids of no object; 255: void
        frame = np.zeros((height, width), np.uint8)
        for _ in range(draw(st.integers(0, 6))):
            y0, x0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
            y1, x1 = draw(st.integers(y0 + 1, height)), draw(st.integers(x0 + 1, width))
            frame[y0:y1, x0:x1] = draw(st.sampled_from(alphabet))
        frames.append(frame)
    return frames[0], frames[1]


@settings(max_examples=300, deadline=None)
@given(label_frames())
def test_tight_boxes_equal_brute_force(frames: tuple[np.ndarray, np.ndarray]) -> None:
    gt, pred = frames
    object_ids = [3, 1, 6, 2, 4]  # 4 never drawn; not sorted
    expected = []
    for object_id in object_ids:
        rows, cols = np.nonzero((gt == object_id) | (pred == object_id))
        expected.append((rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) if len(rows) else None)
    workspace = Workspace()
    assert object_boxes_tight(gt, pred, object_ids, workspace) == expected
    assert object_boxes_tight(gt, pred, object_ids, workspace) == expected  # the reused scratch buffer


def test_tight_boxes_of_a_four_by_one_piece() -> None:
    """OpenCV reads a 4x1 array as a Scalar: the box pass must not compare such a piece with cv2.compare."""
    gt, pred = np.zeros((4, 1), np.uint8), np.array([[2], [1], [1], [1]], np.uint8)
    assert object_boxes_tight(gt, pred, [1, 2, 3]) == [(1, 4, 0, 1), (0, 1, 0, 1), None]
    assert score_frame_fast(gt, pred, [1, 2], 1.0, "bits") == score_frame_plain(gt, pred, [1, 2], 1.0)


@settings(max_examples=300, deadline=None)
@given(label_frames(), st.sets(st.sampled_from([1, 2, 3, 6, 9, 200]), max_size=5))
def test_box_pass_finds_predicted_ids_that_are_no_object(frames: tuple[np.ndarray, np.ndarray], objects: set[int]) -> None:
    """The box pass flags exactly the predictions holding a non-zero id outside the objects (lone pieces, pieces
    where ids mix, ids between two objects' ids), so the evaluator's id check costs no pass of its own."""
    gt, pred = frames
    object_ids = sorted(objects)
    unknown = set(int(v) for v in np.unique(pred)) - {0} - set(object_ids)
    boxes, found = _object_boxes_and_check(gt, pred, object_ids)
    assert found == bool(unknown)
    assert boxes == object_boxes_tight(gt, pred, object_ids)
    if compiled.kernel is not None:
        assert compiled.kernel.frame_counts(gt, pred, object_ids, (0,), (0,))[1] == bool(unknown)
    for method, kernel in (("fast", compiled.kernel), ("fast", None), ("plain", None)):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(compiled, "kernel", kernel)  # None: the pure-Python kernel
            scorer = FrameScorer(*gt.shape, object_ids, method)
            if unknown:
                with pytest.raises(MassegError, match=re.escape(f"id(s) {sorted(unknown)} are not in")) as raised:
                    scorer.add(gt, pred, check_ids=True, where="frame.png")
                assert "frame.png" in str(raised.value)
            else:
                scorer.add(gt, pred, check_ids=True, where="frame.png")
                assert (scorer.j_rows, scorer.f_rows) == tuple([values] for values in score_frame_plain(gt, pred, object_ids))


def brute_force_counts(gt: np.ndarray, pred: np.ndarray, object_id: int, radius: float) -> tuple[int, ...]:
    """``object_counts``' six numbers from full-frame masks, ``seg2bmap`` and ``cv2.dilate``."""
    gt_mask, pred_mask = gt == object_id, pred == object_id
    gt_boundary, pred_boundary = seg2bmap(gt_mask), seg2bmap(pred_mask)
    footprint = disk_footprint(radius)
    gt_dilated = cv2.dilate(gt_boundary.astype(np.uint8), footprint).astype(bool)
    pred_dilated = cv2.dilate(pred_boundary.astype(np.uint8), footprint).astype(bool)
    pred_count, gt_count = int(pred_boundary.sum()), int(gt_boundary.sum())
    matched = (int((pred_boundary & gt_dilated).sum()), int((gt_boundary & pred_dilated).sum())) if pred_count and gt_count else (0, 0)
    return (int((gt_mask & pred_mask).sum()), int((gt_mask | pred_mask).sum()), pred_count, gt_count, *matched)


@pytest.mark.parametrize("big_int", ["gmpy2", "int"])
@settings(max_examples=200, deadline=None)
@given(label_frames(), st.sampled_from([0.0, 1.0, 2.0, 3.0, 8.0]), st.tuples(*[st.integers(0, 3)] * 4))
def test_packed_counts_hold_for_any_box_around_the_object(
    big_int: str, frames: tuple[np.ndarray, np.ndarray], radius: float, margins: tuple[int, int, int, int]
) -> None:
    """The kernel needs a box that holds the object, not the tight one (reused canvases included); GMP ints and
    CPython ints (the fallback without gmpy2) give the same counts."""
    if big_int == "gmpy2":
        pytest.importorskip("gmpy2")
    with pytest.MonkeyPatch.context() as patch:
        if big_int == "int":
            patch.setattr(packed_kernel, "_big_int", int)
        _check_packed_counts(frames, radius, margins)


def _check_packed_counts(frames: tuple[np.ndarray, np.ndarray], radius: float, margins: tuple[int, int, int, int]) -> None:
    gt, pred = frames
    height, width = gt.shape
    program = _bit_program(radius)
    workspace = Workspace()
    for object_id in (1, 2, 3, 6):
        tight = object_boxes_tight(gt, pred, [object_id])[0]
        if tight is None:
            continue
        y0, y1, x0, x1 = tight
        loose = (max(y0 - margins[0], 0), min(y1 + margins[1], height), max(x0 - margins[2], 0), min(x1 + margins[3], width))
        expected = brute_force_counts(gt, pred, object_id, radius)
        assert object_counts(gt, pred, object_id, tight, program) == expected
        assert object_counts(gt, pred, object_id, loose, program, workspace.zeroed) == expected


def test_workspace_reused_across_frames_of_different_sizes() -> None:
    rng = np.random.default_rng(7)
    workspace = Workspace()
    for index in range(8):
        shape = (40 + 13 * (index % 3), 70 - 9 * (index % 4))
        gt = scattered_frame(rng, shape, [1, 2, 3])
        pred = scattered_frame(rng, shape, [1, 2, 3])
        expected = score_frame_plain(gt, pred, [1, 2, 3], 8.0)
        for matcher in ["auto", *KERNEL_MATCHERS]:
            assert score_frame_fast(gt, pred, [1, 2, 3], 8.0, matcher, workspace=workspace) == expected


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(0, 12), st.integers(0, 12)), elements=st.sampled_from([0, 1, 2, 7, 200, 255])), st.integers(0, 20))
def test_nonzero_ids_and_runs(labels: np.ndarray, peel_limit: int) -> None:
    original = labels.copy()
    assert nonzero_ids(labels, peel_limit) == [int(v) for v in np.unique(labels) if v]
    assert np.array_equal(labels, original)
    if labels.size:
        assert first_frame_object_ids(labels) == [int(v) for v in np.unique(labels) if v not in (0, 255)]
        column = labels[:, :1].copy()
        runs, start = [], None
        for index, value in enumerate(column.ravel().tolist() + [0]):
            if value and start is None:
                start = index
            elif not value and start is not None:
                runs.append((start, index))
                start = None
        assert _runs(column) == runs


@pytest.mark.parametrize("radius", [float(r) for r in range(0, 41)])
def test_symmetric_disks_are_unions_of_centred_rectangles(radius: float) -> None:
    plan = _footprint_plan(radius)
    size = plan.footprint.shape[0]
    centre = size // 2
    rebuilt = np.zeros((size, size), bool)
    for half_width, half_height in zip(plan.half_widths, plan.half_heights):
        rebuilt[centre - half_height : centre + half_height + 1, centre - half_width : centre + half_width + 1] = True
    assert np.array_equal(rebuilt, plan.footprint.astype(bool))


def test_off_centre_disks_use_dilation_only() -> None:
    plan = _footprint_plan(0.008 * float(np.linalg.norm((480, 854))))  # MOSEv2's un-rounded radius
    assert plan.half_widths is None
    boundary = np.zeros((5, 5), np.uint8)
    boundary[2, 1:4] = 1
    shifted = np.roll(boundary, 1, axis=0)
    with pytest.raises(ValueError, match="matcher='dilate'"):
        boundary_f(boundary, shifted, 7.837, matcher="integral")
    assert boundary_f(boundary, shifted, 7.837) == boundary_f(boundary, shifted, 7.837, matcher="dilate")
