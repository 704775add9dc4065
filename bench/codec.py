"""Codec overhead: framed encode/decode through the embedded registry against bare fastavro on the same record.

The record is the monitor's hot-path event, a ModelMetricsObserved carrying a 10-bucket MetricSummary.
Each repeat times bare fastavro and the codec back to back and keeps their ratio; the median ratio is the
figure, so a noisy neighbour slows both sides of a pair rather than one side of the comparison.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from bench.common import BenchResult
from flywheel.codec import AvroCodec
from flywheel.events import envelope
from flywheel.registry import EmbeddedRegistry
from flywheel.schemas import SchemaSet
from flywheel.settings import REPO_SCHEMA_DIR

GOAL_RATIO = 0.8
EVENT = "ModelMetricsObserved"


def sample() -> dict[str, Any]:
    bounds = [0.05 * i for i in range(1, 11)]
    return {
        "envelope": envelope("serving", occurred_at_ms=1_700_000_000_000),
        "model_id": "support-intent", "model_version": "v12", "metric": "accuracy", "value": 0.91,
        "sample_count": 500, "window_start": 1_700_000_000_000, "window_end": 1_700_000_060_000,
        "summary": {"count": 500, "sum": 455.0, "sum_squares": 414.2, "min": 0.0, "max": 1.0,
                    "bucket_bounds": bounds, "bucket_counts": [50] * (len(bounds) + 1)},
    }


def rate(fn: Callable[[], None], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def paired(base: Callable[[], None], other: Callable[[], None], n: int, repeats: int) -> tuple[float, float, float]:
    """Median rates of both and the median of their per-repeat ratios (other / base)."""
    pairs = [(rate(base, n), rate(other, n)) for _ in range(repeats)]
    return (statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs),
            statistics.median(p[1] / p[0] for p in pairs))


def evolved_codec(workdir: Path) -> AvroCodec:
    """A consumer one version ahead: the event gained an optional field, so old bytes need resolution."""
    target = workdir / "schemas"
    shutil.copytree(REPO_SCHEMA_DIR, target)
    path = target / f"flywheel.{EVENT}.avsc"
    schema = json.loads(path.read_text())
    schema["fields"].append({"name": "region", "type": "string", "default": "", "doc": "Serving region."})
    path.write_text(json.dumps(schema))
    return AvroCodec(EmbeddedRegistry(SchemaSet(target)))


def row(operation: str, figures: tuple[float, float, float]) -> dict[str, Any]:
    return {"operation": operation, "baseline (records/s)": figures[0], "measured (records/s)": figures[1],
            "ratio": figures[2]}


def run(quick: bool = False) -> BenchResult:
    n, repeats = (2_000, 3) if quick else (20_000, 7)
    codec = AvroCodec(EmbeddedRegistry(SchemaSet(REPO_SCHEMA_DIR)))
    parsed = codec.registry.schemas.event(EVENT).parsed
    record = sample()
    framed = codec.encode(EVENT, record)
    body = framed[5:]

    def bare_encode() -> None:
        schemaless_writer(BytesIO(), parsed, record)

    def bare_decode() -> None:
        schemaless_reader(BytesIO(body), parsed, None)

    encode = paired(bare_encode, lambda: codec.encode(EVENT, record), n, repeats)
    decode = paired(bare_decode, lambda: codec.decode(framed), n, repeats)
    checked = paired(lambda: codec.encode(EVENT, record), lambda: codec.encode(EVENT, record, check=True),
                     n, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        newer = evolved_codec(Path(tmp))
        current_framed = newer.encode(EVENT, record | {"region": ""})
        resolved = paired(lambda: newer.decode(current_framed), lambda: newer.decode(framed), n, repeats)
    worst = min(encode[2], decode[2])
    verdict = f"{'met' if worst >= GOAL_RATIO else 'not met'}: worst ratio {worst:.2f}x vs goal {GOAL_RATIO}x"
    return BenchResult(
        title="Codec overhead over bare fastavro",
        command="python -m bench --only codec",
        rows=[row("encode: bare fastavro -> codec.encode (framed)", encode),
              row("decode: bare fastavro -> codec.decode (framed, checked)", decode),
              row("encode -> encode(check=True) (field-by-field validation)", checked),
              row("decode same version -> decode an older writer (schema resolution)", resolved)],
        goal=f"framing, registry lookup and the trailing-bytes check cost at most {1 - GOAL_RATIO:.0%} "
             f"of bare fastavro (codec/bare >= {GOAL_RATIO}x for encode and decode)",
        verdict=verdict,
        notes=[f"record: {EVENT} with a 10-bucket summary, {len(framed)} bytes framed ({len(body)} Avro + 5 header)",
               f"{n:,} records per timing, median of {repeats} paired repeats; ratio = measured / baseline",
               "the last two rows are for information: validation is opt-in (`check=True`, used by the CLI), "
               "and resolution only happens for records written with a released, older schema"],
    )
