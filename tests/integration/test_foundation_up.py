"""`flywheel up` brings the stack and the three idle services up, prints where they are, and stops cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flywheel_dev.localstack import free_port


def test_up_starts_stack_and_services_then_stops(tmp_path: Path) -> None:
    ports = [str(free_port()) for _ in range(3)]
    done = subprocess.run(
        [sys.executable, "-m", "flywheel", "up", "--exit-when-healthy", "--kafka-port", ports[0],
         "--moto-port", ports[1], "--web-port", ports[2], "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("ingest", "orchestrator", "monitor"):
        assert f"{name} " in done.stdout and (tmp_path / f"{name}.log").exists()
    assert f"127.0.0.1:{ports[0]}" in done.stdout
