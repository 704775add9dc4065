"""The ports on boto3, transformers and confluent-kafka, plus the event follower thread."""

from __future__ import annotations

import json
import logging
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flywheel.catalogue import produced_by
from flywheel.codec import AvroCodec, decode_for_topic
from flywheel.deadletter import SourceRecord, dead_letter
from flywheel.kafka import confluent_consumer_config
from flywheel.publish import KafkaPublisher
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import group_id
from flywheel_serving.core import Target
from flywheel_serving.events import forwarded_of, target_of
from flywheel_serving.inputs import FeaturePredictor, load_reference
from flywheel_serving.topics import (
    DEAD_LETTER_TOPIC,
    FORWARDED_TOPIC,
    REGISTERED_TOPIC,
    REJECTED_TOPIC,
    SERVICE,
    SHADOWED_TOPIC,
)

log = logging.getLogger(__name__)
REQUIRED_FILES = ("config.json", "labels.json")


class LifecycleStages:
    """StageReader over the lifecycle's stage store (flywheel.lifecycle, models/<id>/stages.json)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def models(self) -> list[str]:
        return list(self.store.models())

    def production(self, model_id: str) -> Target | None:
        stages = self.store.read(model_id)
        record = stages.production_record() if stages is not None else None
        return Target(model_id, record.version, record.artifact_uri) if record is not None else None

    def shadow(self, model_id: str) -> Target | None:
        stages = self.store.read(model_id)
        record = stages.shadow_record() if stages is not None else None
        return Target(model_id, record.version, record.artifact_uri) if record is not None else None


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def safe_name(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part)[:128] or "_"


class S3Artifacts:
    """Streams model.tar.gz from S3 and extracts it (tarfile's `data` filter: no links out, no absolute paths) into
    <cache>/<model>/<version>/, renamed into place only when complete, so a cached directory is whole."""

    def __init__(self, s3: Any, cache_dir: Path) -> None:
        self.s3, self.cache_dir = s3, cache_dir

    def fetch(self, target: Target) -> Path:
        final = self.cache_dir / safe_name(target.model_id) / safe_name(target.version)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        bucket, key = split_s3_uri(target.artifact_uri)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".partial-") as work:
            extracted = Path(work) / "model"
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
            try:  # a stream: decompressing overlaps the download, and no archive copy lands on disk
                with tarfile.open(fileobj=body, mode="r|*") as tar:
                    tar.extractall(extracted, filter="data")
            finally:
                body.close()
            root = model_root(extracted)
            shutil.move(str(root), str(final))
        return final


def model_root(extracted: Path) -> Path:
    """The directory holding config.json (the archive's top level or a single folder in it)."""
    for candidate in (extracted, *sorted(p for p in extracted.iterdir() if p.is_dir())):
        if all((candidate / f).is_file() for f in REQUIRED_FILES):
            return candidate
    raise ValueError(f"artifact lacks {' and '.join(REQUIRED_FILES)} at its top level")


class TransformersLoader:
    """AutoModelForSequenceClassification + tokenizer + labels.json, offline, eager attention, warmed up."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def load(self, directory: Path, version: str) -> FeaturePredictor:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        labels = json.loads((directory / "labels.json").read_text())
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ValueError("labels.json must be a non-empty list of strings")
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            directory, local_files_only=True, attn_implementation="eager").eval()
        if model.config.num_labels != len(labels):
            raise ValueError(f"labels.json has {len(labels)} labels, the model {model.config.num_labels} outputs")
        predictor = FeaturePredictor(version, tokenizer, model, labels, self.max_length, load_reference(directory))
        predictor.predict(["warm-up"])  # the first forward is slow: pay it before the swap, not in a request
        return predictor


class ServingPublisher:
    """Publisher on KafkaPublisher (serving is not a Faust app) that, like FaustPublisher, refuses topics the
    catalogue does not give serving: one writer per topic holds in code."""

    def __init__(self, settings: FlywheelSettings, codec: AvroCodec) -> None:
        self._kafka = KafkaPublisher(settings, codec, timeout_s=15.0)
        self._owned = set(produced_by(SERVICE))
        self._lock = threading.Lock()

    def publish(self, topic_name: str, record: dict[str, Any]) -> None:
        if topic_name not in self._owned:
            raise PermissionError(f"serving does not write {topic_name} (catalogue)")
        with self._lock:
            self._kafka.publish(topic_name, record)


class EventFollower:
    """A thread reading the followed topics from their end at start-up, with no consumer group to share:
    every replica sees every promotion. `started` is set once the end offsets are assigned, so what was
    published before lies in the stage store and what comes after reaches `on_target`."""

    def __init__(self, settings: FlywheelSettings, codec: AvroCodec, topics: tuple[str, ...],
                 on_target: Callable[[Target], None], on_registered: Callable[[Target], None], publisher: Any,
                 on_dead_letter: Callable[[], None], on_shadowed: Callable[[Target], None] | None = None,
                 on_rejected: Callable[[Target], None] | None = None,
                 on_forwarded: Callable[[str, str, list[str], str], None] | None = None) -> None:
        self.settings, self.codec, self.topics = settings, codec, topics
        self.on_target, self.on_registered = on_target, on_registered
        self.on_shadowed = on_shadowed or (lambda target: None)
        self.on_rejected = on_rejected or (lambda target: None)
        self.on_forwarded = on_forwarded or (lambda model, request_id, labels, origin: None)
        self.publisher, self.on_dead_letter = publisher, on_dead_letter
        self.started, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-follower", daemon=True)

    def start(self, timeout_s: float) -> bool:
        self._thread.start()
        return self.started.wait(timeout_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception:
                log.exception("event follower failed; reconnecting")
                self._stop.wait(2.0)

    def _follow(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(confluent_consumer_config(self.settings, group_id("serving-swaps"), from_beginning=False))
        try:
            consumer.assign(at_end(consumer, self.topics))
            self.started.set()
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is not None and not message.error():
                    self._handle(message)
        finally:
            consumer.close()

    def _handle(self, message: Any) -> None:
        try:
            record = decode_for_topic(self.codec, message.topic(), message.value()).record
            if message.topic() == FORWARDED_TOPIC:  # feedback another replica could not join
                forwarded = forwarded_of(message.topic(), record)
            else:
                target = target_of(message.topic(), record)
        except Exception as exc:
            self._dead_letter(message, exc)
            return
        if message.topic() == FORWARDED_TOPIC:
            self.on_forwarded(*forwarded)
        elif message.topic() == REGISTERED_TOPIC:
            self.on_registered(target)
        elif message.topic() == SHADOWED_TOPIC:
            self.on_shadowed(target)
        elif message.topic() == REJECTED_TOPIC:
            self.on_rejected(target)
        else:
            self.on_target(target)

    def _dead_letter(self, message: Any, exc: Exception) -> None:
        log.warning("undecodable %s record dead-lettered: %s", message.topic(), exc)
        self.on_dead_letter()
        source = SourceRecord(message.topic(), message.partition(), message.offset(), message.key(),
                              message.value())
        try:
            self.publisher.publish(DEAD_LETTER_TOPIC, dead_letter(source, exc, SERVICE))
        except Exception:
            log.exception("could not publish the dead letter")


def at_end(consumer: Any, topics: tuple[str, ...]) -> list[Any]:
    """Every partition of `topics` at its high watermark now (exact, unlike OFFSET_END resolved later)."""
    from confluent_kafka import TopicPartition

    metadata = consumer.list_topics(timeout=15)
    assignment = []
    for name in topics:
        for partition in sorted(metadata.topics[name].partitions if name in metadata.topics else {}):
            _, high = consumer.get_watermark_offsets(TopicPartition(name, partition), timeout=10)
            assignment.append(TopicPartition(name, partition, high))
    return assignment
