"""Topics provisioned from the catalogue: a plan of what to change (pure), and the admin client that reads and
changes a cluster (confluent-kafka's AdminClient, authenticated like every other client: flywheel/msk.py).

`flywheel topics apply` plans, shows the plan as a diff and applies it; every service checks its topics'
partition counts before it starts (flywheel/service.py). Partition counts and replication factors are never
changed here: more partitions move keys to other partitions (per-model order and co-partitioning break),
Kafka cannot remove partitions, and a replication change is a replica reassignment. Such a topic is refused
with what to do (docs/operations.md, "Topics"; docs/decisions/0006-topic-provisioning.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flywheel.catalogue import TOPICS, TopicSpec, consumed_by, durability, produced_by, replayed_by
from flywheel.settings import FlywheelSettings, Profile

CREATE, ALTER, OK, REFUSE = "create", "alter", "ok", "refuse"
CATALOGUE = "flywheel/catalogue.py"


class TopicAdminError(RuntimeError):
    """The cluster could not be read or changed (unreachable, denied, or it did not take a change)."""


class TopicsMismatch(TopicAdminError):
    """A topic's partition count differs from the catalogue: nothing may start on it until that is settled."""


class TopicsUnavailable(TopicAdminError):
    """Topics are missing or the broker did not answer in time: apply them, or wait for the broker."""


@dataclass(frozen=True)
class Found:
    """A topic as the cluster has it; `configs` holds the values in effect that the broker reports."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]


@dataclass(frozen=True)
class Wanted(Found):
    """A topic as the catalogue wants it in one environment (the same shape as what the cluster has)."""

    @classmethod
    def of(cls, spec: TopicSpec, environment: str) -> Wanted:
        return cls(spec.name, spec.partitions, durability(environment).replication_factor,
                   spec.configs(environment))


@dataclass(frozen=True)
class Change:
    key: str
    old: str | None  # None: the broker reports no value (never set, and no default shown)
    new: str

    def text(self) -> str:
        return f"{self.key} {self.old if self.old is not None else '(unset)'} → {self.new}"


@dataclass(frozen=True)
class Step:
    """What apply does to one topic: create it, alter configs, nothing (ok), or refuse (and why)."""

    topic: str
    action: str
    changes: tuple[Change, ...] = ()
    reason: str = ""

    def line(self) -> str:
        detail = self.reason if self.action == REFUSE else "; ".join(c.text() for c in self.changes)
        return f"{self.action:<7} {self.topic}" + (f"  {detail}" if detail else "")


@dataclass(frozen=True)
class Plan:
    environment: str
    steps: tuple[Step, ...]

    def of(self, action: str) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.action == action)

    @property
    def refused(self) -> tuple[Step, ...]:
        return self.of(REFUSE)

    @property
    def has_changes(self) -> bool:
        return any(s.action in (CREATE, ALTER) for s in self.steps)

    def summary(self) -> str:
        counts = {a: len(self.of(a)) for a in (CREATE, ALTER, OK, REFUSE)}
        return ", ".join(f"{n} {a}" for a, n in counts.items() if n) + f" ({self.environment})"


def environment_of(settings: FlywheelSettings) -> str:
    """The topics environment a profile runs on: eks is MSK over three AZs; anything else one local broker."""
    return "msk" if settings.profile is Profile.EKS else "local"


def wanted(environment: str, specs: Iterable[TopicSpec] = TOPICS) -> list[Wanted]:
    return [Wanted.of(spec, environment) for spec in specs]


def _same(key: str, old: str | None, new: str) -> bool:
    if old is None:
        return False
    if key == "cleanup.policy":  # "compact,delete" and "delete,compact" are one policy
        return sorted(p.strip() for p in old.split(",")) == sorted(p.strip() for p in new.split(","))
    return old.strip() == new


def partition_refusal(name: str, found: int, expected: int) -> str:
    """Why a partition difference is refused, and the two ways out."""
    way = ("apply never adds partitions: keys would move to other partitions, breaking per-model order and "
           "co-partitioning" if found < expected else "Kafka cannot remove partitions")
    return (f"{name} has {found} partitions, the catalogue says {expected}: {way}. Either set partitions="
            f"{found} for it in {CATALOGUE}, or migrate: stop its producers and consumers, delete the topic "
            "(its records are lost: keep the state they carry elsewhere first) and apply again")


def plan_topic(want: Wanted, found: Found | None, environment: str = "") -> Step:
    if found is None:
        changes = (Change("partitions", None, str(want.partitions)),
                   Change("replication.factor", None, str(want.replication_factor)),
                   *(Change(k, None, v) for k, v in want.configs.items()))
        return Step(want.name, CREATE, changes)
    if found.partitions != want.partitions:
        return Step(want.name, REFUSE, reason=partition_refusal(want.name, found.partitions, want.partitions))
    if found.replication_factor != want.replication_factor:
        return Step(want.name, REFUSE, reason=(
            f"{want.name} has replication factor {found.replication_factor}, the catalogue says "
            f"{want.replication_factor}{f' for {environment}' if environment else ''}: apply does not move "
            "replicas. Reassign them (kafka-reassign-partitions), or delete the topic and apply again"))
    changes = tuple(Change(k, found.configs.get(k), v) for k, v in want.configs.items()
                    if not _same(k, found.configs.get(k), v))
    return Step(want.name, ALTER if changes else OK, changes)


def plan(environment: str, found: Mapping[str, Found], specs: Iterable[TopicSpec] = TOPICS) -> Plan:
    """The diff between the catalogue (in `environment`) and what the cluster has; pure."""
    return Plan(environment, tuple(plan_topic(w, found.get(w.name), environment) for w in wanted(environment, specs)))


def service_topics(service: str) -> tuple[str, ...]:
    """Every catalogue topic `service` writes, consumes or replays."""
    return tuple(sorted({*produced_by(service), *consumed_by(service), *replayed_by(service)}))


def partition_problems(names: Iterable[str], counts: Mapping[str, int],
                       specs: Iterable[TopicSpec] = TOPICS) -> tuple[list[str], list[str]]:
    """(mismatches, missing) for `names` against the catalogue, given the partition counts found."""
    expected = {s.name: s.partitions for s in specs}
    mismatched = [f"topic {n} has {counts[n]} partitions, the catalogue expects {expected[n]}"
                  for n in names if n in counts and counts[n] != expected[n]]
    return mismatched, [n for n in names if n not in counts]


class KafkaTopicAdmin:
    """The adapter: reads topics and their configs, creates topics, sets configs (IncrementalAlterConfigs)."""

    def __init__(self, settings: FlywheelSettings, timeout_s: float = 30.0) -> None:
        from confluent_kafka.admin import AdminClient

        from flywheel.kafka import confluent_security

        self.timeout_s = timeout_s
        try:
            self._admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, **confluent_security(settings)})
        except Exception as exc:  # librdkafka refuses a bad configuration here
            raise TopicAdminError(f"could not build a Kafka admin client: {exc}") from exc

    def partitions(self) -> dict[str, tuple[int, int]]:
        """topic -> (partition count, replication factor) of every topic the cluster lets us see."""
        try:
            metadata = self._admin.list_topics(timeout=self.timeout_s)  # no topic named: never auto-creates one
        except Exception as exc:
            raise TopicAdminError(f"could not list topics at the broker: {exc}") from exc
        return {name: (len(t.partitions), min((len(p.replicas) for p in t.partitions.values()), default=0))
                for name, t in metadata.topics.items() if t.error is None and t.partitions}

    def describe(self, names: Iterable[str]) -> dict[str, Found]:
        layout = self.partitions()
        present = [n for n in names if n in layout]
        configs = self._configs(present) if present else {}
        return {n: Found(n, *layout[n], configs.get(n, {})) for n in present}

    def _configs(self, names: list[str]) -> dict[str, dict[str, str]]:
        from confluent_kafka.admin import ConfigResource, ResourceType

        futures = self._admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names],
                                               request_timeout=self.timeout_s)
        out = {}
        for resource, future in futures.items():
            entries = _result(future, self.timeout_s, f"describe the configs of {resource.name}")
            out[resource.name] = {k: e.value for k, e in entries.items() if e.value is not None}
        return out

    def create(self, wants: list[Wanted]) -> None:
        from confluent_kafka.admin import NewTopic

        topics = [NewTopic(w.name, num_partitions=w.partitions, replication_factor=w.replication_factor,
                           config=dict(w.configs)) for w in wants]
        for name, future in self._admin.create_topics(topics, request_timeout=self.timeout_s).items():
            try:
                _result(future, self.timeout_s, f"create {name}")
            except TopicAdminError as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):  # another apply got there first: verified after
                    raise

    def alter(self, steps: list[Step]) -> None:
        from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

        resources = [ConfigResource(ResourceType.TOPIC, s.topic, incremental_configs=[
            ConfigEntry(c.key, c.new, incremental_operation=AlterConfigOpType.SET) for c in s.changes])
            for s in steps]
        for resource, future in self._admin.incremental_alter_configs(resources).items():
            _result(future, self.timeout_s, f"alter the configs of {resource.name}")


def _result(future: Any, timeout_s: float, what: str) -> Any:
    try:
        return future.result(timeout_s)
    except Exception as exc:
        raise TopicAdminError(f"could not {what}: {exc}") from exc


@dataclass(frozen=True)
class Applied:
    before: Plan
    after: Plan | None  # the plan read back once changes were made (all ok when they took); None: none made


class TopicAdmin(Protocol):
    """What apply needs from a cluster (KafkaTopicAdmin; an in-memory one in the unit tests)."""

    def partitions(self) -> dict[str, tuple[int, int]]: ...
    def describe(self, names: Iterable[str]) -> dict[str, Found]: ...
    def create(self, wants: list[Wanted]) -> None: ...
    def alter(self, steps: list[Step]) -> None: ...


def apply(admin: TopicAdmin, environment: str, *, dry_run: bool = False, specs: Iterable[TopicSpec] = TOPICS,
          verify_s: float = 15.0) -> Applied:
    """Plan, and unless dry_run or something is refused, create and alter, then read back and verify (for up
    to `verify_s`: a new topic's metadata may take a moment to reach every broker).

    A refusal changes nothing at all, so one topic that needs a person never leaves the rest half done."""
    specs = tuple(specs)
    names = [s.name for s in specs]
    before = plan(environment, admin.describe(names), specs)
    if dry_run or before.refused or not before.has_changes:
        return Applied(before, None)
    by_name = {w.name: w for w in wanted(environment, specs)}
    creates = [by_name[s.topic] for s in before.of(CREATE)]
    if creates:
        admin.create(creates)
    if before.of(ALTER):
        admin.alter(list(before.of(ALTER)))
    deadline = time.monotonic() + verify_s
    while True:
        after = plan(environment, admin.describe(names), specs)
        if not (after.has_changes or after.refused):
            return Applied(before, after)
        if time.monotonic() >= deadline:
            left = "; ".join(s.line() for s in after.steps if s.action != OK)
            raise TopicAdminError(f"the cluster did not take every change: {left}")
        time.sleep(0.5)


def _startup_admin(settings: FlywheelSettings) -> KafkaTopicAdmin:
    return KafkaTopicAdmin(settings, timeout_s=10.0)


def check_service_topics(settings: FlywheelSettings, service: str, *, wait_s: float = 60.0, poll_s: float = 2.0,
                         admin: Callable[[FlywheelSettings], Any] = _startup_admin) -> None:
    """Before a service starts: every topic it touches exists with the catalogue's partition count.

    A mismatch raises TopicsMismatch at once; missing topics (or no broker) are waited for up to `wait_s`
    (the topics Job may still be running), then TopicsUnavailable."""
    names = service_topics(service)
    if not names:
        return
    deadline, last = time.monotonic() + wait_s, ""
    client = None
    while True:
        try:
            client = client or admin(settings)
            counts = {n: parts for n, (parts, _) in client.partitions().items()}
            mismatched, missing = partition_problems(names, counts)
            if mismatched:
                raise TopicsMismatch(f"{'; '.join(mismatched)} ({CATALOGUE}). `flywheel topics apply --dry-run` "
                                     "shows every difference and what to do (docs/operations.md, Topics)")
            if not missing:
                return
            last = f"missing topics {', '.join(missing)}: run `flywheel topics apply`"
        except TopicsMismatch:
            raise
        except TopicAdminError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise TopicsUnavailable(f"{last} (waited {wait_s:.0f}s)")
        time.sleep(poll_s)
