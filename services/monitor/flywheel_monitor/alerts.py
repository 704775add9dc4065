"""Prometheus alerting rules and their promtool unit tests, as data (rendered to YAML by assets.py)."""

from __future__ import annotations

from typing import Any

from flywheel_monitor.dashboards import DEAD_LETTERS_10M, JOB

LAG_RECORDS = 1000  # a group this far behind for LAG_FOR is not keeping up (docs/operations.md#consumer-lag)
LAG_FOR = "10m"
STALL_S = 180  # records waiting this long with no committed progress: liveness has not cured it


def _alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary}}


RULES: dict[str, Any] = {"groups": [{"name": "flywheel-monitor", "rules": [
    _alert("FlywheelMonitorDown", f"up{{{JOB}}} == 0", "2m", "critical",
           "The monitor is not scraped: no retrain triggers, no model health."),
    _alert("FlywheelModelRetrainRequested",
           "sum by (model, rule, trigger) (increase(flywheel_monitor_retrain_triggers_total[15m])) > 0",
           "0m", "info", "{{ $labels.model }}: retrain requested by rule {{ $labels.rule }} ({{ $labels.trigger }})."),
    _alert("FlywheelRetrainStorm",
           "sum by (model) (increase(flywheel_monitor_retrain_triggers_total[1h])) > 3", "0m", "warning",
           "{{ $labels.model }}: more than 3 retrain requests in an hour; check cooldown and hysteresis."),
    _alert("FlywheelDeadLetters", f"{DEAD_LETTERS_10M} > 0", "0m", "warning",
           "{{ $labels.service }} dead-lettered records from {{ $labels.source_topic }} in the last 10 minutes; "
           "read them with `flywheel tail {{ $labels.service }}.dead-letter`."),
    _alert("FlywheelTrainingFailures",
           'sum(increase(flywheel_training_runs_total{status="failed"}[1h])) > 2', "0m", "warning",
           "More than 2 training runs failed in the last hour."),
    _alert("FlywheelMonitorSlow",
           "histogram_quantile(0.99, sum by (le) (rate(flywheel_monitor_processing_seconds_bucket[5m]))) > 0.5",
           "10m", "warning", "Monitor p99 processing latency above 500 ms."),
    # Every Faust service exports its own group's lag (flywheel/health.py).
    _alert("FlywheelConsumerLag", f"sum by (group, topic) (flywheel_consumer_lag) > {LAG_RECORDS}", LAG_FOR,
           "warning", "{{ $labels.group }} is {{ $value }} records behind on {{ $labels.topic }}; "
                      "see docs/operations.md#consumer-lag."),
    _alert("FlywheelConsumerStalled",
           f"max by (group, topic, partition) (flywheel_consumer_stalled_seconds) > {STALL_S}", "0m", "critical",
           "{{ $labels.group }}: records wait on {{ $labels.topic }}[{{ $labels.partition }}] with no progress "
           "for {{ $value }}s; /livez fails, see docs/operations.md#health."),
]}]}


def _series(name: str, values: str) -> dict[str, str]:
    return {"series": name, "values": values}


def _dead_letters(service: str, source_topic: str) -> dict[str, Any]:
    return {"exp_labels": {"severity": "warning", "service": service, "source_topic": source_topic},
            "exp_annotations": {"summary": f"{service} dead-lettered records from {source_topic} in the last 10 "
                                           f"minutes; read them with `flywheel tail {service}.dead-letter`."}}


TESTS: dict[str, Any] = {
    "rule_files": ["flywheel-monitor.rules.yml"],
    "evaluation_interval": "1m",
    "tests": [
        {"interval": "1m",
         "input_series": [
             # behind, and still behind 10 minutes later: an alert; the other topic catches up in time
             _series('flywheel_consumer_lag{job="flywheel-monitor",group="flywheel-monitor",'
                     'topic="model.metrics-observed",partition="0"}', "0 800 1500x14"),
             _series('flywheel_consumer_lag{job="flywheel-monitor",group="flywheel-monitor",'
                     'topic="model.metrics-observed",partition="1"}', "0 100 200x14"),
             _series('flywheel_consumer_lag{job="flywheel-monitor",group="flywheel-monitor",'
                     'topic="training.run-failed",partition="0"}', "0 5000x5 0x10"),
             _series('flywheel_consumer_stalled_seconds{job="flywheel-orchestrator",group="flywheel-orchestrator",'
                     'topic="retrain.requested",partition="2"}', "0 60 120 180 240 0x5"),
         ],
         "alert_rule_test": [
             {"eval_time": "8m", "alertname": "FlywheelConsumerLag", "exp_alerts": []},
             {"eval_time": "13m", "alertname": "FlywheelConsumerLag", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "group": "flywheel-monitor", "topic": "model.metrics-observed"},
                  "exp_annotations": {"summary": "flywheel-monitor is 1700 records behind on model.metrics-observed; "
                                                 "see docs/operations.md#consumer-lag."}}]},
             {"eval_time": "3m", "alertname": "FlywheelConsumerStalled", "exp_alerts": []},
             {"eval_time": "4m", "alertname": "FlywheelConsumerStalled", "exp_alerts": [
                 {"exp_labels": {"severity": "critical", "group": "flywheel-orchestrator", "topic": "retrain.requested",
                                 "partition": "2"},
                  "exp_annotations": {"summary": "flywheel-orchestrator: records wait on retrain.requested[2] with no "
                                                 "progress for 240s; /livez fails, see docs/operations.md#health."}}]},
             {"eval_time": "6m", "alertname": "FlywheelConsumerStalled", "exp_alerts": []},
         ]},
        {"interval": "1m",
         "input_series": [_series(f"up{{{JOB},instance=\"m:6066\"}}", "1 1 0 0 0 0"),
                          _series('flywheel_monitor_retrain_triggers_total{model="m",rule="accuracy-low",'
                                  'trigger="METRIC_BREACH"}', "0 0 1 1 1 2 3 4 5 6")],
         "alert_rule_test": [
             {"eval_time": "1m", "alertname": "FlywheelMonitorDown", "exp_alerts": []},
             {"eval_time": "5m", "alertname": "FlywheelMonitorDown", "exp_alerts": [
                 {"exp_labels": {"severity": "critical", "job": "flywheel-monitor", "instance": "m:6066"},
                  "exp_annotations": {"summary": "The monitor is not scraped: no retrain triggers, no model health."}}]},
             {"eval_time": "1m", "alertname": "FlywheelModelRetrainRequested", "exp_alerts": []},
             {"eval_time": "3m", "alertname": "FlywheelModelRetrainRequested", "exp_alerts": [
                 {"exp_labels": {"severity": "info", "model": "m", "rule": "accuracy-low", "trigger": "METRIC_BREACH"},
                  "exp_annotations": {"summary": "m: retrain requested by rule accuracy-low (METRIC_BREACH)."}}]},
             {"eval_time": "4m", "alertname": "FlywheelRetrainStorm", "exp_alerts": []},
             {"eval_time": "9m", "alertname": "FlywheelRetrainStorm", "exp_alerts": [
                 {"exp_labels": {"severity": "warning", "model": "m"},
                  "exp_annotations": {"summary": "m: more than 3 retrain requests in an hour; check cooldown and "
                                                 "hysteresis."}}]},
         ]},
        {"interval": "1m",
         "input_series": [_series('flywheel_dead_letters_total{service="monitor",source_topic="t",error_type="E"}',
                                  "0x5 1 2 2x20"),
                          # appears with its first dead letter at 3m (no zero sample before it)
                          _series('flywheel_dead_letters_total{service="ingest",source_topic="sqs:q",'
                                  'error_type="UndecodableRecord"}', "_x3 1x20"),
                          _series('flywheel_dead_letters_total{service="ingest",source_topic="sqs:q",'
                                  'error_type="InvalidEvent"}', "_x3 0x20"),
                          _series('flywheel_training_runs_total{status="failed"}', "0 1 2 3 3 3")],
         "alert_rule_test": [
             {"eval_time": "2m", "alertname": "FlywheelDeadLetters", "exp_alerts": []},
             {"eval_time": "4m", "alertname": "FlywheelDeadLetters", "exp_alerts": [_dead_letters("ingest", "sqs:q")]},
             {"eval_time": "8m", "alertname": "FlywheelDeadLetters", "exp_alerts": [
                 _dead_letters("monitor", "t"), _dead_letters("ingest", "sqs:q")]},
             {"eval_time": "16m", "alertname": "FlywheelDeadLetters", "exp_alerts": [_dead_letters("monitor", "t")]},
             {"eval_time": "20m", "alertname": "FlywheelDeadLetters", "exp_alerts": []},
             {"eval_time": "2m", "alertname": "FlywheelTrainingFailures", "exp_alerts": []},
             {"eval_time": "4m", "alertname": "FlywheelTrainingFailures", "exp_alerts": [
                 {"exp_labels": {"severity": "warning"},
                  "exp_annotations": {"summary": "More than 2 training runs failed in the last hour."}}]},
         ]},
    ],
}
