"""The topic catalogue: every topic, its key, value schema, partitions and single producing service."""

from __future__ import annotations

from dataclasses import dataclass


class Service:
    INGEST = "ingest"
    ORCHESTRATOR = "orchestrator"
    MONITOR = "monitor"
    SERVING = "serving"  # the model servers users run; simulated locally by the scenario and the CLI
    OPERATOR = "operator"  # people, through `flywheel retrain`


@dataclass(frozen=True)
class TopicSpec:
    name: str
    value_schema: str
    key: str
    partitions: int
    producer: str
    doc: str


# Keyed by model_id so that every event about one model keeps its order; co-partitioned (same count)
# so that an agent can join them against tables keyed by model.
MODEL_PARTITIONS = 4

TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("dataset.version-ready", "DatasetVersionReady", "model_id", MODEL_PARTITIONS, Service.INGEST,
              "A validated, immutable dataset version with its manifest."),
    TopicSpec("dataset.rejected", "DatasetRejected", "model_id", MODEL_PARTITIONS, Service.INGEST,
              "Data that failed validation, with the reason and the line."),
    TopicSpec("retrain.requested", "RetrainRequested", "model_id", MODEL_PARTITIONS, Service.MONITOR,
              "Metric breach or drift evidence asking for a retrain."),
    TopicSpec("retrain.manual-requested", "RetrainRequested", "model_id", MODEL_PARTITIONS, Service.OPERATOR,
              "A person asked for a retrain (flywheel retrain)."),
    TopicSpec("training.run-started", "TrainingRunStarted", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A training run was launched."),
    TopicSpec("training.run-succeeded", "TrainingRunSucceeded", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A training run produced a model artifact."),
    TopicSpec("training.run-failed", "TrainingRunFailed", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A training run ended without a model."),
    TopicSpec("training.run-superseded", "TrainingRunSuperseded", "model_id", MODEL_PARTITIONS,
              Service.ORCHESTRATOR, "A stale run was stopped or replaced by newer data."),
    TopicSpec("model.version-registered", "ModelVersionRegistered", "model_id", MODEL_PARTITIONS,
              Service.ORCHESTRATOR, "A trained, evaluated model version was registered."),
    TopicSpec("model.metrics-observed", "ModelMetricsObserved", "model_id", MODEL_PARTITIONS, Service.SERVING,
              "Live metrics from serving, one event may summarise a window of observations."),
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


def produced_by(service: str) -> list[TopicSpec]:
    return [t for t in TOPICS if t.producer == service]
