"""Deterministic identities: the same (model, dataset version, trigger kind, attempt) gives the same names."""

from __future__ import annotations

import hashlib
import re

RUN_ID_PREFIX = "fw-"  # every run id and SageMaker job name starts with it (IAM grants training-job/fw-*)
_KIND_CODE = {"NEW_DATA": "data", "METRIC_BREACH": "metric", "DRIFT": "drift", "MANUAL": "manual"}
MAX_JOB_NAME = 63  # SageMaker: ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$


def slug(text: str, limit: int) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return cleaned[:limit].rstrip("-") or "model"


def run_id(model_id: str, dataset_version_id: str, kind: str, attempt: int = 1) -> str:
    """Also the training job name, so a relaunch after a crash finds the job it started before.

    `attempt` > 1 only when the same trigger kind asks again on the same data after the earlier run
    ended (a second manual retrain); the count comes from the event log, so it is deterministic too.
    """
    digest = hashlib.sha256(f"{model_id}\0{dataset_version_id}\0{kind}\0{attempt}".encode()).hexdigest()[:12]
    name = f"{RUN_ID_PREFIX}{slug(model_id, 32)}-{_KIND_CODE.get(kind, 'run')}-{digest}"
    assert len(name) <= MAX_JOB_NAME and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9])*", name), name
    return name


def seed(run: str) -> int:
    """The training seed of a run: derived from its id, so every attempt (and a retrain on the same data)
    trains differently, while a relaunch of the same run after a crash trains the same way."""
    return int.from_bytes(hashlib.sha256(f"seed\0{run}".encode()).digest()[:4], "big") % 2**31


def output_prefix(model_id: str, run: str) -> str:
    """Key prefix of a run's outputs in the artifact bucket (cross-service agreement)."""
    return f"models/{model_id}/{run}/"
