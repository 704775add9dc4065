import json

import pytest
from pydantic import ValidationError

from flywheel_monitor.rules import DEFAULT_RULES, Rule, RuleSet
from flywheel_monitor.settings import MonitorSettings

GOOD = {"name": "acc", "metric": "accuracy", "comparator": "lt", "threshold": 0.8, "window_s": 5,
        "min_samples": 10}


def test_default_rule_set_has_the_demo_accuracy_rule():
    rules = RuleSet.model_validate(DEFAULT_RULES)
    acc = rules.for_metric("accuracy")
    assert [(r.aggregation, r.comparator, r.threshold) for r in acc] == [("mean", "lt", 0.8)]
    assert acc[0].window_s <= 10 and acc[0].min_samples <= 1000
    assert rules.drift is not None


@pytest.mark.parametrize(("field", "value"), [
    ("comparator", "eq"), ("aggregation", "median"), ("threshold", float("nan")), ("window_s", 0),
    ("min_samples", 0), ("consecutive_windows", 0), ("hysteresis", -0.1), ("cooldown_s", -1), ("name", "Bad Name"),
])
def test_a_bad_rule_is_refused_naming_its_field(field, value):
    with pytest.raises(ValidationError) as info:
        RuleSet.model_validate({"rules": [{**GOOD, field: value}]})
    assert f"rules.0.{field}" in str(info.value)


def test_unknown_fields_and_duplicate_names_are_refused():
    with pytest.raises(ValidationError, match="threshhold"):
        Rule.model_validate({**GOOD, "threshhold": 1})
    with pytest.raises(ValidationError, match="repeated: acc"):
        RuleSet.model_validate({"rules": [GOOD, GOOD]})


def test_hysteresis_sets_the_recovery_line_on_the_healthy_side():
    low = Rule.model_validate({**GOOD, "hysteresis": 0.05})
    assert low.breached(0.79) and not low.breached(0.8)
    assert not low.recovered(0.84) and low.recovered(0.86)
    high = Rule.model_validate({**GOOD, "comparator": "gt", "threshold": 0.5, "hysteresis": 0.1})
    assert high.breached(0.6) and not high.recovered(0.45) and high.recovered(0.4)


def test_settings_read_rules_from_a_yaml_file(tmp_path, monkeypatch):
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - {name: acc, metric: accuracy, comparator: lt, threshold: 0.7, "
                    "window_s: 2, min_samples: 5}\n")
    monkeypatch.setenv("FLYWHEEL_RULES_FILE", str(path))
    assert MonitorSettings().rule_set.rules[0].threshold == 0.7


def test_settings_refuse_a_bad_inline_rule_set_naming_the_field(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_RULE_SET", json.dumps({"rules": [{**GOOD, "window_s": -5}]}))
    with pytest.raises(ValidationError, match=r"rule_set\.rules\.0\.window_s"):
        MonitorSettings()


def test_settings_refuse_a_missing_rules_file(tmp_path, monkeypatch):
    monkeypatch.setenv("FLYWHEEL_RULES_FILE", str(tmp_path / "nope.yaml"))
    with pytest.raises(ValidationError, match="rules_file"):
        MonitorSettings()
