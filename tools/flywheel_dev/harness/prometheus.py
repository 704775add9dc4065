"""A real Prometheus (Debian's binary) scraping one service every second, for the dashboard tests: every panel's
PromQL must return data from what a running service exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from flywheel_dev.harness.monitor import wait_for
from flywheel_dev.localstack import free_port, wait_for_port


class Prometheus:
    def __init__(self, workdir: Path, job: str, target_port: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus not found: `make tools` installs Debian's prometheus package")
        self.job = job
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}]}))
        self.log = workdir / "prometheus.log"
        with self.log.open("ab") as sink:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"], stdout=sink, stderr=subprocess.STDOUT,
                start_new_session=True)
        wait_for_port(self.port, timeout=60)
        wait_for(self.ready, "prometheus ready")  # the port opens before the TSDB is: queries get 503 until then

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.load(resp)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def names(self) -> set[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/label/__name__/values", timeout=10) as r:
            return set(json.load(r)["data"])

    def scrapes(self) -> int:
        found = self.query(f'count_over_time(up{{job="{self.job}"}}[10m])')
        return int(float(found[0]["value"][1])) if found else 0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def metric_names(expr: str) -> list[str]:
    """The flywheel_/process_ metric names a PromQL expression reads (matchers, ranges and strings removed)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    return [w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare) if w.startswith(("flywheel_", "process_"))]
