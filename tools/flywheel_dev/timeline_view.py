"""How the demo shows the platform at work: live event lines, progress, the summary and a lineage walk."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, TextIO

from flywheel_dev.timeline import Seen

# What is worth a glance on each event's line.
HIGHLIGHTS: dict[str, tuple[str, ...]] = {
    "DatasetVersionReady": ("dataset_version_id", "row_count", "label_counts"),
    "DatasetRejected": ("key", "reason", "detail", "line"),
    "TrainingRunStarted": ("run_id", "trigger", "dataset_version_id", "launcher"),
    "TrainingRunSucceeded": ("run_id", "metrics", "duration_seconds"),
    "TrainingRunFailed": ("run_id", "reason"),
    "TrainingRunSuperseded": ("run_id", "superseded_by_run_id"),
    "ModelVersionRegistered": ("model_version", "metrics", "baseline_metrics"),
    "RetrainRequested": ("model_version", "trigger", "rule", "metric", "observed_value", "threshold", "sample_size"),
    "ModelVersionPromoted": ("model_version", "previous_version", "reason", "evidence"),
    "ModelVersionRejected": ("model_version", "champion_version", "reason", "evidence"),
    "ModelVersionRolledBack": ("from_version", "to_version", "reason", "evidence"),
    "ModelLoadFailed": ("model_version", "serving_version", "reason"),
    "DeadLetter": ("source_topic", "error_type", "reason"),
}
# Serving sends one ModelMetricsObserved per metric and window: the timeline prints the measured accuracy
# of each window and counts the rest (macro-F1, input-feature and output histograms) in the summary.
QUIET = {"ModelMetricsObserved"}
SHOWN_METRICS = {"accuracy"}
ALERT = {"DeadLetter", "TrainingRunFailed", "DatasetRejected", "ModelVersionRejected", "ModelVersionRolledBack",
         "ModelLoadFailed"}


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.1e}" if value and abs(value) < 0.001 else f"{value:.3f}"
    text = str(value)
    return text if len(text) <= 48 else text[:45] + "..."


class Printer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._lock = threading.Lock()

    def _paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.tty else text

    def _line(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def step(self, text: str) -> None:
        self._line(self._paint(f"==> {text}", "1;36"))

    def event(self, seen: Seen) -> None:
        if seen.name in QUIET:
            if seen.name == "ModelMetricsObserved" and seen.record.get("metric") in SHOWN_METRICS:
                self._metric(seen)
            return
        env = seen.record.get("envelope") or {}
        fields = " ".join(f"{k}={_short(seen.record[k])}" for k in HIGHLIGHTS.get(seen.name, ())
                          if seen.record.get(k) is not None)
        ids = f"[event {str(env.get('event_id', ''))[:8]} corr {_short(env.get('correlation_id', ''))}]"
        colour = "31" if seen.name in ALERT else "32"
        self._line(f"  +{seen.at:6.1f}s {self._paint(f'{seen.name:<23}', colour)} {fields} {self._paint(ids, '2')}")

    def _metric(self, seen: Seen) -> None:
        r = seen.record
        self._line(self._paint(f"  +{seen.at:6.1f}s live {r.get('metric'):<18} {r.get('value'):.3f} "
                               f"n={r.get('sample_count')} version={r.get('model_version')}", "2"))

    def note(self, at: float, text: str) -> None:
        """Something the application saw (not an event): e.g. the first answer from a new version."""
        label = self._paint(f"{'Application':<23}", "33")
        self._line(f"  +{at:6.1f}s {label} {text}")

    def progress(self, entry: dict[str, Any]) -> None:
        extras = " ".join(f"{k}={_short(v)}" for k, v in entry.items() if k not in {"ts", "level", "logger", "msg"})
        self._line(self._paint(f"           {entry.get('msg')} {extras}", "2"))

    def failure(self, text: str, workdir: Path) -> None:
        self._line(self._paint(f"!! {text}", "1;31"))
        self._line(f"   service logs: {workdir}/{{ingest,orchestrator,monitor,serving}}.log")

    def summary(self, events: list[Seen], platform: Any, stack: Any) -> None:
        counts: dict[str, int] = {}
        for seen in events:
            counts[seen.name] = counts.get(seen.name, 0) + 1
        self.step("the loop closed; events seen: " + ", ".join(f"{n} x{c}" for n, c in sorted(counts.items())))
        self._line("   where to look:")
        for name, proc in platform.procs.items():
            self._line(f"     {name:<12} {proc.url}/metrics")
        self._line(f"     events       FLYWHEEL_KAFKA_BOOTSTRAP={stack.kafka_bootstrap} "
                   "flywheel tail model.version-registered --from-beginning")


def print_lineage(printer: Printer, events: list[Seen], model: Seen) -> None:
    """Walk the final model back through its causes, event by event, via causation ids."""
    by_id = {(s.record.get("envelope") or {}).get("event_id"): s for s in events}
    printer.step(f"lineage of model {model.get('model_id')} version {model.get('model_version')}:")
    current: Seen | None = model
    depth = 0
    while current is not None and depth < 12:
        env = current.record.get("envelope") or {}
        detail = " ".join(f"{k}={_short(current.record[k])}" for k in HIGHLIGHTS.get(current.name, ())
                          if k in current.record)
        printer._line(f"   {'  ' * depth}{current.name} {detail} [event {str(env.get('event_id'))[:8]}]")
        current = by_id.get(env.get("causation_id"))
        depth += 1
    lineage = model.get("lineage") or {}
    for key, value in sorted(lineage.items()):
        printer._line(f"   {'  ' * depth}{key}: {value}")
