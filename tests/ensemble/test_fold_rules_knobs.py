"""--select-on scores per-type select held out with the per-fold choices, memory knobs included."""
from __future__ import annotations

from masseg_search.ensemble.select import _fold_select_rules


def test_fold_rules_read_chosen_config_ids_with_knobs(tmp_path):
    table = tmp_path / "holdout_objects.csv"
    table.write_text("fold,video,object_id,chosen_config,chosen_scale,chosen_bias\n"
                     "0,v0,1,s7.5_b-4_as0.5,7.5,-4\n1,v1,1,s20_b-10,20,-10\n")
    folds = {"0": ["v0"], "1": ["v1"]}
    rules = _fold_select_rules(table, folds, {"v0": [1], "v1": [1]}, ["s7.5_b-4_as0.5", "s20_b-10"])
    assert rules["v0"][1].configs == ("s7.5_b-4_as0.5",) and rules["v1"][1].configs == ("s20_b-10",)
    # the knob-less s7.5_b-4 stored instead is not the configuration fold 0 chose
    assert _fold_select_rules(table, folds, {"v0": [1], "v1": [1]}, ["s7.5_b-4", "s20_b-10"]) is None
