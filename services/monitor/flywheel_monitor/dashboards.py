"""Grafana dashboards as code (grafana-foundation-sdk): every panel's PromQL lives here, nowhere else.

Generated into k8s/monitoring/dashboards/ by `python -m flywheel_monitor.assets write k8s/monitoring`;
a deploy test fails when the committed JSON differs, an integration test runs every query on a real
Prometheus scraping the running service the dashboard reads (`SCRAPES`): the monitor for most, serving for
the serving dashboard (tests/integration/test_serving_dashboard.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job="flywheel-monitor"'
SERVING_JOB = 'job="flywheel-serving"'
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
    more: tuple[tuple[str, str], ...] = ()  # further (expr, legend) targets on the same panel


def _quantiles(metric: str, qs: tuple[float, ...]) -> tuple[str, ...]:
    return tuple(f"histogram_quantile({q}, sum by (le, model) (rate({metric}_bucket[5m])))" for q in qs)


_LATENCY = _quantiles("flywheel_serving_request_seconds", (0.5, 0.9, 0.99))
_BATCH = _quantiles("flywheel_serving_batch_size", (0.5, 0.99))
# Share of labelled texts the served version got right: measured from feedback joined to its answers.
LIVE_ACCURACY = ('sum by (model, version) (rate(flywheel_serving_feedback_total{outcome="correct"}[15m])) / '
                 "sum by (model, version) (rate(flywheel_serving_feedback_total[15m]))")
SHADOW_ACCURACY = ('sum by (model, role) (rate(flywheel_serving_shadow_feedback_total{outcome="correct"}[15m])) / '
                   "sum by (model, role) (rate(flywheel_serving_shadow_feedback_total[15m]))")


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
    # Every Faust service exports these (flywheel/health.py); docs/operations.md#health says what to do.
    "flywheel-platform-health": ("Flywheel / Platform health", [
        PanelSpec("Consumer lag by group and partition", "sum by (group, topic, partition) (flywheel_consumer_lag)",
                  "{{group}} {{topic}}[{{partition}}]"),
        PanelSpec("Consumer lag by group", "sum by (group) (flywheel_consumer_lag)", "{{group}}"),
        PanelSpec("Records waiting without progress (liveness stall clock)",
                  "max by (group, topic, partition) (flywheel_consumer_stalled_seconds)",
                  "{{group}} {{topic}}[{{partition}}]", "s"),
        PanelSpec("Oldest worker-pool task", "max by (service, pool) (flywheel_worker_pool_oldest_task_seconds)",
                  "{{service}} {{pool}}", "s"),
        PanelSpec("Live (1) / stalled (0)", "min by (service) (flywheel_live)", "{{service}}", kind="stat"),
        PanelSpec("Ready (1) / loading (0)", "min by (service) (flywheel_ready)", "{{service}}", kind="stat"),
    ]),
    "flywheel-serving": ("Flywheel / Serving", [
        PanelSpec("Requests per second by status", "sum by (model, code) (rate(flywheel_serving_requests_total[5m]))",
                  "{{model}} {{code}}", "reqps"),
        PanelSpec("Request latency p50 / p90 / p99", _LATENCY[0], "{{model}} p50", "s",
                  more=((_LATENCY[1], "{{model}} p90"), (_LATENCY[2], "{{model}} p99"))),
        PanelSpec("Texts per forward (dynamic batch size) p50 / p99", _BATCH[0], "{{model}} p50",
                  more=((_BATCH[1], "{{model}} p99"),
                        ("sum by (model) (rate(flywheel_serving_batch_size_sum[5m])) / "
                         "sum by (model) (rate(flywheel_serving_batch_size_count[5m]))", "{{model}} mean"))),
        PanelSpec("Live accuracy (labelled feedback, 15m)",
                  LIVE_ACCURACY,
                  "{{model}} {{version}}", "percentunit"),
        # Shadow evaluation (docs/decisions/0013-shadow-evaluation.md): the same labelled texts, both versions.
        PanelSpec("Shadow: live accuracy of production vs candidate (same labelled texts, 15m)",
                  SHADOW_ACCURACY, "{{model}} {{role}}", "percentunit"),
        PanelSpec("Shadow: requests by what the candidate did",
                  "sum by (model, outcome) (rate(flywheel_serving_shadow_requests_total[15m]))",
                  "{{model}} {{outcome}}", "reqps"),
        PanelSpec("Version in production", "max by (model, version) (flywheel_serving_model_version_info)",
                  "{{model}} {{version}}", kind="stat"),
        PanelSpec("Predictions per second by label",
                  "sum by (model, label) (rate(flywheel_serving_predictions_total[5m]))", "{{model}} {{label}}", "ops"),
        PanelSpec("Hot swaps and failed loads (1h)", "sum by (model) (increase(flywheel_serving_swaps_total[1h]))",
                  "{{model}} swaps",
                  more=(("sum by (model) (increase(flywheel_serving_load_failures_total[1h]))", "{{model}} failed loads"),)),
        PanelSpec("Feedback for unknown request ids per second",
                  "sum by (model) (rate(flywheel_serving_feedback_unknown_total[5m]))", "{{model}}", "ops"),
        PanelSpec("Model load time p95",
                  "histogram_quantile(0.95, sum by (le, model) (rate(flywheel_serving_load_seconds_bucket[1h])))",
                  "{{model}}", "s"),
        PanelSpec("Serving up", f"up{{{SERVING_JOB}}}", kind="stat"),
    ]),
}
# Training spend, exported by the orchestrator per succeeded run (flywheel_orchestrator.metrics,
# docs/decisions/0011): SageMaker runs at their estimated price, local runs as instance_type="local" at 0 USD.
_RUN_COST = tuple(f"histogram_quantile({q}, sum by (le, model_id) (rate(flywheel_orchestrator_run_cost_usd_bucket[1d])))"
                  for q in (0.5, 0.95))
DASHBOARDS["flywheel-training-cost"] = ("Flywheel / Training cost", [
    PanelSpec("Training spend (USD, last 24h)",
              "sum by (model_id, instance_type) (increase(flywheel_orchestrator_training_cost_usd_total[1d]))",
              "{{model_id}} {{instance_type}}", "currencyUSD"),
    PanelSpec("Billable training time (last 24h)",
              "sum by (model_id, instance_type) (increase(flywheel_orchestrator_training_billable_seconds_total[1d]))",
              "{{model_id}} {{instance_type}}", "s"),
    PanelSpec("Managed-spot savings (USD, last 24h)",
              "sum by (model_id) (increase(flywheel_orchestrator_training_spot_savings_usd_total[1d]))",
              "{{model_id}}", "currencyUSD"),
    PanelSpec("Cost per run p50 / p95 (USD)", _RUN_COST[0], "{{model_id}} p50", "currencyUSD",
              more=((_RUN_COST[1], "{{model_id}} p95"),)),
    PanelSpec("Training spend since start (USD)", "sum(flywheel_orchestrator_training_cost_usd_total)",
              unit="currencyUSD", kind="stat"),
    PanelSpec("Succeeded runs costed since start", "sum by (model_id) (flywheel_orchestrator_run_cost_usd_count)",
              "{{model_id}}", kind="stat"),
])
# The Prometheus job whose metrics each dashboard reads (what its integration test scrapes).
JOBS = {"flywheel-serving": "flywheel-serving", "flywheel-training-cost": "flywheel-orchestrator"}
SCRAPES: dict[str, str] = {uid: JOBS.get(uid, "flywheel-monitor") for uid in DASHBOARDS}


def _panel(spec: PanelSpec) -> object:
    builder = stat.Panel() if spec.kind == "stat" else timeseries.Panel()
    query = prometheus.Dataquery().expr(spec.expr).legend_format(spec.legend or "__auto").ref_id("A")
    panel = (builder.title(spec.title).datasource(DATASOURCE).unit(spec.unit)
             .height(8).span(12 if spec.kind == "timeseries" else 6).with_target(query))
    for ref, (expr, legend) in zip("BCDEFG", spec.more, strict=False):
        panel = panel.with_target(prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").ref_id(ref))
    return panel


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
