"""Ingest: put_object -> DatasetVersionReady latency on the local stack, and streaming validation throughput.

Latency: one ingest process (S3 -> SQS notifications, marker-based completion) on Tansu + moto; each version is
one JSONL object and a `_SUCCESS` marker, put one version at a time; the clock runs from the marker's
put_object call to the event's arrival at a consumer (fetch wait 10 ms). The floor is measured in the same run:
put_object -> receive_message on a second queue wired the same way, with nothing behind it.

Throughput: validate_jsonl / validate_csv over a file read in 1 MiB chunks, sha256 included (the service hashes
while validating), against simply reading the same bytes in the same chunks and against the exact per-line
reading (the accelerators off); ratios are per paired repeat.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import BenchResult, percentile
from flywheel.datareader import read_stats
from flywheel_dev.harness.ingest import IngestEvents, jsonl, start_ingest, under
from flywheel_dev.localstack import LocalStack
from flywheel_ingest.validation import Rules, validate_csv, validate_jsonl

GOAL_P50_MS, GOAL_P99_MS = 150.0, 500.0
GOAL_VALIDATE_MB_S = 200.0  # per core, JSONL and CSV
CHUNK = 1024 * 1024


def run(quick: bool = False) -> list[BenchResult]:
    return [latency(20 if quick else 120), throughput(4 if quick else 32, 3 if quick else 5)]


def latency(versions: int) -> BenchResult:
    with tempfile.TemporaryDirectory() as tmp, LocalStack(log_dir=Path(tmp)) as stack:
        env = stack.env()
        s3, sqs = stack.client("s3"), stack.client("sqs")
        floor = notification_floor(s3, sqs, versions)
        worker = start_ingest(env, Path(tmp) / "ingest", scan_interval_s="60")
        reader = IngestEvents(stack)
        try:
            samples = [one_version(s3, reader) for _ in range(versions + 3)][3:]  # 3 warm-up versions
        finally:
            worker.stop()
            reader.close()
    to_event = [s[0] for s in samples]
    to_produced = [s[1] for s in samples]
    p50, p99 = percentile(to_event, 50), percentile(to_event, 99)
    met = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
    return BenchResult(
        title="Ingest: put_object -> DatasetVersionReady latency (local stack, marker-based)",
        command="python -m bench --only ingest",
        rows=[row("put_object -> SQS receive (floor, same run)", floor),
              row("marker put_object -> event produced (envelope time)", to_produced),
              row("marker put_object -> DatasetVersionReady at a consumer", to_event)],
        goal=f"p50 <= {GOAL_P50_MS:.0f} ms and p99 <= {GOAL_P99_MS:.0f} ms (marker put -> event at a consumer)",
        verdict=f"{'met' if met else 'not met'}: p50 {p50:.1f} ms, p99 {p99:.1f} ms; "
                f"p50 is {p50 / percentile(floor, 50):.1f}x the notification floor",
        notes=[f"{versions} versions measured (after 3 warm-up ones), each a 20-row JSONL object + `_SUCCESS`: "
               f"{2 * versions} objects",
               "per version the service does: SQS receive, ListObjectsV2, HEAD done-record, GET manifest (absent), "
               "GET + validate the object, PUT manifest, produce (acks=all), PUT done-record, delete messages",
               "wall clocks of one machine (put and receive in this process); Tansu answers fetches when the "
               "10 ms fetch wait expires, so the consumer hop costs up to 10 ms"])


def row(path: str, values: list[float]) -> dict[str, Any]:
    return {"path": path, "n": len(values), "p50 (ms)": percentile(values, 50), "p99 (ms)": percentile(values, 99),
            "max (ms)": max(values)}


def one_version(s3: Any, reader: IngestEvents) -> tuple[float, float]:
    """(marker put -> event at the consumer, marker put -> event produced) in ms. The first warm-up version
    also waits for the consumer's group join, so no measured one pays for it."""
    prefix = f"datasets/support-intent/bench-{uuid.uuid4().hex[:12]}/"
    s3.put_object(Bucket="flywheel-data", Key=prefix + "part-0.jsonl", Body=jsonl(20))
    start, start_mono = time.time(), time.monotonic()
    s3.put_object(Bucket="flywheel-data", Key=prefix + "_SUCCESS", Body=b"")
    reader.wait_for(under(prefix), timeout=60)
    [seen] = reader.seen(under(prefix))
    received = reader.timeline.started + seen.at  # the watch thread's arrival time (monotonic)
    produced = seen.record["envelope"]["occurred_at"].timestamp()
    return (received - start_mono) * 1000, (produced - start) * 1000


def notification_floor(s3: Any, sqs: Any, count: int) -> list[float]:
    """put_object -> receive_message with nothing in between, on a bucket and queue of its own."""
    bucket, url = "bench-floor", sqs.create_queue(QueueName="bench-floor")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    sqs.purge_queue(QueueUrl=url)  # the s3:TestEvent
    samples = []
    for i in range(count):
        start = time.time()
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
        while not (got := sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages")):
            pass
        samples.append((time.time() - start) * 1000)
        sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    return samples


def throughput(megabytes: int, repeats: int) -> BenchResult:
    labels = ("billing", "shipping", "refund", "other")
    # Support messages of about 150 characters: the size of the demo's rows, not a best case.
    texts = [f"message {i}: my order arrived late, the box was damaged and I would like to know whether "
             f"a refund or a replacement is possible, thanks" for i in range(megabytes * 1024 * 1024 // 180)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"jsonl": Path(tmp) / "d.jsonl", "csv": Path(tmp) / "d.csv"}
        paths["jsonl"].write_text("".join(json.dumps({"text": t, "label": labels[i % 4]}) + "\n"
                                          for i, t in enumerate(texts)))
        paths["csv"].write_text("text,label\n" + "".join(f'"{t}",{labels[i % 4]}\n' for i, t in enumerate(texts)))
        rows = [throughput_row(fmt, path, fn, repeats, len(texts))
                for (fmt, path), fn in zip(paths.items(), (validate_jsonl, validate_csv), strict=True)]
    met = all(r["validate (MB/s)"] >= GOAL_VALIDATE_MB_S for r in rows)
    return BenchResult(
        title="Ingest: streaming validation throughput vs reading the bytes",
        command="python -m bench --only ingest",
        rows=rows,
        goal=f"validate >= {GOAL_VALIDATE_MB_S:.0f} MB/s per core for JSONL and CSV",
        verdict=f"{'met' if met else 'not met'}: " + "; ".join(
            f"{r['format']} {'met' if r['validate (MB/s)'] >= GOAL_VALIDATE_MB_S else 'not met'} at "
            f"{r['validate (MB/s)']:.0f} MB/s ({r['ratio']:.3f}x reading the bytes, {r['vs exact']:.1f}x the "
            f"exact path)" for r in rows),
        notes=[f"about {megabytes} MiB per format (rows of ~150-character text and a label), 1 MiB chunks from a "
               f"local file (page cache), median of {repeats} paired repeats; ratio = validate / read; one "
               "thread (pyarrow's CSV reader runs with use_threads=False)",
               "validate is `validate_jsonl` / `validate_csv` as the service calls them: sha256 (content hash), "
               "the accelerated reader (orjson for JSONL, pyarrow's CSV reader for CSV, a block of lines per "
               "call), required-column and label checks; exact is the same reading with the accelerators off "
               "(`read_stats(..., accelerate=False)`: per line, json / csv.reader), which any block the fast "
               "path cannot prove plain falls back to; read is the same chunk loop doing nothing with the bytes"])


def throughput_row(fmt: str, path: Path, validate: Callable[..., Any], repeats: int, rows: int) -> dict[str, Any]:
    size_mb = path.stat().st_size / 1e6
    validate(hashed(chunks(path)), Rules())  # warm-up: the accelerators' imports
    samples = []
    for _ in range(repeats):
        read_s = timed(lambda: sum(len(c) for c in chunks(path)))
        validate_s = timed(lambda: validate(hashed(chunks(path)), Rules()))
        exact_s = timed(lambda: read_stats(fmt, hashed(chunks(path)), Rules(), accelerate=False))
        samples.append((size_mb / read_s, size_mb / validate_s, size_mb / exact_s))
    return {"format": fmt, "size (MB)": size_mb, "read (MB/s)": statistics.median(p[0] for p in samples),
            "validate (MB/s)": statistics.median(p[1] for p in samples),
            "exact (MB/s)": statistics.median(p[2] for p in samples),
            "ratio": statistics.median(p[1] / p[0] for p in samples),
            "vs exact": statistics.median(p[1] / p[2] for p in samples),
            "rows/s": rows * statistics.median(p[1] for p in samples) / size_mb}


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def hashed(source: Iterator[bytes]) -> Iterator[bytes]:
    digest = hashlib.sha256()
    for chunk in source:
        digest.update(chunk)
        yield chunk
