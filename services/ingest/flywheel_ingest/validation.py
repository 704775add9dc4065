"""Streaming validation of JSONL and CSV: chunks in, row count / columns / label counts out, or an Invalid
naming the reason and the 1-based line. Never holds more than one line (one CSV record) in memory."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

BOM = b"\xef\xbb\xbf"


class Invalid(Exception):
    """The object breaks a rule; `reason` is a RejectionReason symbol."""

    def __init__(self, reason: str, detail: str, line: int | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.line = reason, detail, line


@dataclass(frozen=True)
class Rules:
    required: tuple[str, ...] = ("text", "label")
    label_column: str = "label"
    max_labels: int = 10_000


@dataclass
class Stats:
    rows: int = 0
    columns: set[str] = field(default_factory=set)
    labels: Counter[str] = field(default_factory=Counter)

    def count(self, row: dict[str, object], rules: Rules, line: int) -> None:
        for name in rules.required:
            value = row[name]
            if not isinstance(value, str) or not value.strip():
                raise Invalid("MALFORMED_ROW", f"column {name!r} must be a non-empty string, got {value!r:.60}",
                              line)
        self.rows += 1
        if rules.label_column in row:
            self.labels[str(row[rules.label_column])] += 1
            if len(self.labels) > rules.max_labels:
                raise Invalid("MALFORMED_ROW", f"more than {rules.max_labels} distinct labels", line)


def lines(chunks: Iterable[bytes], max_line_bytes: int = 16 * 1024 * 1024) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line end); strips a leading UTF-8 BOM and CR of CRLF line ends.
    Splitting bytes on LF is safe in UTF-8: 0x0A never occurs inside a multi-byte character."""
    rest, number, first = b"", 0, True
    for chunk in chunks:
        rest += chunk
        if first:
            if len(rest) < len(BOM) and b"\n" not in rest:
                continue
            rest, first = rest.removeprefix(BOM), False
        *complete, rest = rest.split(b"\n")
        for raw in complete:
            number += 1
            yield number, raw.removesuffix(b"\r")
        if len(rest) > max_line_bytes:
            raise Invalid("MALFORMED_ROW", f"a line longer than {max_line_bytes} bytes", number + 1)
    rest = rest.removeprefix(BOM) if first else rest
    if rest:
        yield number + 1, rest.removesuffix(b"\r")


def _text(number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("ENCODING_ERROR", f"not UTF-8 at byte {exc.start} of the line: {exc.reason}",
                      number) from None


def validate_jsonl(chunks: Iterable[bytes], rules: Rules) -> Stats:
    stats = Stats()
    for number, raw in lines(chunks):
        if not raw.strip():
            continue  # blank lines (a trailing newline, say) carry no row
        try:
            row = json.loads(_text(number, raw))
        except json.JSONDecodeError as exc:
            raise Invalid("MALFORMED_ROW", f"invalid JSON: {exc.msg} at column {exc.colno}", number) from None
        if not isinstance(row, dict):
            raise Invalid("MALFORMED_ROW", f"a row must be a JSON object, got {type(row).__name__}", number)
        missing = [c for c in rules.required if c not in row]
        if missing:
            raise Invalid("MISSING_COLUMNS", f"row lacks required column(s) {', '.join(missing)}", number)
        stats.columns.update(row)
        stats.count(row, rules, number)
    return _non_empty(stats)


def validate_csv(chunks: Iterable[bytes], rules: Rules) -> Stats:
    """RFC 4180 quoting (quoted fields may hold commas, quotes and line ends); a header row is required."""
    physical = (_text(n, raw) + "\n" for n, raw in lines(chunks))
    reader = csv.reader(physical, strict=True)
    try:
        header = next((r for r in reader if r), None)
        if header is None:
            return _non_empty(Stats())
        missing = [c for c in rules.required if c not in header]
        if missing:
            raise Invalid("MISSING_COLUMNS", f"header lacks required column(s) {', '.join(missing)}",
                          reader.line_num)
        stats = Stats(columns=set(header))
        for fields in reader:
            if not fields:
                continue
            if len(fields) != len(header):
                raise Invalid("MALFORMED_ROW", f"expected {len(header)} fields, found {len(fields)}",
                              reader.line_num)
            stats.count(dict(zip(header, fields, strict=True)), rules, reader.line_num)
    except csv.Error as exc:
        raise Invalid("MALFORMED_ROW", f"CSV: {exc}", reader.line_num) from None
    return _non_empty(stats)


def _non_empty(stats: Stats) -> Stats:
    if stats.rows == 0:
        raise Invalid("EMPTY_FILE", "the object holds no data rows")
    return stats
