"""A run's training set: the manifests of the dataset versions it trains on (trainingdata.py chose them),
composed into one training manifest, written once under the run's prefix in the artifact bucket:

    s3://<artifact bucket>/models/<model_id>/<run_id>/training-manifest.json   (create-only)

It lists every object of every version, each pinned by the ETag (and S3 version) its own manifest recorded,
with the version it came from; the total rows; and the one set of reader rules they were all validated with.
The workflow's prepare task turns it into the run's channel, so both launchers read it unchanged.
docs/decisions/0012-retrain-data-policy.md.
"""

from __future__ import annotations

import json
from typing import Any

from flywheel.s3conditional import get_json_etag, put_json_if
from flywheel_orchestrator import ids
from flywheel_orchestrator.launchers.base import TrainingFailed
from flywheel_orchestrator.trainingdata import FEEDBACK_VERSION_PREFIX, version_name

FORMAT = 1
NAME = "training-manifest.json"


def manifest_key(model_id: str, run_id: str) -> str:
    return f"{ids.output_prefix(model_id, run_id)}{NAME}"


def data_objects(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's objects that hold rows (an object with no row count is kept: it is not checked)."""
    return [o for o in manifest["objects"] if int(o.get("rows") or 0) > 0 or "rows" not in o]


def compose(run_id: str, model_id: str, manifests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """One training manifest from (manifest URI, manifest) pairs, in the order given (base first). Pure.

    Raises TrainingFailed when the versions cannot be read as one set: in different buckets, validated with
    different reader rules, or holding no data objects."""
    if not manifests:
        raise TrainingFailed(f"run {run_id} names no dataset version to train on")
    buckets = {m["bucket"] for _, m in manifests}
    if len(buckets) != 1:
        raise TrainingFailed(
            f"the dataset versions of run {run_id} are in different buckets {sorted(buckets)}"
        )
    readers = {json.dumps(m.get("reader"), sort_keys=True) for _, m in manifests}
    if len(readers) != 1:
        raise TrainingFailed(
            f"the dataset versions of run {run_id} were validated with different reader rules "
            f"({', '.join(uri for uri, _ in manifests)}): they cannot be read as one set"
        )
    versions, objects = [], []
    for uri, manifest in manifests:
        kept = data_objects(manifest)
        if not kept:
            raise TrainingFailed(f"manifest {uri} lists no data objects")
        objects += [{**o, "dataset_version_id": manifest["dataset_version_id"]} for o in kept]
        counted = all("rows" in o for o in kept)
        versions.append(
            {
                "dataset_version_id": manifest["dataset_version_id"],
                "manifest_uri": uri,
                "prefix": manifest.get("prefix", ""),
                "feedback": version_name(manifest.get("prefix", "")).startswith(FEEDBACK_VERSION_PREFIX),
                "row_count": sum(int(o["rows"]) for o in kept)
                if counted
                else int(manifest.get("row_count", -1)),
            }
        )
    unknown = any(v["row_count"] < 0 for v in versions)
    return {
        "format": FORMAT,
        "run_id": run_id,
        "model_id": model_id,
        "bucket": buckets.pop(),
        "versions": versions,
        "objects": objects,
        "row_count": -1 if unknown else sum(v["row_count"] for v in versions),
        "reader": manifests[0][1].get("reader"),
    }


def write_once(s3: Any, bucket: str, key: str, composed: dict[str, Any]) -> dict[str, Any]:
    """Create the training manifest; a re-run of the task (a resumed run) finds it and keeps it when it is the
    same set. A different one under the same run is refused: a run's data never changes once written."""
    if put_json_if(s3, bucket, key, composed, None, indent=1) is not None:
        return composed
    found, _ = get_json_etag(s3, bucket, key)
    if found != composed:
        raise TrainingFailed(
            f"s3://{bucket}/{key} already lists another training set for run {composed['run_id']}"
        )
    return found
