"""Run the four services as processes against a local stack: `flywheel up`, the demo and e2e/fault tests.

ingest, orchestrator and monitor are Faust workers; serving is an HTTP server (OIP v2 predictions,
feedback, live metrics; services/serving/README.md). Each gets the stack's environment, `extra_env`, and
its own entries of `service_env` (settings only one service reads, e.g. the monitor's rule set).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flywheel_dev.localstack import LocalStack, free_port

SERVICES = ("ingest", "orchestrator", "monitor", "serving")


@dataclass
class ServiceProcess:
    name: str
    web_port: int
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        env = {**os.environ, **self.env, "FLYWHEEL_WEB_PORT": str(self.web_port)}
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen([sys.executable, "-m", f"flywheel_{self.name}"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy within {timeout:.0f}s; see {self.log_path}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Platform:
    """A local stack plus the service processes, with logs and state under `workdir`."""

    stack: LocalStack
    workdir: Path
    services: tuple[str, ...] = SERVICES
    base_web_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    procs: dict[str, ServiceProcess] = field(default_factory=dict)

    def env(self, service: str | None = None) -> dict[str, str]:
        return {**self.stack.env(), "FLYWHEEL_DATA_DIR": str(self.workdir / "state"), **self.extra_env,
                **(self.service_env.get(service, {}) if service else {})}

    def start(self, wait: bool = True) -> Platform:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(self.services):
            port = self.base_web_port + i if self.base_web_port else free_port()
            self.procs[name] = ServiceProcess(name, port, self.env(name), self.workdir / f"{name}.log")
            self.procs[name].start()
        if wait:
            for proc in self.procs.values():
                proc.wait_healthy()
        return self

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
