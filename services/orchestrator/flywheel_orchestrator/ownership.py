"""Which models this worker decides for: those whose partition (of the model-keyed topics) is assigned to it.

The model topics are keyed by model_id and co-partitioned (flywheel/catalogue.py), every producer uses
Kafka's default partitioner (murmur2 of the key; confluent-kafka is configured with `murmur2_random` in
flywheel/kafka.py), and Faust's assignor gives one worker the same partition number of every co-partitioned
topic it subscribes to. So a model's events all reach one worker, and that worker owns the model.
See docs/decisions/0009-orchestrator-scale-out.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.partitioner import murmur2

from flywheel.catalogue import MODEL_PARTITIONS


def partition_of(model_id: str, partitions: int = MODEL_PARTITIONS) -> int:
    """The partition a record keyed by `model_id` lands on (Kafka's default partitioner for a key)."""
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % partitions


class Ownership:
    """The partition numbers of the model topics assigned to this worker; None until the first assignment."""

    def __init__(self, topics: Iterable[str], partitions: int = MODEL_PARTITIONS) -> None:
        self.topics = frozenset(topics)
        self.partitions = partitions
        self.owned: frozenset[int] | None = None
        self.generation = 0  # +1 on every change: a load started for an older assignment stops

    def owns(self, model_id: str) -> bool:
        return self.owned is not None and partition_of(model_id, self.partitions) in self.owned

    def revoke(self) -> None:
        """Rebalance started: nothing is owned until the next assignment says what is."""
        self.owned = frozenset()
        self.generation += 1

    def assign(self, assigned: Iterable[Any]) -> frozenset[int]:
        """`assigned` are Faust TPs (topic, partition); only the model topics count. The owned partitions."""
        self.owned = frozenset(tp.partition for tp in assigned if tp.topic in self.topics)
        self.generation += 1
        return self.owned

    def own_all(self) -> None:
        """A single worker without a group (tests, tools): every partition."""
        self.owned = frozenset(range(self.partitions))
        self.generation += 1
