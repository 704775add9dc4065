"""The topic catalogue against the schemas and the services' own topic lists."""

from __future__ import annotations

import importlib

import pytest

from flywheel import catalogue
from flywheel.catalogue import (
    MODEL_PARTITIONS,
    RUNNING_SERVICES,
    TOPICS,
    Service,
    consumed_by,
    dead_letter_topic,
    produced_by,
    replayed_by,
    topic,
)
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

SCHEMAS = SchemaSet(REPO_SCHEMA_DIR)
SERVICES = RUNNING_SERVICES


def test_topic_names_are_unique() -> None:
    assert len({t.name for t in TOPICS}) == len(TOPICS)


@pytest.mark.parametrize("spec", TOPICS, ids=lambda t: t.name)
def test_each_topic_carries_an_event_keyed_by_one_of_its_fields(spec: catalogue.TopicSpec) -> None:
    schema = SCHEMAS.event(spec.value_schema).expanded
    assert spec.key in {f["name"] for f in schema["fields"]}
    assert spec.partitions >= 1 and spec.doc


def test_topics_about_models_are_co_partitioned_by_model() -> None:
    by_model = [t for t in TOPICS if t.key == "model_id"]
    assert by_model and {t.partitions for t in by_model} == {MODEL_PARTITIONS}


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_dead_letter_topic_it_alone_writes(service: str) -> None:
    spec = dead_letter_topic(service)
    assert (spec.value_schema, spec.producer) == ("DeadLetter", service)


def test_every_event_travels_somewhere() -> None:
    carried = {f"flywheel.{t.value_schema}" for t in TOPICS}
    assert carried == set(SCHEMAS.events)


@pytest.mark.parametrize("service", SERVICES)
def test_service_topic_lists_are_the_catalogue_s(service: str) -> None:
    topics = importlib.import_module(f"flywheel_{service}.topics")
    assert service == topics.SERVICE
    assert set(topics.PRODUCES) == set(produced_by(service)), "single writer per topic"
    assert set(topics.CONSUMES) == set(consumed_by(service))
    assert set(topics.REPLAYS) == set(replayed_by(service))
    # The one exception: serving replicas hand feedback to each other (docs/decisions/0007-serving.md).
    peers = {"serving.feedback-forwarded"} if service == "serving" else set()
    assert set(topics.CONSUMES) & set(topics.PRODUCES) == peers


def test_every_consumer_and_replayer_is_a_running_service() -> None:
    for spec in TOPICS:
        assert set(spec.consumers) <= set(RUNNING_SERVICES), spec.name
        assert set(spec.replayed_by) <= set(RUNNING_SERVICES), spec.name
        assert spec.producer in (*RUNNING_SERVICES, Service.SERVING, Service.OPERATOR), spec.name


def test_every_event_a_service_produces_for_others_has_a_consumer_or_is_for_people() -> None:
    # Dead letters, rejections and failed loads are read by people (flywheel tail, the timeline), everything
    # else by a service.
    unread = {t.name for t in TOPICS if not t.consumers}
    assert unread == {"dataset.rejected", "model.load-failed",
                      *(f"{s}.dead-letter" for s in SERVICES)}


def test_unknown_topic_error_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="no topic 'nope' in the catalogue; known: dataset.rejected"):
        topic("nope")
