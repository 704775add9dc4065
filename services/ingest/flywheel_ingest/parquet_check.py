"""Parquet validation. The footer sits at the end, so the object is spooled to a local file first (in chunks),
then read one record batch at a time: memory stays bounded by the batch, not the object."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from flywheel_ingest.validation import Invalid, Rules, Stats


def validate_parquet(path: Path, rules: Rules, batch_rows: int = 65_536) -> Stats:
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise Invalid("ENCODING_ERROR", f"not a readable Parquet file: {exc}") from None
    schema = parquet.schema_arrow
    _check_schema(schema, rules)
    stats = Stats(columns=set(schema.names))
    wanted = list(dict.fromkeys([*rules.required, *([rules.label_column] if rules.label_column in schema.names
                                                   else [])]))
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=wanted):
            _check_batch(batch, rules, first_row=stats.rows + 1)
            stats.rows += batch.num_rows
            _count_labels(batch, rules, stats)
    except pa.ArrowException as exc:
        raise Invalid("ENCODING_ERROR", f"Parquet data could not be decoded: {exc}", stats.rows + 1) from None
    if stats.rows == 0:
        raise Invalid("EMPTY_FILE", "the object holds no data rows")
    return stats


def _check_schema(schema: pa.Schema, rules: Rules) -> None:
    missing = [c for c in rules.required if c not in schema.names]
    if missing:
        raise Invalid("MISSING_COLUMNS", f"schema lacks required column(s) {', '.join(missing)}")
    for name in rules.required:
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise Invalid("MALFORMED_ROW", f"column {name!r} is {kind}, expected string")


def _check_batch(batch: pa.RecordBatch, rules: Rules, first_row: int) -> None:
    for name in rules.required:
        column = batch.column(name)
        blank = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_trim_whitespace(column.cast(pa.string())), ""))
        blank = pc.fill_null(blank, True)
        if pc.any(blank).as_py():
            offset = pc.index(blank, True).as_py()
            raise Invalid("MALFORMED_ROW", f"column {name!r} must be a non-empty string", first_row + offset)


def _count_labels(batch: pa.RecordBatch, rules: Rules, stats: Stats) -> None:
    if rules.label_column not in batch.schema.names:
        return
    for item in pc.value_counts(batch.column(rules.label_column).cast(pa.string())).to_pylist():
        stats.labels[str(item["values"])] += item["counts"]
    if len(stats.labels) > rules.max_labels:
        raise Invalid("MALFORMED_ROW", f"more than {rules.max_labels} distinct labels", stats.rows)
