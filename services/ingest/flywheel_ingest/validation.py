"""Streaming validation of JSONL and CSV: chunks in, row count / columns / label counts out, or an Invalid
naming the reason and the 1-based line. The reading itself is the shared dataset reader
(`flywheel.datareader`), the same one the training entry point trains from, so what ingest accepts is
exactly what a run reads. Reads a block of lines at a time (a quarter MiB of a chunk, 1 MiB for CSV, plus
at most one unfinished line of at most `max_line_bytes`); the distinct column names and labels are bounded
(`Rules`). Plain blocks take the reader's fast path (orjson, pyarrow's CSV reader: this distribution's
dependencies), with the same verdict, reason and line as the exact per-line reading."""

from __future__ import annotations

from collections.abc import Iterable

from flywheel.datareader import BOM, Invalid, Rules, Stats, lines, read_stats

__all__ = ["BOM", "Invalid", "Rules", "Stats", "lines", "validate_csv", "validate_jsonl"]


def validate_jsonl(chunks: Iterable[bytes], rules: Rules) -> Stats:
    return read_stats("jsonl", chunks, rules)


def validate_csv(chunks: Iterable[bytes], rules: Rules) -> Stats:
    """RFC 4180 quoting (quoted fields may hold commas, quotes and line ends); a header row is required."""
    return read_stats("csv", chunks, rules)
