"""The report's tune-mss landscape names the knobs that mattered (importance.csv written by tune-mss)."""
from __future__ import annotations

import pandas as pd

from masseg_search.report import read_mss_study
from masseg_search.report.plots import Figures, mattered_text, plot_mss_landscape


def _study(tmp_path, complete_trials: int):
    folder = tmp_path / "mss" / "knobs"
    folder.mkdir(parents=True)
    pd.DataFrame({"scene_type": ["small"] * 3, "number": [0, 1, 2], "state": ["COMPLETE"] * 3,
                  "config": ["s20_b-10", "s7.5_b-4", "s5_b-3_as0.5"], "scale": [20, 7.5, 5], "bias": [-10, -4, -3],
                  "admit_score": [None, None, 0.5], "jf": [0.4, 0.5, 0.6]}).to_csv(folder / "trials.csv", index=False)
    pd.DataFrame({"scene_type": ["small"] * 3, "knob": ["bias", "admit_score", "scale"],
                  "importance": [0.2, 0.7, 0.1], "complete_trials": complete_trials,
                  "reliable": complete_trials >= 10}).to_csv(folder / "importance.csv", index=False)
    return read_mss_study(folder)


def test_landscape_titles_name_the_knobs_that_mattered(tmp_path):
    study = _study(tmp_path, complete_trials=12)
    assert mattered_text(study, "small") == "\nmattered: admit_score 0.70, bias 0.20, scale 0.10"
    assert mattered_text(study, "other") == ""
    figures = Figures(tmp_path / "page" / "files", tmp_path / "page")
    assert (tmp_path / "page" / plot_mss_landscape(study, figures)).is_file()


def test_few_trials_are_flagged(tmp_path):
    assert mattered_text(_study(tmp_path, complete_trials=4), "small").endswith("(too few trials to trust)")
