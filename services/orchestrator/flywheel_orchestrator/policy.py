"""Trigger policy per model: validated at start-up, so a bad value fails naming its field."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from flywheel_orchestrator.trainingdata import TrainingDataPolicy


class Kind(StrEnum):
    """TriggerKind symbols (schemas/flywheel.TriggerKind.avsc) that can start a run."""

    NEW_DATA = "NEW_DATA"
    METRIC_BREACH = "METRIC_BREACH"
    DRIFT = "DRIFT"
    MANUAL = "MANUAL"


class TriggerPolicy(BaseModel):
    """When a trigger becomes a training run. Defaults suit the demo: data -> run, breach -> retrain at once."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Versions arriving within this window of each other collapse into one run on the newest.
    debounce_s: float = Field(2.0, ge=0)
    # Rows in objects the last run did not see (key+ETag), below which new data does not launch.
    min_new_rows: int = Field(1, ge=0)
    # No second run of the same trigger kind within this many seconds of the last one's launch.
    cooldown_s: float = Field(600.0, ge=0)
    # Kinds the cooldown applies to. A person (MANUAL) is never throttled; NEW_DATA has debounce and
    # min_new_rows; a breach right after a NEW_DATA registration is a first breach and must launch.
    cooldown_triggers: frozenset[Kind] = frozenset({Kind.METRIC_BREACH, Kind.DRIFT})
    max_concurrent_runs: int = Field(1, ge=1)
    # A newer dataset version stops in-flight runs on older versions of the same model.
    supersede: bool = True
    enabled_triggers: frozenset[Kind] = frozenset(Kind)
    # Which dataset versions a run trains on: the newest base version + recent feedback (trainingdata.py).
    training_data: TrainingDataPolicy = TrainingDataPolicy()


def resolve_policies(default: TriggerPolicy, overrides: dict[str, dict[str, Any]]) -> dict[str, TriggerPolicy]:
    """Per-model policies: the default with each model's fields replaced (validated like the default); a
    model's `training_data` replaces only the fields it names."""
    base = default.model_dump()
    return {model: TriggerPolicy.model_validate({**base, **fields, "training_data": {
                **base["training_data"], **(fields.get("training_data") or {})}})
            for model, fields in overrides.items()}
