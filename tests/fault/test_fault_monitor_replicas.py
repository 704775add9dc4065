"""Two monitor replicas on the local stack (docs/decisions/0015-monitor-scale-out.md).

The replicas share the consumer group, S3 and the broker, as two pods do; each decides for the models on the
partitions assigned to it. Fault: `kill -9` the replica that owns two models in the middle of their breaches
(one has fired, one has not yet), the rest of the streams sent while it is down, then the killed replica
comes back (a second rebalance, as in a rolling update). Asserted: exactly one RetrainRequested (event id) per
breach episode, at most one copy of it with the same id (a kill between the broker's ack and the outbox
write), none lost (the survivor fires the breach it inherited half-built), the first breach's hysteresis and
cooldown honoured by the survivor and after the handback.
"""

from __future__ import annotations

import math
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.partitioner import murmur2

from conftest import wait_until
from flywheel.catalogue import MODEL_PARTITIONS
from flywheel.events import now_ms
from flywheel_dev.harness.monitor import Bus, metric_event, registration
from flywheel_dev.localstack import LocalStack, free_port
from flywheel_dev.platform import ServiceProcess

RUN = uuid.uuid4().hex[:6]
REPLICAS = ("monitor-a", "monitor-b")
ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")
WINDOW_MS = 5_000  # the shipped rule accuracy-low: mean < 0.8 over 5 s, 500 samples, cooldown 300 s


def partition_of(model_id: str) -> int:
    return (murmur2(model_id.encode()) & 0x7FFFFFFF) % MODEL_PARTITIONS


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, ServiceProcess]]]:
    work = tmp_path_factory.mktemp("monitor-replicas")
    with LocalStack(log_dir=work) as stack:
        procs = {}
        for name in REPLICAS:
            env = {
                **stack.env(),
                "FLYWHEEL_DATA_DIR": str(work / name),
                "FLYWHEEL_KAFKA_SESSION_TIMEOUT_S": "6",
            }
            procs[name] = ServiceProcess("monitor", free_port(), env, work / f"{name}.log")
        try:
            for proc in procs.values():
                proc.start()
                proc.wait_healthy(timeout=90)
            wait_until(lambda: len(owned(procs)) == 2, "both replicas assigned partitions", timeout=90)
            yield stack, procs
        finally:
            for proc in procs.values():
                proc.stop()
            for name, proc in procs.items():
                print(f"--- {name}\n{Path(proc.log_path).read_text(errors='replace')[-3000:]}")


def owned(procs: dict[str, ServiceProcess]) -> dict[str, set[int]]:
    """Live replicas with partitions, by their latest assignment (an even split once both are in)."""
    latest = {}
    for name, proc in procs.items():
        found = ASSIGNED.findall(Path(proc.log_path).read_text(errors="replace"))
        if proc.alive() and found and found[-1].strip():
            latest[name] = {int(p) for p in found[-1].split(",")}
    return latest


def model_on(partition: int, tag: str) -> str:
    return next(m for i in range(1000) if partition_of(m := f"mon-rep-{tag}-{RUN}-{i}") == partition)


def send(bus: Bus, model: str, values: list[float], start: int, samples: int = 200) -> None:
    for i, value in enumerate(values):
        bus.send("ModelMetricsObserved", metric_event(model, value, samples, at_ms=start + i * 100))


def settle(bus: Bus, *models: str) -> None:
    """A NaN window is dead-lettered only once every earlier event on the model's partition was handled."""
    markers = [metric_event(m, math.nan) for m in models]
    for marker in markers:
        bus.send("ModelMetricsObserved", marker)
    wanted = {m["envelope"]["event_id"].encode() for m in markers}

    def all_dead_lettered() -> bool:
        seen = b"".join(d.get("original_value") or b"" for d in bus.read("monitor.dead-letter"))
        return all(eid in seen for eid in wanted)

    wait_until(all_dead_lettered, f"the settle markers of {models}", timeout=120)


def requests(bus: Bus, model: str) -> list[dict[str, Any]]:
    return [r for r in bus.read("retrain.requested") if r["model_id"] == model]


def episodes(bus: Bus, model: str) -> set[str]:
    """Distinct requests (event ids) for `model`. A kill between the broker's ack and the outbox write leaves
    the claimed request in the model's state, and the next owner sends it again with the same event id (the
    orchestrator drops a trigger id it has seen): never a second request with an id of its own."""
    found = requests(bus, model)
    assert len(found) <= 2, f"at most one copy of a request, from a kill inside the outbox window: {found}"
    return {r["envelope"]["event_id"] for r in found}


def test_kill_9_a_replica_mid_breach(pair) -> None:
    stack, procs = pair
    bus = Bus(stack.kafka_bootstrap)
    split = owned(procs)
    assert set(split) == set(REPLICAS) and set().union(*split.values()) == set(range(MODEL_PARTITIONS)), split
    victim = "monitor-a"
    partition = min(split[victim])
    fired, building = model_on(partition, "fired"), model_on(partition, "building")
    for model in (fired, building):
        bus.send("ModelVersionRegistered", registration(model, "v1", at_ms=now_ms() - 600_000))
    base = (now_ms() - 120_000) // WINDOW_MS * WINDOW_MS  # windows in the recent past, event time

    send(bus, building, [0.6, 0.6], base)  # 400 samples: breaching, not enough to decide yet
    send(bus, fired, [0.6] * 10, base)  # 2,000 samples: fires on the victim
    wait_until(lambda: len(requests(bus, fired)) == 1, "the victim's request for the first breach")
    [first] = episodes(bus, fired)

    procs[victim].kill(signal.SIGKILL)  # mid-breach: one fired and still breaching, one half-built
    assert procs[victim].proc.returncode == -signal.SIGKILL
    send(bus, building, [0.6, 0.6, 0.6], base + 300)  # the rest of the half-built breach, while it is down
    send(bus, fired, [0.6] * 5, base + WINDOW_MS)  # the same breach goes on: hysteresis, no new request
    send(bus, fired, [0.93] * 5, base + 2 * WINDOW_MS)  # recovers (re-armed)...
    send(bus, fired, [0.6] * 5, base + 3 * WINDOW_MS)  # ...and breaches again inside the cooldown
    wait_until(lambda: set(owned(procs)) == {"monitor-b"}, "the survivor to take every partition", timeout=90)
    settle(bus, fired, building)
    assert episodes(bus, fired) == {first}, "the survivor honoured the victim's hysteresis and cooldown"
    assert len(episodes(bus, building)) == 1  # not lost: the survivor fired the breach it took over
    inherited = requests(bus, building)[0]
    assert inherited["observed_value"] < inherited["threshold"]

    procs[victim].start()  # back, as the new pod of a rolling update: the partitions are split again
    procs[victim].wait_healthy(timeout=90)
    wait_until(lambda: len(owned(procs)) == 2, "both replicas assigned again", timeout=90)
    send(bus, fired, [0.6] * 5, base + 4 * WINDOW_MS)  # still inside the cooldown, whoever owns it now
    send(bus, building, [0.6] * 5, base + 4 * WINDOW_MS)  # its breach goes on: hysteresis
    settle(bus, fired, building)
    assert episodes(bus, fired) == {first} and len(episodes(bus, building)) == 1
    assert all(proc.alive() for proc in procs.values())
