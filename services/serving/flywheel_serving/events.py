"""Readers of the events serving follows and builders of those it publishes. Pure."""

from __future__ import annotations

from typing import Any

from flywheel.events import envelope
from flywheel_serving.core import Target
from flywheel_serving.topics import (
    FORWARDED_TOPIC,
    PROMOTED_TOPIC,
    REGISTERED_TOPIC,
    REJECTED_TOPIC,
    ROLLED_BACK_TOPIC,
    SHADOWED_TOPIC,
)


def target_of(topic_name: str, record: dict[str, Any]) -> Target:
    """The version a promotion or a rollback puts in production (or a registration may put there later, a
    shadowing beside it, a rejection out of the shadow), with the event's envelope as the cause."""
    if topic_name == REJECTED_TOPIC:  # no artifact: the version only leaves the shadow
        return Target(record["model_id"], record["model_version"], "", _plain_envelope(record["envelope"]))
    if topic_name in (PROMOTED_TOPIC, REGISTERED_TOPIC, SHADOWED_TOPIC):
        version = record["model_version"]
    elif topic_name == ROLLED_BACK_TOPIC:
        version = record["to_version"]
    else:
        raise ValueError(f"serving does not follow {topic_name}")
    return Target(record["model_id"], version, record["artifact_uri"], _plain_envelope(record["envelope"]))


def _plain_envelope(env: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": env["event_id"], "correlation_id": env["correlation_id"]}


def feedback_forwarded(model_id: str, request_id: str, labels: list[str], origin: str, received_at: int,
                       producer: str) -> dict[str, Any]:
    """FeedbackForwarded: labels this replica could not join, for the replica that answered `request_id`."""
    return {"envelope": envelope(producer, correlation_id=request_id), "model_id": model_id,
            "request_id": request_id, "labels": list(labels), "origin_replica": origin, "received_at": received_at}


def forwarded_of(topic_name: str, record: dict[str, Any]) -> tuple[str, str, list[str], str]:
    """(model_id, request_id, labels, origin replica) of a FeedbackForwarded record."""
    if topic_name != FORWARDED_TOPIC:
        raise ValueError(f"not forwarded feedback: {topic_name}")
    return record["model_id"], record["request_id"], list(record["labels"]), record["origin_replica"]


def load_failed(target: Target, serving_version: str | None, reason: str, producer: str) -> dict[str, Any]:
    """ModelLoadFailed: what could not load, why, and the version that keeps serving."""
    return {
        "envelope": envelope(producer, correlation_id=f"load:{target.model_id}:{target.version}",
                             causation=target.cause),
        "model_id": target.model_id,
        "model_version": target.version,
        "artifact_uri": target.artifact_uri,
        "serving_version": serving_version,
        "reason": reason[:2000],
    }
