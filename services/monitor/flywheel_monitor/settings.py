"""Monitor settings (FLYWHEEL_* environment variables); the rule set is validated here, at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from flywheel.settings import FlywheelSettings
from flywheel_monitor.rules import RuleSet, load_rules


class MonitorSettings(FlywheelSettings):
    # YAML/JSON file with `rules:` and `drift:`; unset -> the shipped defaults (rules.DEFAULT_RULES).
    rules_file: Path | None = None
    # Or the whole rule set inline as JSON (FLYWHEEL_RULE_SET); wins over rules_file.
    rule_set: RuleSet
    # Per-model series beyond this many models share the label model="_other" (bounded cardinality).
    metrics_max_models: int = Field(default=200, ge=1)
    # Rebuild known models and cooldowns from the topics before consuming (changelogs are unreliable on Tansu).
    recover_on_start: bool = True
    recovery_timeout_s: float = Field(default=30.0, gt=0)
    # Per-model rule state (hysteresis, cooldown, version, outbox) in s3://<artifact_bucket>/monitor/models/,
    # fenced by ETag, so that workers can share the models (docs/decisions/0015-monitor-scale-out.md). Off:
    # memory only, correct for one worker and no more.
    artifact_bucket: str = "flywheel-artifacts"
    rule_state_in_s3: bool = True
    # A ModelMetricsObserved whose window_end is further ahead of this service's clock is dead-lettered
    # (event time from the future would make every honest window count as late).
    max_clock_skew_s: float = Field(default=300.0, ge=0)
    # ...and so is one whose window (window_end - window_start) is longer than this.
    max_observation_window_s: float = Field(default=86_400.0, gt=0)
    # Publishing a RetrainRequested or a dead letter that fails (broker down, timeout) is retried, holding the
    # stream at that record: first after this long, doubling up to the cap, until it succeeds.
    publish_retry_initial_s: float = Field(default=0.2, gt=0)
    publish_retry_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _load_rule_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rule_set") is None:
            try:
                data["rule_set"] = load_rules(data.get("rules_file"))
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"rules_file: cannot read {data.get('rules_file')}: {exc}") from exc
        return data
