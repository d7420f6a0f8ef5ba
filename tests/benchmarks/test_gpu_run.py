"""benchmarks/gpu/run.sh, the script a lent GPU machine runs, end to end on CPU (``--device cpu --quick``): it
writes one JSON whose figures are all there and sane, and the engine matches plain SAM2 in float32."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder", "io", "other", "total")


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The JSON of one quick CPU run of run.sh (this interpreter, which has sam2, so no wheelhouse)."""
    out = tmp_path_factory.mktemp("gpu_bench")
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    result = subprocess.run(["bash", str(REPO / "benchmarks/gpu/run.sh"), "--device", "cpu", "--quick"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert sorted(p.name for p in out.iterdir()) == ["gpu_bench.json"]
    return json.loads((out / "gpu_bench.json").read_text())


def test_run_is_complete(record: dict) -> None:
    assert record["complete"] and record["sections_skipped"] == [] and record["section_errors"] == {}
    assert "error" not in record
    assert (record["mode"], record["device"], record["model_config"]) == ("quick", "cpu", "tiny128")
    assert record["sam2"] == "1.1.0" and record["parameters"] > 0
    assert record["fast_modules"], "the engine swapped in no fast module"


def test_parity_rows_are_within_tolerance(record: dict) -> None:
    parity = record["parity"]
    names = [row["name"] for row in parity["rows"]]
    expected = {"engine_sam2_modules_one_row", "engine_sam2_modules_batched", "engine_default",
                *(f"engine_fast_{name}" for name in record["fast_modules"])}
    assert set(names) == expected and len(names) == len(expected)
    # a trained model on real objects: masks are neither empty nor full, so agreement is not trivial
    assert 0.001 < parity["plain_foreground_fraction"] < 0.5 and 0.2 < parity["plain_jf_mean"] <= 1
    assert parity["precision"] == "float32" and parity["bf16_floor_plain_fp32_vs_bf16"] is None
    assert parity["all_within_tolerance"] and parity["fallback_needed"] == []
    for row in parity["rows"]:
        assert row["within_tolerance"], row
        assert row["rel_l2"] <= 1e-4 and row["max_abs_logit_diff"] < 1e-2, row
        assert row["mask_agreement"] >= 0.999 and row["jf_max_abs_diff"] <= 1e-3, row
        assert abs(row["jf_mean"] - parity["plain_jf_mean"]) <= 1e-3
    one_module = [row for row in parity["rows"] if len(row["fast_modules"]) == 1]
    assert one_module and all(row["vs_engine_sam2_modules_batched"]["rel_l2"] <= 1e-4 for row in one_module)


def test_fps_figures_are_positive_and_add_up(record: dict) -> None:
    fps = record["fps"]
    assert [row["k"] for row in fps["rows"]] == [1, 8] and fps["skipped_ks"] == []
    for row in fps["rows"]:
        assert min(row["engine_fps"], row["engine_sam2_modules_fps"], row["plain_fps"]) > 0
        assert row["speedup"] == pytest.approx(row["engine_fps"] / row["plain_fps"])
        assert row["rows"] == row["k"] * record["settings"]["objects"]
        if row["k"] == 1:
            assert row["speedup_bound_from_breakdown"] == pytest.approx(1)
        else:
            assert row["speedup_bound_from_breakdown"] > 1
        for contender, stages in row["stages_ms_per_frame"].items():
            assert set(stages) == set(STAGES), contender
            assert all(stages[s] > 0 for s in STAGES if s != "other"), (contender, stages)
            assert sum(stages[s] for s in STAGES[:-1]) == pytest.approx(stages["total"], abs=0.05)
        assert all(m["peak_mib"] > 0 for m in row["peak_memory"].values())
    k8 = fps["rows"][1]
    # K=8 does 8 times plain's per-row work: the engine's shared encoder and batching must show
    assert k8["speedup"] > 1.5


def test_memory_is_flat_in_video_length(record: dict) -> None:
    memory = record["memory"]
    lengths = [row["frames"] for row in memory["engine"]]
    assert lengths == [20, 40] and [row["frames"] for row in memory["plain"]] == lengths
    assert memory["engine_stored_frames_flat"]
    assert all(row["peak_mib"] > 0 and row["seconds"] > 0 for row in memory["engine"] + memory["plain"])
