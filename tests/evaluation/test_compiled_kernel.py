"""The compiled per-frame kernel (_jf_kernel.c): its six counts equal the plain definition bit for bit, it refuses
bad input, and the loader never uses a missing or stale build."""
from __future__ import annotations

import logging
import os
import sys
import types
import warnings

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import masseg_search.evaluation.kernels as evaluation_package
from masseg_search.errors import MassegError
from masseg_search.evaluation import FrameScorer, score_video
from masseg_search.evaluation.kernels import compiled, score_frame_fast
from masseg_search.evaluation.kernels.disk import disk_rectangles as _disk_rectangles
from masseg_search.evaluation.metric import boundary_radius, score_frame_plain
from tests.evaluation.test_davis_metric import brute_force_counts, scattered_frame

needs_kernel = pytest.mark.skipif(compiled.kernel is None, reason="compiled kernel not built (test_compiled_kernel_is_built says why)")


def test_compiled_kernel_is_built() -> None:
    """A missing build must not pass unnoticed where a C compiler exists (CI): only MASSEG_JF_KERNEL=python skips."""
    if os.environ.get(compiled.ENVIRONMENT_SWITCH, "").lower() == "python":
        pytest.skip("MASSEG_JF_KERNEL=python selects the pure-Python kernel")
    assert compiled.kernel is not None, "the compiled J&F kernel did not build or is stale: run `bash scripts/bootstrap`"
    assert compiled.kernel.VERSION == compiled.KERNEL_VERSION


def kernel_counts(gt: np.ndarray, pred: np.ndarray, object_ids: list[int], radius: float) -> tuple[list, bool]:
    """The kernel's counts, with absent objects (None) as the six zeros the plain definition gives them."""
    counts, unknown = compiled.kernel.frame_counts(gt, pred, object_ids, *_disk_rectangles(radius))
    return [(0,) * 6 if c is None else c for c in counts], unknown


def check_against_plain(gt: np.ndarray, pred: np.ndarray, object_ids: list[int], radius: float) -> None:
    """Counts, the unknown-id flag, and J and F all equal the plain full-frame definition."""
    counts, unknown = kernel_counts(gt, pred, object_ids, radius)
    assert counts == [brute_force_counts(np.where(gt == 255, 0, gt), pred, object_id, radius) for object_id in object_ids]
    assert unknown == bool(set(np.unique(pred).tolist()) - {0} - set(object_ids))
    expected = score_frame_plain(gt, pred, object_ids, radius)
    assert score_frame_fast(gt, pred, object_ids, radius, "compiled") == expected
    if 255 not in object_ids:  # the Python kernel reads G's void as id 255 (objects never are: first-frame ids)
        assert score_frame_fast(gt, pred, object_ids, radius, "bits") == expected


@st.composite
def wide_label_frames(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """G (void, ids of no object) and P (unknown ids) of odd sizes up to 150 wide (rows of 1-3 words): rectangles,
    noise, full and empty frames; a radius up to 1080p's."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 150))
    frames = []
    for alphabet in ([1, 2, 3, 6, 200, 255], [1, 2, 3, 6, 9, 255]):
        style = draw(st.sampled_from(["rectangles", "rectangles", "noise", "full", "empty"]))
        frame = np.zeros((height, width), np.uint8)
        if style == "noise":
            frame = draw(arrays(np.uint8, (height, width), elements=st.sampled_from([0, 0, 0] + alphabet)))
        elif style == "full":
            frame[:] = draw(st.sampled_from(alphabet))
        elif style == "rectangles":
            for _ in range(draw(st.integers(0, 6))):
                y0, x0 = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
                y1, x1 = draw(st.integers(y0 + 1, height)), draw(st.integers(x0 + 1, width))
                frame[y0:y1, x0:x1] = draw(st.sampled_from(alphabet))
        frames.append(frame)
    radius = draw(st.sampled_from([None, 0.0, 1.0, 2.0, 3.0, 8.0, 12.0, 18.0]))
    return frames[0], frames[1], boundary_radius(height, width) if radius is None else radius


@needs_kernel
@settings(max_examples=400, deadline=None)
@given(wide_label_frames())
def test_counts_equal_the_plain_definition(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    gt, pred, radius = case
    check_against_plain(gt, pred, [1, 2, 3, 6, 4], radius)  # 4: never drawn


@needs_kernel
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (37, 53), (53, 37), (8, 64), (7, 63), (5, 65), (3, 128), (4, 129)])
def test_odd_sizes_border_objects_and_full_masks(shape: tuple[int, int]) -> None:
    """Widths around the 8- and 64-column words, objects on every border, full and empty frames."""
    rng = np.random.default_rng(sum(shape))
    for _ in range(4):
        gt = scattered_frame(rng, shape, [1, 2, 3, 255])
        pred = scattered_frame(rng, shape, [1, 2, 5])
        for radius in (boundary_radius(*shape), 1.0, 8.0):
            check_against_plain(gt, pred, [1, 2, 3], radius)
    full, empty = np.ones(shape, np.uint8), np.zeros(shape, np.uint8)
    border = np.zeros(shape, np.uint8)
    border[-1, :], border[:, -1] = 2, 2  # the last row and column, where the boundary rule looks inside only
    border[0, 0] = 1
    for gt, pred in ((full, full), (full, empty), (empty, full), (full, border), (border, border), (border, full), (empty, empty)):
        check_against_plain(gt, pred, [1, 2], boundary_radius(*shape))


@needs_kernel
def test_void_only_and_void_object_id() -> None:
    """Void (255) in G is background: as a G pixel it is no object's, and an object id 255 has an empty G."""
    gt = np.full((12, 20), 255, np.uint8)
    gt[2:6, 3:9] = 1
    pred = np.zeros_like(gt)
    pred[3:7, 4:10] = 1
    pred[8:10, 10:15] = 255
    check_against_plain(gt, pred, [1, 255], 1.0)
    check_against_plain(gt, pred, [1], 1.0)  # 255 predicted but no object: unknown


@needs_kernel
def test_1080p_frames_at_the_1080p_radius() -> None:
    rng = np.random.default_rng(3)
    shape = (1080, 1920)
    gt = scattered_frame(rng, shape, [1, 2, 3, 4, 255])
    pred = np.roll(scattered_frame(rng, shape, [1, 2, 3]), 7, axis=1)
    pred[gt == 4] = 4  # a large shared part: boundaries that partly coincide
    radius = boundary_radius(*shape)
    assert radius == 18.0
    assert score_frame_fast(gt, pred, [1, 2, 3, 4], radius, "compiled") == score_frame_plain(gt, pred, [1, 2, 3, 4], radius)


@needs_kernel
def test_views_and_kernel_selection() -> None:
    """Non-contiguous views are copied for the kernel; 'auto' uses it where built and it applies."""
    rng = np.random.default_rng(5)
    gt = scattered_frame(rng, (40, 90), [1, 2])
    pred = scattered_frame(rng, (40, 90), [1, 2])
    for gt_view, pred_view in ((gt[::2, 1::3], pred[::2, 1::3]), (gt.T, pred.T)):
        assert score_frame_fast(gt_view, pred_view, [1, 2], 8.0, "compiled") == score_frame_plain(gt_view, pred_view, [1, 2], 8.0)
    calls = []
    real = compiled.kernel

    class Spy:
        def frame_counts(self, *args):
            calls.append(args)
            return real.frame_counts(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled, "kernel", Spy())
        score_frame_fast(gt, pred, [1, 2], 8.0)
        assert len(calls) == 1
        score_frame_fast(gt, pred, [1, 2], 7.837)  # an off-centre disk: no rectangles, no kernel
        score_frame_fast(gt, pred, [1, 2, 300], 8.0)  # an id beyond uint8: the Python kernel
        assert len(calls) == 1
        patch.setattr(compiled, "kernel", None)
        with pytest.raises(ValueError, match="bootstrap"):
            score_frame_fast(gt, pred, [1, 2], 8.0, "compiled")


@needs_kernel
def test_kernel_rejects_bad_input() -> None:
    frame, rectangles = np.zeros((4, 5), np.uint8), _disk_rectangles(1.0)
    frame_counts = compiled.kernel.frame_counts
    with pytest.raises(ValueError, match="same shape"):
        frame_counts(frame, np.zeros((5, 4), np.uint8), [1], *rectangles)
    with pytest.raises(TypeError, match="uint8"):
        frame_counts(frame.astype(np.uint16), frame, [1], *rectangles)
    with pytest.raises(TypeError, match="uint8"):
        frame_counts(np.zeros(5, np.uint8), np.zeros(5, np.uint8), [1], *rectangles)
    with pytest.raises((BufferError, ValueError), match="contiguous"):
        frame_counts(np.zeros((4, 10), np.uint8)[:, ::2], frame, [1], *rectangles)
    for ids in ([0], [256], [-1]):
        with pytest.raises(ValueError, match="1..255"):
            frame_counts(frame, frame, ids, *rectangles)
    for widths, heights in (((), ()), ((1, 2), (0, 1)), ((1,), (0, 1)), ((-1,), (0,))):
        with pytest.raises(ValueError):
            frame_counts(frame, frame, [1], widths, heights)
    assert frame_counts(np.zeros((0, 7), np.uint8), np.zeros((0, 7), np.uint8), [1], *rectangles) == ([None], False)


@pytest.mark.parametrize("kernel", ["compiled", "python"])
def test_unknown_predicted_id_names_the_file(kernel: str) -> None:
    if kernel == "compiled" and compiled.kernel is None:
        pytest.skip("compiled kernel not built")
    gt = np.zeros((4, 37, 53), np.uint8)
    gt[:, 3:9, 5:20] = 1
    pred = gt.copy()
    pred[2, 30, 50] = 7
    with pytest.MonkeyPatch.context() as patch:
        if kernel == "python":
            patch.setattr(compiled, "kernel", None)
        scorer = FrameScorer(37, 53, [1])
        with pytest.raises(MassegError, match=r"videos/v1/00002\.png: predicted object id\(s\) \[7\]"):
            scorer.add(gt[2], pred[2], check_ids=True, where="videos/v1/00002.png")
        with pytest.raises(MassegError, match=r"v/00002: predicted object id\(s\) \[7\]"):
            score_video(gt, pred, video="v")


# ------------------------------------------------------------------------------------------------------ loader
def fake_kernel(version: int, digest: str = "") -> types.ModuleType:
    module = types.ModuleType("_jf_kernel")
    module.VERSION, module.SOURCE_SHA256, module.__file__ = version, digest, "/somewhere/_jf_kernel.so"
    return module


def test_loader_refuses_stale_builds(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv(compiled.ENVIRONMENT_SWITCH, raising=False)
    source = tmp_path / "_jf_kernel.c"
    source.write_text("int kernel;\n")
    assert compiled.stale_reason(fake_kernel(compiled.KERNEL_VERSION), source) is None  # no digest recorded
    assert "another version of _jf_kernel.c" in compiled.stale_reason(fake_kernel(compiled.KERNEL_VERSION, "0" * 64), source)
    assert "version 0" in compiled.stale_reason(fake_kernel(0), source)
    stale = fake_kernel(compiled.KERNEL_VERSION + 1)
    monkeypatch.setitem(sys.modules, "masseg_search.evaluation.kernels._jf_kernel", stale)
    monkeypatch.setattr(evaluation_package, "_jf_kernel", stale, raising=False)
    with pytest.warns(RuntimeWarning, match=r"stale .*rerun `bash scripts/bootstrap`"):
        assert compiled.load_kernel() is None


def test_loader_falls_back_quietly_without_a_build(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(compiled.ENVIRONMENT_SWITCH, raising=False)
    monkeypatch.setitem(sys.modules, "masseg_search.evaluation.kernels._jf_kernel", None)  # import fails as if never built
    monkeypatch.delattr(evaluation_package, "_jf_kernel", raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.DEBUG, logger=compiled.__name__):
            assert compiled.load_kernel() is None
    assert [record.levelno for record in caplog.records] == [logging.DEBUG]
    assert "pure-Python" in caplog.records[0].getMessage()
    monkeypatch.setenv(compiled.ENVIRONMENT_SWITCH, "python")
    assert compiled.load_kernel() is None


@pytest.mark.parametrize("kernel", ["compiled", "python"])
def test_both_kernels_score_videos_alike(kernel: str) -> None:
    """score_video (the evaluator's per-frame loop) gives the plain values with either kernel."""
    if kernel == "compiled" and compiled.kernel is None:
        pytest.skip("compiled kernel not built")
    rng = np.random.default_rng(11)
    gt = np.stack([scattered_frame(rng, (45, 70), [1, 2, 3]) for _ in range(5)])
    gt[0, 0, 0], gt[0, 1, 1], gt[0, 2, 2] = 1, 2, 3  # every object in the first frame
    pred = np.stack([cv2.dilate(frame, np.ones((3, 3), np.uint8)) for frame in gt])
    with pytest.MonkeyPatch.context() as patch:
        if kernel == "python":
            patch.setattr(compiled, "kernel", None)
        fast = score_video(gt, pred)
    plain = score_video(gt, pred, method="plain")
    assert np.array_equal(fast.j, plain.j) and np.array_equal(fast.f, plain.f)
