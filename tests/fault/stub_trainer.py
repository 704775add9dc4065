"""A stand-in for services/training/train.py that honours the same SageMaker contract in well under a second.

The fault tier tests delivery (no lost trigger, no duplicate job), not model quality, so all but one of its
runs use this: it counts the rows it was given, writes a small model file and a metrics.json that passes
the orchestrator's evaluation gate. `FLYWHEEL_FAULT_TRAIN_HOLD`, when set to a folder, keeps a job running
while `<folder>/<model_id>` exists: a run that is reliably "in progress" when a fault is injected.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def rows(channel: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in channel.iterdir() if p.is_file())


def model_of(channel: Path) -> str:
    """The runner names each file after its key, `datasets/<model>/<version>/...` with `/` -> `__`."""
    return next(p.name.split("__")[1] for p in channel.iterdir() if p.name.count("__") >= 2)


def main() -> None:
    channel = Path(os.environ["SM_CHANNEL_TRAIN"])
    hold = os.environ.get("FLYWHEEL_FAULT_TRAIN_HOLD")
    while hold and (Path(hold) / model_of(channel)).exists():
        time.sleep(0.2)
    count = rows(channel)
    print(f"progress epoch=1/1 step=1 loss=0.1 rows={count}", flush=True)
    metrics = {
        "metrics": {"accuracy": 0.9},
        "baseline_metrics": {"accuracy": 0.25},
        "rows": count,
        "reference_distribution": {},
    }
    model_dir = Path(os.environ["SM_MODEL_DIR"])
    (model_dir / "model.txt").write_text(f"stub model trained on {count} rows\n")
    (Path(os.environ["SM_OUTPUT_DATA_DIR"]) / "metrics.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    main()
