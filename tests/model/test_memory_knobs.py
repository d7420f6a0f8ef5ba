"""SAM2's memory knobs per row: each equals plain SAM2VideoPredictor with the attribute set; rows with different
knobs batched together equal the same rows run alone; the admission policies keep pre-disappearance frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from masseg_search.data.layout import open_dataset
from masseg_search.errors import MassegError
from masseg_search.model.build import build_model, build_plain_predictor
from masseg_search.model.engine import MultiConfigEngine, reference_predict_video
from masseg_search.model.memory import RowKnobs, RowMemory, sam2_attributes
from masseg_search.store.knobs import Knobs
from masseg_search.store.predictions import config_id

LOGIT_TOLERANCE = 1e-3
KNOB_CONFIGS = [
    Knobs(7.5, -4.0),
    Knobs(7.5, -4.0, memory_stride=3),
    Knobs(20.0, -10.0, memory_frames=3),
    Knobs(7.5, -4.0, obj_ptrs=4),
    Knobs(7.5, -4.0, cond_frames=2),
    Knobs(20.0, -10.0, multimask=0),
    Knobs(12.5, -6.0, memory_stride=2, memory_frames=4, obj_ptrs=6, multimask=0),
]


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, video_writer):
    root = video_writer(tmp_path_factory.mktemp("knob_video"), "long", frames=22, height=48, width=48, objects=2,
                        vanish_after=10, seed=5)
    return open_dataset(root).video("long")


@pytest.fixture(scope="module")
def mixed_results(lively_checkpoint, long_video):
    engine = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu", logits_dtype=np.float32)
    return engine.predict_video(long_video, {1: KNOB_CONFIGS, 2: KNOB_CONFIGS}), engine


def test_every_sam2_knob_equals_plain_sam2_with_the_attribute_set(lively_checkpoint, long_video, mixed_results):
    results, engine = mixed_results
    plain = build_plain_predictor("tiny64", lively_checkpoint)
    defaults = {name: getattr(plain, name) for knobs in KNOB_CONFIGS for name in sam2_attributes(knobs)}
    differs = []
    for knobs in KNOB_CONFIGS:
        reference, _ = reference_predict_video(plain, long_video, knobs.scale, knobs.bias, sam2_attributes(knobs))
        for name, value in defaults.items():
            setattr(plain, name, value)
        prediction = results[config_id(knobs)]
        diff = max(float(np.abs(prediction.logits[i] - reference[i]).max()) for i in (1, 2))
        assert diff <= LOGIT_TOLERANCE, (config_id(knobs), diff)
        base = results[config_id(Knobs(knobs.scale, knobs.bias))] if config_id(Knobs(knobs.scale, knobs.bias)) in results else None
        if base is not None and knobs.extras():
            differs.append(any(not np.allclose(base.logits[i], prediction.logits[i], atol=1e-4) for i in (1, 2)))
    # not vacuous: the knobs change the result (cond_frames cannot with one conditioning frame)
    assert sum(differs) >= 2
    assert engine.peak_stored_frames < len(long_video.frame_paths)


def test_batched_rows_with_different_knobs_equal_the_rows_run_alone(lively_checkpoint, long_video, mixed_results):
    results, _ = mixed_results
    engine = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu", logits_dtype=np.float32)
    policy = Knobs(7.5, -4.0, admit_score=0.0, keep_present=2)
    together = engine.predict_video(long_video, {1: KNOB_CONFIGS[:3] + [policy], 2: [policy]})
    for knobs in KNOB_CONFIGS[:3] + [policy]:
        owners = [1, 2] if knobs == policy else [1]
        alone = engine.predict_video(long_video, {1: [knobs], 2: [knobs]})[config_id(knobs)]
        for obj in owners:
            np.testing.assert_allclose(together[config_id(knobs)].logits[obj], alone.logits[obj], atol=1e-4)


def _history(memory: RowMemory, frames: range, present: set[int]) -> None:
    for frame in frames:
        score = 5.0 if frame in present else -5.0
        memory.record(frame, torch.full((len(memory.rows), 1), score), torch.full((len(memory.rows), 1), 0.9))


def test_admission_and_keep_present_hold_the_frames_before_a_disappearance():
    """Object present on frames 1-6, gone on 7-20: at frame 21 SAM2 reads frames 14-20 (all empty); admission reads
    the last admitted frames (1-6); keep_present puts the last present frames in the oldest slots."""
    sam2 = RowKnobs(stride=1, num_maskmem=7, max_obj_ptrs=16, max_cond_frames=-1, multimask=True,
                    admit_score=None, admit_iou=None, keep_present=0)
    admit = RowKnobs(1, 7, 16, -1, True, admit_score=0.0, admit_iou=0.5, keep_present=0)
    keep = RowKnobs(1, 7, 16, -1, True, admit_score=None, admit_iou=None, keep_present=2)
    memory = RowMemory([sam2, admit, keep])
    _history(memory, range(1, 21), present=set(range(1, 7)))
    stored = {t: {} for t in range(1, 21)}
    reads = [[t for _, t in memory.select(row, 21, {0: {}}, stored, 30)[0]] for row in range(3)]
    assert reads[0] == [0, 15, 16, 17, 18, 19, 20]
    assert reads[1] == [0, 1, 2, 3, 4, 5, 6]
    assert reads[2] == [0, 5, 6, 17, 18, 19, 20]
    # flat: what any row may still read is bounded, whatever the video length
    features, oldest_pointer = memory.needed(21, 30)
    assert features <= set(range(1, 21)) and len(features) <= 6 + 6 + 2 and oldest_pointer == 21 - 15
    # the same history with the object present throughout: the policies read what SAM2 reads
    steady = RowMemory([sam2, admit, keep])
    _history(steady, range(1, 21), present=set(range(1, 21)))
    assert len({tuple(t for _, t in steady.select(row, 21, {0: {}}, stored, 30)[0]) for row in range(3)}) == 1


def test_policy_rows_read_pre_disappearance_frames_in_the_engine(lively_checkpoint, long_video):
    engine = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu")
    engine.memory_reads = []
    configs = [Knobs(7.5, -4.0), Knobs(7.5, -4.0, admit_score=0.0), Knobs(7.5, -4.0, keep_present=2)]
    results = engine.predict_video(long_video, {1: configs[:1], 2: configs})  # rows: object 1, then object 2 x 3
    scores = results[config_id(configs[0])].object_scores[2]
    last = len(long_video.frame_paths) - 1
    sam2_reads, admit_reads, keep_reads = (engine.memory_reads[row][last] for row in (1, 2, 3))
    assert sam2_reads[1:] == list(range(last - 6, last))
    admitted = [t for t in range(1, last) if results[config_id(configs[1])].object_scores[2][t] > 0]
    assert set(admit_reads[1:]) <= set(admitted)
    if (scores[last - 6:last] <= 0).all() and (scores[1:last - 6] > 0).any():  # the object was lost for 6+ frames
        assert min(keep_reads[1:]) < last - 6


def test_bad_knob_values_are_clear_errors(lively_checkpoint, long_video):
    with pytest.raises(MassegError, match="obj_ptrs"):
        Knobs(7.5, -4.0, obj_ptrs=1)
    engine = MultiConfigEngine(build_model("tiny64", lively_checkpoint), "cpu")
    with pytest.raises(MassegError, match="memory_frames"):
        engine.predict_video(long_video, {1: [Knobs(7.5, -4.0, memory_frames=9)], 2: [(7.5, -4.0)]})
