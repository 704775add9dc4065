"""Health on the real local broker: a worker whose agent is blocked while records wait reports not-live within
the stall bound, its lag gauge rises with the waiting records and falls once they are processed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer

from flywheel.kafka import confluent_producer_config
from flywheel.settings import FlywheelSettings
from flywheel_dev.harness.monitor import wait_for
from flywheel_dev.localstack import free_port

SOURCE = "dataset.rejected"  # read by no service: this probe's group has it to itself
GROUP = "flywheel-health-probe"
STALL_S = 4.0
SAMPLE_S = 0.25
WORKER = '''
import asyncio, sys
from pathlib import Path
from flywheel.catalogue import topic
from flywheel.faust_app import make_app, raw_topic
from flywheel.service import run_service
from flywheel.settings import FlywheelSettings

BLOCK, OUT = Path(sys.argv[1]), Path(sys.argv[2])

def create(settings):
    app = make_app("health-probe", settings)

    @app.agent(raw_topic(app, topic("dataset.rejected")))
    async def probe(stream):
        async for event in stream.events():
            while BLOCK.exists():  # the agent is stuck on this record; the event loop is not
                await asyncio.sleep(0.05)
            with OUT.open("a") as out:
                out.write(f"{event.message.partition}@{event.message.offset}\\n")

    return app

run_service("health-probe", FlywheelSettings, create)
'''


@dataclass
class Worker:
    port: int
    block: Path
    out: Path

    def get(self, path: str) -> tuple[int, dict]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
        except OSError:
            return 0, {}

    def lag(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        pattern = re.compile(r'^flywheel_consumer_lag\{([^}]*)\} ([0-9.e+]+)$', re.M)
        return int(sum(float(v) for labels, v in pattern.findall(text)
                       if f'group="{GROUP}"' in labels and f'topic="{SOURCE}"' in labels))

    def lag_known(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
            return f'group="{GROUP}"' in resp.read().decode()


@pytest.fixture
def worker(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    script, log = tmp_path / "worker.py", tmp_path / "worker.log"
    script.write_text(WORKER)
    probe = Worker(free_port(), tmp_path / "block", tmp_path / "processed.txt")
    env = {**os.environ, "FLYWHEEL_WEB_PORT": str(probe.port), "FLYWHEEL_DATA_DIR": str(tmp_path / "state"),
           "FLYWHEEL_LIVENESS_STALL_S": str(STALL_S), "FLYWHEEL_HEALTH_SAMPLE_S": str(SAMPLE_S)}
    with log.open("ab") as sink:
        proc = subprocess.Popen([sys.executable, str(script), str(probe.block), str(probe.out)], env=env,
                                stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield probe
    finally:
        probe.block.unlink(missing_ok=True)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(log.read_text()[-3000:])


def produce(n: int) -> None:
    producer = Producer(confluent_producer_config(FlywheelSettings()))
    for i in range(n):
        producer.produce(SOURCE, key=f"health-{i}".encode(), value=b"not avro: the probe does not decode")
    assert producer.flush(10) == 0


def test_blocked_agent_with_waiting_records_is_not_live_and_lag_rises_then_falls(worker: Worker) -> None:
    wait_for(lambda: worker.get("/readyz")[0] == 200, "ready", timeout=90)  # first assignment done, nothing loading
    assert worker.get("/healthz")[0] == 200
    wait_for(lambda: worker.lag_known() and worker.lag() == 0, "older records drained", timeout=60)  # older records drained
    assert worker.get("/livez") == (200, {"status": "live", "service": GROUP, "reasons": []})

    worker.block.touch()
    started = time.monotonic()  # the stall clock can only start once the records exist
    produce(5)
    wait_for(lambda: worker.lag() == 5, "lag 5", timeout=15)  # rises with the unconsumed records
    assert worker.get("/livez")[0] == 200  # waiting is not yet a stall
    wait_for(lambda: worker.get("/livez")[0] == 503, "not live", timeout=STALL_S + 10)
    took = time.monotonic() - started
    # the clock runs from the last sample that saw nothing waiting, so at most one sample early; and soon after
    assert STALL_S - SAMPLE_S <= took <= STALL_S + 5, took
    status, body = worker.get("/livez")
    assert body["status"] == "stalled" and "records waiting" in body["reasons"][0]
    assert worker.get("/readyz")[0] == 200  # a stall is a liveness matter, not readiness

    worker.block.unlink()
    wait_for(lambda: worker.lag() == 0, "lag 0", timeout=30)  # falls once they are processed and committed
    assert worker.get("/livez")[0] == 200
    assert len(worker.out.read_text().splitlines()) >= 5
