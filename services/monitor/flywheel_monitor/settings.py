"""Monitor settings (FLYWHEEL_* environment variables)."""

from __future__ import annotations

from flywheel.settings import FlywheelSettings


class MonitorSettings(FlywheelSettings):
    pass
