"""Grafana dashboards as code (grafana-foundation-sdk): every panel's PromQL lives here, nowhere else.

Generated into k8s/monitoring/dashboards/ by `python -m flywheel_monitor.assets write k8s/monitoring`;
a deploy test fails when the committed JSON differs, an integration test runs every query on a real
Prometheus scraping a running monitor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job="flywheel-monitor"'
# Records each service dead-lettered in the last 10 minutes, per source topic. A counter series appears only
# with its first dead letter, which increase() cannot see (it has no earlier sample), so a series that did not
# exist 10 minutes ago counts with its whole value; the rest count their increase. Also the alert's expression.
DEAD_LETTERS_10M = ("sum by (service, source_topic) ((flywheel_dead_letters_total unless "
                    "flywheel_dead_letters_total offset 10m) or increase(flywheel_dead_letters_total[10m]))")


@dataclass(frozen=True)
class PanelSpec:
    title: str
    expr: str
    legend: str = ""
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"


DASHBOARDS: dict[str, tuple[str, list[PanelSpec]]] = {
    "flywheel-model-health": ("Flywheel / Model health", [
        PanelSpec("Window value by rule", "flywheel_monitor_window_value", "{{model}} {{rule}}"),
        PanelSpec("Rule threshold", "flywheel_monitor_rule_threshold", "{{model}} {{rule}} threshold"),
        PanelSpec("Samples in the evaluated window", "flywheel_monitor_window_samples", "{{model}} {{rule}}"),
        PanelSpec("Observations per second", "sum by (model) (rate(flywheel_monitor_observations_total[5m]))",
                  "{{model}}", "ops"),
        PanelSpec("Breaching evaluations per second",
                  "sum by (model, rule) (rate(flywheel_monitor_breaches_total[5m]))", "{{model}} {{rule}}", "ops"),
        PanelSpec("Known models", "flywheel_monitor_known_models", kind="stat"),
    ]),
    "flywheel-retrain-triggers": ("Flywheel / Retrain triggers", [
        PanelSpec("Retrain requests in the last hour",
                  "sum by (model, rule, trigger) (increase(flywheel_monitor_retrain_triggers_total[1h]))",
                  "{{model}} {{rule}} {{trigger}}"),
        PanelSpec("Retrain requests since start", "sum(flywheel_monitor_retrain_triggers_total)", kind="stat"),
        PanelSpec("Breach to RetrainRequested p99",
                  "histogram_quantile(0.99, sum by (le) (rate(flywheel_monitor_breach_to_trigger_seconds_bucket[5m])))",
                  "p99", "s"),
        PanelSpec("Drift PSI (worst feature) vs threshold",
                  'flywheel_monitor_window_value{rule="input-drift"}', "{{model}}"),
    ]),
    "flywheel-pipeline-latency": ("Flywheel / Pipeline latency", [
        PanelSpec("Training runs by status (1h)", "sum by (status) (increase(flywheel_training_runs_total[1h]))",
                  "{{status}}"),
        PanelSpec("Training run duration p95",
                  "histogram_quantile(0.95, sum by (le, status) (rate(flywheel_training_run_duration_seconds_bucket[1h])))",
                  "{{status}}", "s"),
        PanelSpec("Data landed to training started p95",
                  "histogram_quantile(0.95, sum by (le) (rate(flywheel_training_data_to_start_seconds_bucket[1h])))",
                  "p95", "s"),
        PanelSpec("Model versions registered (1h)", "sum(increase(flywheel_model_versions_registered_total[1h]))",
                  kind="stat"),
    ]),
    "flywheel-service-health": ("Flywheel / Monitor service health", [
        PanelSpec("Monitor up", f"up{{{JOB}}}", kind="stat"),
        PanelSpec("Events consumed per second", "sum by (event) (rate(flywheel_monitor_events_total[5m]))",
                  "{{event}}", "ops"),
        PanelSpec("Processing latency p99",
                  "histogram_quantile(0.99, sum by (le, event) (rate(flywheel_monitor_processing_seconds_bucket[5m])))",
                  "{{event}}", "s"),
        PanelSpec("Dead letters (1h)",
                  "sum by (service, error_type) (increase(flywheel_dead_letters_total[1h]))",
                  "{{service}} {{error_type}}"),
        PanelSpec("Dead letters by source topic (10m)", DEAD_LETTERS_10M, "{{service}} {{source_topic}}"),
        PanelSpec("Publish retries per second (broker failures waited out)",
                  "sum by (topic) (rate(flywheel_monitor_publish_retries_total[5m]))", "{{topic}}", "ops"),
        PanelSpec("Resident memory", f"process_resident_memory_bytes{{{JOB}}}", "{{instance}}", "bytes"),
        PanelSpec("CPU", f"rate(process_cpu_seconds_total{{{JOB}}}[5m])", "{{instance}}", "percentunit"),
    ]),
}


def _panel(spec: PanelSpec) -> object:
    builder = stat.Panel() if spec.kind == "stat" else timeseries.Panel()
    query = prometheus.Dataquery().expr(spec.expr).legend_format(spec.legend or "__auto").ref_id("A")
    return (builder.title(spec.title).datasource(DATASOURCE).unit(spec.unit)
            .height(8).span(12 if spec.kind == "timeseries" else 6).with_target(query))


def build(uid: str) -> dict:
    """One dashboard as a JSON-ready dict."""
    title, panels = DASHBOARDS[uid]
    board = (dashboard.Dashboard(title).uid(uid).tags(["flywheel", "monitor"]).refresh("30s")
             .time("now-6h", "now").timezone("browser")
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus")))
    for spec in panels:
        board = board.with_panel(_panel(spec))
    return json.loads(json.dumps(board.build(), cls=JSONEncoder))


def render(uid: str) -> str:
    return json.dumps(build(uid), indent=2, sort_keys=True) + "\n"


def queries(board: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of a rendered dashboard."""
    return [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
