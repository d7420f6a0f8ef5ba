"""benchmarks/engine_stages.py: stage timing by hooks, the sharing bound, peak resident memory on CPU."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from engine_stages import STAGES, PeakMemory, StageTimer, sharing_bound  # noqa: E402


class Sleeper(torch.nn.Module):
    """A module whose forward takes a known time."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


class FakeSam2(torch.nn.Module):
    """The SAM2 attributes StageTimer hooks, each a module of known duration."""

    def __init__(self):
        super().__init__()
        self.image_encoder = Sleeper(0.03)
        self.memory_attention = Sleeper(0.02)
        self.sam_prompt_encoder = Sleeper(0.005)
        self.sam_mask_decoder = Sleeper(0.01)
        self.memory_encoder = Sleeper(0.015)

    def load(self) -> str:
        time.sleep(0.01)
        return "frame"

    def step(self, x: torch.Tensor) -> torch.Tensor:
        self.load()
        for module in (self.image_encoder, self.memory_attention, self.sam_prompt_encoder, self.sam_mask_decoder,
                       self.memory_encoder):
            x = module(x)
        return x


def test_stage_timer_counts_each_stage_and_restores_everything() -> None:
    model = FakeSam2()
    with StageTimer(model, "cpu", [(model, "load")]) as timer:
        start = time.perf_counter()
        for _ in range(2):
            model.step(torch.zeros(1))
        total = time.perf_counter() - start
    expected = {"image_encoder": 0.06, "memory_attention": 0.04, "mask_decoder": 0.03, "memory_encoder": 0.03, "io": 0.02}
    for stage in STAGES:
        assert expected[stage] <= timer.seconds[stage] < expected[stage] + 0.1, (stage, timer.seconds)
    assert timer.calls == {"image_encoder": 2, "memory_attention": 2, "mask_decoder": 4, "memory_encoder": 2, "io": 2}
    breakdown = timer.breakdown(total, frames=2)
    assert breakdown["total"] == pytest.approx(500 * total, abs=0.01)
    assert sum(breakdown[s] for s in STAGES) + breakdown["other"] == pytest.approx(breakdown["total"], abs=0.05)
    assert "load" not in vars(model)  # the wrapper was an instance attribute: removed again
    assert not model.image_encoder._forward_hooks and not model.image_encoder._forward_pre_hooks
    before = dict(timer.seconds)
    model.step(torch.zeros(1))
    assert timer.seconds == before


def test_sharing_bound() -> None:
    one_run = {"image_encoder": 2.0, "io": 0.5, "total": 6.0}
    assert sharing_bound(one_run, 1) == pytest.approx(1.0)
    # 4 runs cost 24; shared 2.5 once plus 4 x 3.5 per-row work = 16.5
    assert sharing_bound(one_run, 4) == pytest.approx(24 / 16.5)
    # the limit for many configurations: total / per-row work
    assert sharing_bound(one_run, 10_000) == pytest.approx(6.0 / 3.5, rel=1e-3)


def test_peak_memory_sees_a_transient_allocation() -> None:
    with PeakMemory("cpu") as memory:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        del block
    record = memory.record()
    assert record["added_mib"] >= 60 and record["peak_mib"] >= record["added_mib"]
    assert memory.method
