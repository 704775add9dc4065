"""The topic catalogue: the whole event map.

Every topic names its key, value schema, partitions, its one producer, the services that consume it live,
and the services that read it back from the start when they boot (`replayed_by`). Each service's
`topics.py` is derived from this file, `flywheel topics` prints it, and `docs/architecture.md` carries it
as a generated table; contract tests keep the three in step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class Service:
    INGEST = "ingest"
    ORCHESTRATOR = "orchestrator"
    MONITOR = "monitor"
    SERVING = "serving"  # the model server (services/serving): predictions, hot swap on promotion
    OPERATOR = "operator"  # people, through `flywheel produce` / `flywheel retrain`


# The services this repository runs (each has services/<name>/ and a flywheel_<name> package).
RUNNING_SERVICES: tuple[str, ...] = (Service.INGEST, Service.ORCHESTRATOR, Service.MONITOR, Service.SERVING)


@dataclass(frozen=True)
class Durability:
    """How many brokers hold each partition, and how many must have a write before acks=all confirms it."""

    replication_factor: int
    min_insync_replicas: int


# Per environment, chosen by `flywheel topics apply --environment` (docs/decisions/0006-topic-provisioning.md):
# one local broker; MSK over three AZs survives one broker down without refusing writes.
ENVIRONMENTS: dict[str, Durability] = {"local": Durability(1, 1), "msk": Durability(3, 2)}

DAY_MS = 24 * 60 * 60 * 1000
# Retention by topic kind (docs/decisions/0006-topic-provisioning.md). Dead letters outlive the events they
# hold, so a fix and `flywheel dlq replay` can still come after the source topic has let them go.
EVENT_RETENTION_MS = 30 * DAY_MS
DEAD_LETTER_RETENTION_MS = 90 * DAY_MS


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
    cleanup_policy: str = "delete"  # "compact" for a state topic: the latest record per key is kept
    retention_ms: int = EVENT_RETENTION_MS  # -1: kept forever

    def configs(self, environment: str) -> dict[str, str]:
        """Topic configs as `flywheel topics apply` sets them (the replication factor is not a config)."""
        return {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms),
                "min.insync.replicas": str(durability(environment).min_insync_replicas)}


# Keyed by model_id so that every event about one model keeps its order; co-partitioned (same count)
# so that an agent can join them against tables keyed by model.
DEFAULT_MODEL_PARTITIONS = 4


def model_partitions(environ: Mapping[str, str] = os.environ) -> int:
    """The model topics' partition count: 4, or FLYWHEEL_MODEL_PARTITIONS for a deployment that runs more
    workers than that. Every service and `flywheel topics apply` must see the same value; on existing topics
    a change is refused like any partition change (docs/operations.md, "Scaling out")."""
    raw = environ.get("FLYWHEEL_MODEL_PARTITIONS", "").strip()
    if not raw:
        return DEFAULT_MODEL_PARTITIONS
    if not raw.isdigit() or not 1 <= int(raw) <= 256:
        raise ValueError(f"FLYWHEEL_MODEL_PARTITIONS must be a whole number from 1 to 256, got {raw!r}")
    return int(raw)


MODEL_PARTITIONS = model_partitions()

_O, _M = (Service.ORCHESTRATOR,), (Service.MONITOR,)
_DLQ_MS = DEAD_LETTER_RETENTION_MS

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
              Service.ORCHESTRATOR, "A trained, evaluated model version was registered.",
              consumers=(Service.MONITOR, Service.SERVING), replayed_by=_M),
    TopicSpec("model.version-promoted", "ModelVersionPromoted", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A version became production (the promotion gate's evidence inside); serving swaps to it.",
              consumers=(Service.SERVING,)),
    TopicSpec("model.version-rejected", "ModelVersionRejected", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "The promotion gate kept a registered version out of production, with its evidence; serving drops "
              "it if it was the shadow.", consumers=(Service.SERVING,)),
    TopicSpec("model.version-shadowed", "ModelVersionShadowed", "model_id", MODEL_PARTITIONS, Service.ORCHESTRATOR,
              "A version passed the offline gate and became the candidate serving shadows beside production.",
              consumers=(Service.SERVING,)),
    TopicSpec("model.shadow-evaluated", "ModelShadowEvaluated", "model_id", MODEL_PARTITIONS, Service.SERVING,
              "A window of live paired correctness, shadow candidate vs production, from labelled feedback.",
              consumers=_O),
    TopicSpec("model.version-rolled-back", "ModelVersionRolledBack", "model_id", MODEL_PARTITIONS,
              Service.ORCHESTRATOR, "Production went back to the previous version (probation breach or operator).",
              consumers=(Service.SERVING,)),
    TopicSpec("model.stage-change-requested", "ModelStageChangeRequested", "model_id", MODEL_PARTITIONS,
              Service.OPERATOR, "A person asked to promote a version or roll back (flywheel models).", consumers=_O),
    TopicSpec("model.load-failed", "ModelLoadFailed", "model_id", MODEL_PARTITIONS, Service.SERVING,
              "Serving could not load a version; the one before keeps serving."),
    TopicSpec("model.metrics-observed", "ModelMetricsObserved", "model_id", MODEL_PARTITIONS, Service.SERVING,
              "Live metrics from serving, one event may summarise a window of observations.", consumers=_M),
    TopicSpec("serving.feedback-forwarded", "FeedbackForwarded", "model_id", MODEL_PARTITIONS, Service.SERVING,
              "Feedback a replica could not join, handed to the replica that answered the request.",
              consumers=(Service.SERVING,), retention_ms=DAY_MS),
    TopicSpec("ingest.dead-letter", "DeadLetter", "source_topic", 1, Service.INGEST,
              "Records ingest could not process, with original bytes and reason.", retention_ms=_DLQ_MS),
    TopicSpec("orchestrator.dead-letter", "DeadLetter", "source_topic", 1, Service.ORCHESTRATOR,
              "Records the orchestrator could not process.", retention_ms=_DLQ_MS),
    TopicSpec("monitor.dead-letter", "DeadLetter", "source_topic", 1, Service.MONITOR,
              "Records the monitor could not process.", retention_ms=_DLQ_MS),
    TopicSpec("serving.dead-letter", "DeadLetter", "source_topic", 1, Service.SERVING,
              "Promotion or rollback events serving could not decode.", retention_ms=_DLQ_MS),
)

BY_NAME: dict[str, TopicSpec] = {t.name: t for t in TOPICS}


def topic(name: str) -> TopicSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no topic {name!r} in the catalogue; known: {', '.join(sorted(BY_NAME))}") from None


def durability(environment: str) -> Durability:
    try:
        return ENVIRONMENTS[environment]
    except KeyError:
        raise KeyError(f"no environment {environment!r}; known: {', '.join(ENVIRONMENTS)}") from None


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
    rows = ["| topic | event | key | partitions | retention | producer | consumers | replayed at start-up by |",
            "|---|---|---|---|---|---|---|---|"]
    for t in TOPICS:
        rows.append(f"| `{t.name}` | {t.value_schema} | {t.key} | {t.partitions} | {retention_text(t)} | "
                    f"{t.producer} | {', '.join(t.consumers) or '—'} | {', '.join(t.replayed_by) or '—'} |")
    return "\n".join(rows) + "\n"


def retention_text(spec: TopicSpec) -> str:
    """`30 d`, `forever`, `compacted, forever`: how long records stay, for the tables people read."""
    if spec.retention_ms < 0:
        kept = "forever"
    else:
        days, rest = divmod(spec.retention_ms, DAY_MS)
        kept = f"{days} d" if days and not rest else f"{spec.retention_ms / 3_600_000:g} h"
    return f"compacted, {kept}" if "compact" in spec.cleanup_policy else kept
