"""What `run` infers for which view, and pipeline.yaml's digests (no model: fast)."""
from __future__ import annotations

import os
from pathlib import Path

from masseg_search.ensemble.plan import plan_from_dict
from masseg_search.pipeline.plan import needed_test_configs, plan_summary, validation_configs, view_configs
from masseg_search.pipeline.record import PipelineRecord
from masseg_search.store.best_configs import BestConfigs
from masseg_search.store.knobs import Knobs
from masseg_search.store.predictions import config_id


def test_validation_configs_hold_every_choice_a_candidate_can_name() -> None:
    best = BestConfigs({"small": (12.5, -3.0), "crowded": (20.0, -10.0)}, default=(20.0, -10.0))
    heldout = {(9.0, -2.0), (12.5, -3.0)}
    assert [config_id(k) for k in validation_configs(best, heldout)] == ["s12.5_b-3", "s20_b-10", "s7.5_b-4", "s9_b-2"]
    assert [config_id(k) for k in view_configs(best, heldout)] == ["s12.5_b-3", "s20_b-10", "s9_b-2"]  # what select reads


def test_the_test_split_gets_what_the_chosen_plan_reads_per_view() -> None:
    plan = plan_from_dict({"method": "mean", "configs": ["s20_b-10", "s20_b-10@flip", "s7.5_b-4@trial2"],
                           "selection": {"chosen": "mean-top1+views", "jf": 0.61, "held_out": True,
                                         "candidates": [{"name": "mean-top1+views", "jf": 0.61},
                                                        {"name": "best-single", "jf": 0.58}]}})
    needed = plan.needed_configs()
    stored = [Knobs(20.0, -10.0), Knobs(7.5, -4.0, memory_stride=2)]
    assert needed_test_configs(needed, None, stored) == [Knobs(20.0, -10.0)]
    assert needed_test_configs(needed, "flip", stored) == [Knobs(20.0, -10.0)]
    assert needed_test_configs(needed, "trial2", stored) == [Knobs(7.5, -4.0)]
    assert needed_test_configs(needed, "trial2.flip", stored) == []  # a view the plan does not read is not inferred
    assert needed_test_configs(None, "flip", stored) == stored  # a rule over every stored config: all of them
    assert plan_summary(plan) == {"chosen": "mean-top1+views", "val_jf": 0.61, "held_out": True, "candidates": 2}


def test_file_digests_are_cached_while_size_and_time_hold(tmp_path: Path) -> None:
    record = PipelineRecord.load(tmp_path / "pipeline.yaml")
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"a" * 1000)
    first = record.file_digest(weights)
    assert len(first) == 64 and record.data["digests"][str(weights.resolve())]["sha256"] == first
    record.save()
    reloaded = PipelineRecord.load(tmp_path / "pipeline.yaml")
    stat = weights.stat()
    weights.write_bytes(b"b" * 1000)  # same size; the modification time says it changed
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert reloaded.file_digest(weights) != first
    assert reloaded.file_digest(tmp_path / "missing.pt") is None and reloaded.file_digest(None) is None
