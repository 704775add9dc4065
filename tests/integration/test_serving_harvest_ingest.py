"""Feedback versions as ingest sees them: written by the real S3 writer through moto's S3 API, validated by
ingest's own closing code (listing, refusals, the dataset reader, the manifest), and announced by the real
ingest service on the local broker as a DatasetVersionReady."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from flywheel_ingest.adapters import S3Store
from flywheel_ingest.app import close_config
from flywheel_ingest.closer import Ready, VersionCloser
from flywheel_ingest.settings import IngestSettings
from flywheel_serving.core import Joined
from flywheel_serving.harvest import Harvest, HarvestConfig
from flywheel_serving.harvest_store import KeyTaken, S3FeedbackStore
from flywheel_serving.harvester import HarvestCounters, Harvester
from flywheel_serving.settings import ServingSettings

BUCKET = "flywheel-data"


def harvester_for(s3: Any, settings: ServingSettings) -> Harvester:
    from flywheel.datareader import Rules

    config = HarvestConfig(settings.dataset_prefix, "pod-a", 1_000, settings.harvest_max_rows,
                           settings.harvest_min_rows)
    harvest = Harvest(config, lambda m: Rules(settings.columns_for(m), settings.label_column))
    return Harvester(harvest, S3FeedbackStore(s3, BUCKET), HarvestCounters(CollectorRegistry()))


def labelled(model: str, n: int) -> list[Joined]:
    labels = ("billing", "shipping", "refund")
    return [Joined(model, "fw-1", (("billing", labels[i % 3]),), f"req-{i}", (f"where is parcel {i}, \"quoted\"\n",),
                   (0.61,), 1_764_300_000_000) for i in range(n)]


def write_version(s3: Any, settings: ServingSettings, model: str, n: int) -> str:
    hv = harvester_for(s3, settings)
    for j in labelled(model, n):
        hv.add(j, 1_764_300_000_100)
    hv.collect(everything=True)
    [batch] = list(hv._pending)
    hv.write_pending()
    assert not hv._pending
    return batch.prefix


@pytest.fixture
def s3(moto_s3: Any) -> Any:
    moto_s3.create_bucket(Bucket=BUCKET)
    return moto_s3


@pytest.mark.parametrize("columns", [None, ("review", "label")])
def test_ingest_validates_a_feedback_version_into_a_manifest(s3: Any, tmp_path: Path, columns: Any) -> None:
    model_columns = {"support": columns} if columns else {}
    serving = ServingSettings(model_columns=model_columns, harvest_min_rows=1)
    prefix = write_version(s3, serving, "support", 30)
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"])
    assert keys == [prefix + "_SUCCESS", prefix + "part-0000.jsonl"]

    ingest = IngestSettings(data_dir=tmp_path, model_columns=model_columns)
    result = VersionCloser(S3Store(s3), close_config(ingest)).close(BUCKET, "support", prefix, {})
    assert isinstance(result, Ready), result
    manifest = result.manifest
    text = columns[0] if columns else "text"
    assert manifest["row_count"] == 30 and manifest["prefix"] == prefix
    assert manifest["label_counts"] == {"billing": 10, "shipping": 10, "refund": 10}
    assert set(manifest["columns"]) == {text, "label", "request_id", "index", "model_version", "predicted_label",
                                        "confidence", "answered_at", "labelled_at", "source"}
    assert manifest["closed_by"] == {"marker": prefix + "_SUCCESS"}
    body = s3.get_object(Bucket=BUCKET, Key=prefix + "part-0000.jsonl")["Body"].read()
    first = json.loads(body.splitlines()[0])
    assert first[text] == "where is parcel 0, \"quoted\"\n" and first["source"] == "feedback"


def test_the_writer_never_overwrites(s3: Any) -> None:
    store = S3FeedbackStore(s3, BUCKET)
    store.put_new("datasets/m/feedback-x/part-0000.jsonl", b"{}\n")
    with pytest.raises(KeyTaken):
        store.put_new("datasets/m/feedback-x/part-0000.jsonl", b"other\n")
    assert s3.get_object(Bucket=BUCKET, Key="datasets/m/feedback-x/part-0000.jsonl")["Body"].read() == b"{}\n"


@pytest.fixture(scope="module")
def ingest_service(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from flywheel_dev.harness.ingest import IngestEvents, start_ingest

    proc = start_ingest(stack.env(), tmp_path_factory.mktemp("ingest"), scan_interval_s="1")
    reader = IngestEvents(stack)
    yield reader
    reader.close()
    proc.stop()


def test_the_ingest_service_announces_the_feedback_version(stack: Any, ingest_service: Any) -> None:
    from flywheel_dev.harness.ingest import under

    model = f"harvest-{uuid.uuid4().hex[:8]}"
    prefix = write_version(stack.client("s3"), ServingSettings(harvest_min_rows=1), model, 24)
    [event] = ingest_service.wait_for(under(prefix), timeout=60)
    assert event["model_id"] == model and event["row_count"] == 24
    assert event["label_counts"] == {"billing": 8, "shipping": 8, "refund": 8}
    assert not ingest_service.matching(under(prefix, "dataset.rejected"))
