"""The plan file: round trip, validation errors that name the fix, and which rule each object gets."""
from __future__ import annotations

from pathlib import Path

import pytest

from masseg_search.ensemble import FusionRule, RuleResolver, load_plan, plan_from_dict, save_plan
from masseg_search.errors import MassegError
from masseg_search.store.best_configs import BestConfigs

STORED = ["s20_b-10", "s7.5_b-4", "s10_b-5"]


def test_plan_round_trip(tmp_path: Path) -> None:
    plan = plan_from_dict({"method": "mean", "configs": ["s20_b-10", "s7.5_b-4"], "weights": [2, 1],
                           "per_type": {"small": {"method": "vote"}}, "per_object": {"vid/3": {"method": "single", "configs": ["s10_b-5"]}},
                           "best_configs": "results/mss/val/best_configs.yaml", "selection": {"chosen": "mean-top2"}})
    save_plan(tmp_path / "plan.yaml", plan)
    again = load_plan(tmp_path / "plan.yaml")
    assert again.to_dict() == plan.to_dict()
    assert again.default.weights == (2.0, 1.0) and again.per_object["vid/3"].configs == ("s10_b-5",)


@pytest.mark.parametrize("data, words", [
    ({"method": "median"}, "method"),
    ({"method": "mean", "configs": ["s20_b-10"], "weights": [1, 2]}, "one weight per"),
    ({"method": "mean", "configs": ["twenty"]}, "config id"),
    ({"method": "single", "configs": ["s20_b-10", "s7.5_b-4"]}, "exactly one"),
    ({"method": "mean", "extra": 1}, "unknown plan keys"),
    ({"method": "mean", "per_object": {"no-slash": {"method": "mean"}}}, "<video>/<object id>"),
    ({"method": "mean", "weights": [1, -1], "configs": ["s20_b-10", "s7.5_b-4"]}, ">= 0"),
])
def test_bad_plans_are_refused_with_a_fix(data: dict, words: str) -> None:
    with pytest.raises(MassegError, match="Fix:") as error:
        plan_from_dict(data, "plan.yaml")
    assert words in str(error.value)


def test_missing_plan_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(MassegError, match="select-on"):
        load_plan(tmp_path / "nope.yaml")


def test_rule_order_per_object_then_per_type_then_default() -> None:
    plan = plan_from_dict({"method": "mean", "per_type": {"small": {"method": "vote", "configs": STORED[:2]}},
                           "per_object": {"v1/2": {"method": "single", "configs": ["s10_b-5"]}}})
    types = {("v1", 1): "small", ("v1", 2): "small", ("v1", 3): "regular"}
    rules = RuleResolver(plan, STORED, types).rules_for_video("v1", [1, 2, 3])
    assert rules[1] == FusionRule("vote", tuple(STORED[:2]))
    assert rules[2] == FusionRule("single", ("s10_b-5",))
    assert rules[3] == FusionRule("mean", tuple(STORED))  # empty configs = every stored config


def test_select_takes_the_scene_types_config_and_the_default_for_unknown_types() -> None:
    best = BestConfigs({"small": (7.5, -4.0)}, default=(20.0, -10.0))
    plan = plan_from_dict({"method": "select"})
    resolver = RuleResolver(plan, STORED, {("v", 1): "small", ("v", 2): "crowded"}, best)
    assert resolver.rule_for("v", 1) == FusionRule("single", ("s7.5_b-4",))
    assert resolver.rule_for("v", 2) == FusionRule("single", ("s20_b-10",))
    with pytest.raises(MassegError, match="no scene type"):
        resolver.rule_for("v", 9)


def test_select_needs_its_inputs_and_stored_configs() -> None:
    plan = plan_from_dict({"method": "select"})
    with pytest.raises(MassegError, match="best-configs"):
        RuleResolver(plan, STORED, {("v", 1): "small"}, None)
    with pytest.raises(MassegError, match="scene-types"):
        RuleResolver(plan, STORED, None, BestConfigs({}))
    resolver = RuleResolver(plan, STORED, {("v", 1): "small"}, BestConfigs({"small": (3.0, -1.0)}))
    with pytest.raises(MassegError, match="s3_b-1"):
        resolver.rule_for("v", 1)
