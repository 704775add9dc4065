"""Every Prometheus metric of the orchestrator (served on /metrics by the Faust web server)."""

from __future__ import annotations

from prometheus_client import Counter

DECISIONS = Counter("flywheel_orchestrator_decisions_total", "Trigger decisions", ["decision", "trigger"])
RUN_ENDS = Counter("flywheel_orchestrator_runs_ended_total", "Training runs by how they ended", ["outcome"])
