"""Orchestrator settings (FLYWHEEL_* environment variables)."""

from __future__ import annotations

from flywheel.settings import FlywheelSettings


class OrchestratorSettings(FlywheelSettings):
    artifact_bucket: str = "flywheel-artifacts"
