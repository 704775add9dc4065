"""Generated monitoring assets: committed files match the code; promtool accepts and passes the rules."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import flywheel.faust_app  # noqa: F401 - registers the shared dead-letter counter
import flywheel_monitor.metrics  # noqa: F401 - registers the monitor's metrics
import flywheel_orchestrator.metrics  # noqa: F401 - registers the orchestrator's (the training-cost dashboard)
from flywheel_monitor import alerts, assets, dashboards
from flywheel_serving.metrics import ServingMetrics

ROOT = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: `make tools` installs Debian's prometheus package")
    return found


def test_committed_assets_match_what_the_code_generates():
    assert assets.stale(ROOT) == [], "run: python -m flywheel_monitor.assets write k8s/monitoring"


def test_stale_detects_an_edited_file(tmp_path):
    assets.write(tmp_path)
    (tmp_path / assets.RULES_FILE).write_text("groups: []\n")
    assert assets.stale(tmp_path) == [assets.RULES_FILE]


def test_promtool_checks_the_rules():
    out = subprocess.run([promtool(), "check", "rules", str(ROOT / assets.RULES_FILE)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_unit_tests_pass():
    out = subprocess.run([promtool(), "test", "rules", str(ROOT / assets.TESTS_FILE)], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}


def exported_names(job: str = "flywheel-monitor") -> set[str]:
    """Every series name the job can export (labelled metrics have no samples until first used). Serving keeps
    its metrics in a registry of its own; the Faust services share the process-wide one."""
    registry = ServingMetrics().registry if job == "flywheel-serving" else REGISTRY
    names = {"up"}
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, ranges and strings removed first)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
            if w.startswith(("flywheel_", "process_")) or w == "up"}


@pytest.mark.parametrize("uid", sorted(dashboards.DASHBOARDS))
def test_dashboards_name_only_exported_metrics(uid):
    board = dashboards.build(uid)
    assert board["uid"] == uid and board["panels"]
    for title, expr in dashboards.queries(board):
        missing = metric_names(expr) - exported_names(dashboards.SCRAPES[uid])
        assert not missing, f"{uid} / {title}: {missing}"


def test_metric_names_are_found_in_promql():
    assert metric_names('sum by (le) (rate(flywheel_x_bucket{a="b"}[5m])) / up') == {"flywheel_x_bucket", "up"}


def test_alert_rules_name_only_exported_metrics():
    for rule in alerts.RULES["groups"][0]["rules"]:
        missing = metric_names(rule["expr"]) - exported_names()
        assert not missing, f"{rule['alert']}: {missing}"
