"""Policy configuration and deterministic identities."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from flywheel_orchestrator import ids
from flywheel_orchestrator.policy import Kind, TriggerPolicy
from flywheel_orchestrator.settings import OrchestratorSettings


def test_defaults_let_a_breach_retrain_right_after_a_registration():
    policy = OrchestratorSettings().policy
    assert policy.max_concurrent_runs == 1 and policy.supersede and policy.debounce_s == 2.0
    assert Kind.METRIC_BREACH in policy.cooldown_triggers and Kind.MANUAL not in policy.cooldown_triggers
    assert policy.enabled_triggers == frozenset(Kind)


def test_policy_and_per_model_overrides_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("FLYWHEEL_POLICY", '{"debounce_s": 0, "cooldown_s": 30}')
    monkeypatch.setenv("FLYWHEEL_MODEL_POLICIES", '{"support-intent": {"supersede": false}}')
    settings = OrchestratorSettings()
    policy = settings.policies()["support-intent"]
    assert settings.policy.debounce_s == 0 and policy.cooldown_s == 30 and policy.supersede is False


@pytest.mark.parametrize(("env", "field"), [
    ({"FLYWHEEL_POLICY": '{"max_concurrent_runs": 0}'}, "max_concurrent_runs"),
    ({"FLYWHEEL_POLICY": '{"debounce_s": -1}'}, "debounce_s"),
    ({"FLYWHEEL_POLICY": '{"debounse_s": 1}'}, "debounse_s"),
    ({"FLYWHEEL_POLICY": '{"enabled_triggers": ["NEW_DATA", "RAIN"]}'}, "enabled_triggers"),
    ({"FLYWHEEL_MODEL_POLICIES": '{"m": {"cooldown_s": "soon"}}'}, "cooldown_s"),
    ({"FLYWHEEL_ENGINE": "flyte-remote"}, "flyte_endpoint"),
])
def test_a_bad_policy_fails_at_start_up_naming_the_field(monkeypatch, env, field):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=field):
        OrchestratorSettings()


def test_run_id_is_deterministic_distinct_and_a_valid_sagemaker_job_name():
    a = ids.run_id("support-intent", "ab12", "NEW_DATA")
    assert a == ids.run_id("support-intent", "ab12", "NEW_DATA")
    others = {ids.run_id("support-intent", "ab13", "NEW_DATA"), ids.run_id("support-intent", "ab12", "DRIFT"),
              ids.run_id("support-intent", "ab12", "NEW_DATA", attempt=2), ids.run_id("support_intent", "ab12", "NEW_DATA")}
    assert a not in others and len(others) == 4
    long = ids.run_id("A very_long.model name " * 5, "x" * 64, "METRIC_BREACH")
    for name in (a, long):
        assert len(name) <= 63 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)


def test_policy_is_frozen():
    with pytest.raises(ValidationError):
        TriggerPolicy().debounce_s = 5
