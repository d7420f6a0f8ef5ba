"""`masseg-search demo --quick`: the whole pipeline end to end on synthetic data (a couple of CPU minutes)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from masseg_search.cli import main


@pytest.mark.slow
def test_quick_demo_runs_every_stage_and_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "demo_table.csv")
    assert list(table["name"]) == ["copy first frame", "untrained", "base", "fine-tuned, SAM2 20/-10",
                                   "fine-tuned, MASSeg 7.5/-4", "fine-tuned, tuned per type", "ensemble"]
    assert table["jf"].between(0, 1).all()
    assert (table["ci_low"] <= table["jf"]).all() and (table["jf"] <= table["ci_high"]).all()
    # the bundled base tracks: far above a random model and above repeating the first-frame mask
    rows = table.set_index("name")["jf"]
    assert rows["base"] > rows["untrained"] + 0.3
    assert rows["base"] > rows["copy first frame"]
    # every stage left its product
    assert (out / "sweeps" / "demo" / "results.csv").is_file()
    assert (out / "mss" / "val" / "best_configs.yaml").is_file()
    assert (out / "plans" / "val.yaml").is_file()
    assert (out / "submissions" / "demo.zip").is_file()
    assert "optuna-dashboard" in printed and "masseg-search report" in printed
    # a rerun resumes instead of redoing or refusing
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert pd.read_csv(out / "demo_table.csv")["jf"].tolist() == pytest.approx(table["jf"].tolist())
