"""Config ids with memory knobs: readable, round-trip, default knobs keep the old ids, views still work; the
configuration travels through best_configs.yaml and meta.json."""
from __future__ import annotations

import pytest

from masseg_search.errors import MassegError
from masseg_search.store import Knobs, config_id, load_best_configs, parse_config_id, save_best_configs, split_knobs_id
from masseg_search.store.best_configs import BestConfigs
from masseg_search.store.predictions import VideoPrediction, list_config_ids, load_video_prediction, parse_config_list, \
    save_video_prediction, split_config_id

import numpy as np


def test_default_knobs_keep_the_old_ids_and_set_knobs_add_fields():
    assert config_id(Knobs(7.5, -4.0)) == config_id(7.5, -4.0) == "s7.5_b-4"
    knobs = Knobs(7.5, -4.0, memory_stride=2, memory_frames=4)
    assert config_id(knobs) == "s7.5_b-4_st2_mf4"
    assert config_id(knobs, view="flip") == "s7.5_b-4_st2_mf4@flip"
    full = Knobs(20, -10, 3, 5, 8, 2, 0, -0.5, 0.7, 2)
    assert config_id(full) == "s20_b-10_st3_mf5_op8_cf2_mm0_as-0.5_ai0.7_kp2"
    assert parse_config_id(config_id(full)) == full
    assert split_knobs_id("s7.5_b-4_st2_mf4@trial2") == (knobs, "trial2")
    assert parse_config_list("20,-10;s7.5_b-4_kp2") == [Knobs(20, -10), Knobs(7.5, -4, keep_present=2)]


@pytest.mark.parametrize("bad", ["s7.5_b-4_zz2", "s7.5_b-4_st2_st3", "s7.5_b-4_op1", "s7.5_b-4_mm2", "x"])
def test_bad_ids_are_clear_errors(bad):
    with pytest.raises(MassegError):
        parse_config_id(bad)


def test_pair_only_readers_refuse_knob_ids():
    assert split_config_id("s20_b-10@flip") == (20.0, -10.0, "flip")
    with pytest.raises(MassegError, match="memory knobs"):
        split_config_id("s20_b-10_st2")


def test_best_configs_and_meta_carry_the_knobs(tmp_path):
    crowded = Knobs(20.0, -10.0, memory_stride=2, admit_score=0.0)
    path = tmp_path / "best_configs.yaml"
    save_best_configs(path, BestConfigs({"crowded": crowded, "small": (7.5, -4.0)}, details={"crowded": {"jf": 0.6}}))
    best = load_best_configs(path)
    assert best.for_type("crowded") == crowded and best.for_type("small") == Knobs(7.5, -4.0)
    assert best.for_type("other") == Knobs(20.0, -10.0) and best.details["crowded"]["jf"] == 0.6
    prediction = VideoPrediction("v", ["00000"], 4, 4, [1], {1: 0}, {1: np.zeros((1, 2, 2), np.float16)},
                                 {1: np.zeros(1, np.float32)}, scale=None, bias=None, object_configs={1: crowded})
    save_video_prediction(tmp_path / "pred" / config_id(crowded) / "v", prediction)
    assert load_video_prediction(tmp_path / "pred" / config_id(crowded) / "v").object_configs == {1: crowded}
    assert list_config_ids(tmp_path / "pred") == [config_id(crowded)]
