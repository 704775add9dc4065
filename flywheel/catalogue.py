"""The topic catalogue: the whole event map.

Every topic names its key, value schema, partitions, its one producer, the services that consume it live,
and the services that read it back from the start when they boot (`replayed_by`). Each service's
`topics.py` is derived from this file, `flywheel topics` prints it, and `docs/architecture.md` carries it
as a generated table; contract tests keep the three in step.
"""

from __future__ import annotations

from dataclasses import dataclass


class Service:
    INGEST = "ingest"
    ORCHESTRATOR = "orchestrator"
    MONITOR = "monitor"
    SERVING = "serving"  # the model servers users run; played locally by the demo's serving stand-in
    OPERATOR = "operator"  # people, through `flywheel produce` / `flywheel retrain`


# The services this repository runs (each has services/<name>/ and a flywheel_<name> package).
RUNNING_SERVICES: tuple[str, ...] = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    value_schema: str
    key: str
    partitions: int
    producer: str
    doc: str
    consumers: tuple[str, ...] = ()  # services that consume the topic live
    replayed_by: tuple[str, ...] = ()  # services that read it from offset 0 at start-up to rebuild state


# Keyed by model_id so that every event about one model keeps its order; co-partitioned (same count)
# so that an agent can join them against tables keyed by model.
MODEL_PARTITIONS = 4

_O, _M = (Service.ORCHESTRATOR,), (Service.MONITOR,)

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("dataset.version-ready", "DatasetVersionReady", "model_id", MODEL_PARTITIONS, Service.INGEST,
              "A validated, immutable dataset version with its manifest.", consumers=_O, replayed_by=_O),
    TopicSpec("dataset.rejected", "DatasetRejected", "model_id", MODEL_PARTITIONS, Service.INGEST,
              "Data that failed validation, with the reason and the line."),
    TopicSpec("retrain.requested", "RetrainRequested", "model_id", MODEL_PARTITIONS, Service.MONITOR,
              "Metric breach or drift evidence asking for a retrain.", consumers=_O, replayed_by=_M),
    TopicSpec("retrain.manual-requested", "RetrainRequested", "model_id", MODEL_PARTITIONS, Service.OPERATOR,
              "A person asked for a retrain (flywheel retrain).", consumers=_O),
    TopicSpec("training.run-started", "TrainingRunStarted", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A training run was launched.", consumers=_M, replayed_by=_O),
    TopicSpec("training.run-succeeded", "TrainingRunSucceeded", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A training run produced a model artifact.", consumers=_M, replayed_by=_O),
    TopicSpec("training.run-failed", "TrainingRunFailed", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A training run ended without a model.", consumers=_M, replayed_by=_O),
    TopicSpec("training.run-superseded", "TrainingRunSuperseded", "model_id", MODEL_PARTITIONS,
              Service.ORCHESTRATOR, "A stale run was stopped or replaced by newer data.", consumers=_M,
              replayed_by=_O),
    TopicSpec("model.version-registered", "ModelVersionRegistered", "model_id", MODEL_PARTITIONS,
              Service.ORCHESTRATOR, "A trained, evaluated model version was registered.", consumers=_M,
              replayed_by=_M),
    TopicSpec("model.metrics-observed", "ModelMetricsObserved", "model_id", MODEL_PARTITIONS, Service.SERVING,
              "Live metrics from serving, one event may summarise a window of observations.", consumers=_M),
    TopicSpec("ingest.dead-letter", "DeadLetter", "source_topic", 1, Service.INGEST,
              "Records ingest could not process, with original bytes and reason."),
    TopicSpec("orchestrator.dead-letter", "DeadLetter", "source_topic", 1, Service.ORCHESTRATOR,
              "Records the orchestrator could not process."),
    TopicSpec("monitor.dead-letter", "DeadLetter", "source_topic", 1, Service.MONITOR,
              "Records the monitor could not process."),
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


def topic(name: str) -> TopicSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no topic {name!r} in the catalogue; known: {', '.join(sorted(BY_NAME))}") from None


def dead_letter_topic(service: str) -> TopicSpec:
    return topic(f"{service}.dead-letter")


def produced_by(service: str) -> tuple[str, ...]:
    """Names of the topics `service` writes (it is their one writer)."""
    return tuple(t.name for t in TOPICS if t.producer == service)


def consumed_by(service: str) -> tuple[str, ...]:
    """Names of the topics `service` consumes live."""
    return tuple(t.name for t in TOPICS if service in t.consumers)


def replayed_by(service: str) -> tuple[str, ...]:
    """Names of the topics `service` reads from the start when it boots."""
    return tuple(t.name for t in TOPICS if service in t.replayed_by)


def topic_for_event(event: str) -> str:
    """The one topic that carries `event` (short or full name); an error when it travels on several."""
    short = event.rsplit(".", 1)[-1]
    matches = [t.name for t in TOPICS if t.value_schema == short]
    if len(matches) != 1:
        raise KeyError(f"{short} travels on {', '.join(matches) or 'no topic'}: name the topic")
    return matches[0]


def event_map_markdown() -> str:
    """The catalogue as the Markdown table docs/architecture.md carries (a test keeps them equal)."""
    rows = ["| topic | event | key | partitions | producer | consumers | replayed at start-up by |",
            "|---|---|---|---|---|---|---|"]
    for t in TOPICS:
        rows.append(f"| `{t.name}` | {t.value_schema} | {t.key} | {t.partitions} | {t.producer} | "
                    f"{', '.join(t.consumers) or '—'} | {', '.join(t.replayed_by) or '—'} |")
    return "\n".join(rows) + "\n"
