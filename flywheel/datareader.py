"""The dataset reader: the one reading of dataset files that ingest validates with and the training entry
point trains from, so that a version ingest calls ready is exactly what a run trains on.

Formats by extension, case-insensitively: `.jsonl`/`.ndjson` (JSON Lines), `.csv` (RFC 4180, header row)
and `.parquet`. A leading UTF-8 BOM and CRLF line ends are accepted; the columns a model needs come from
`Rules` (per-model required columns, the label column; the text column is the first required column that
is not the label column). Reading is streaming and bounded: a line (a CSV record) longer than
`max_line_bytes` is refused before it is parsed, and the distinct column names and label strings of a file
are bounded in number and length. Every refusal is an `Invalid` with a reason (a RejectionReason symbol),
a detail and, where it has one, the 1-based line (JSONL, CSV) or row (Parquet).

Standard library only, so the training image can install this module without the core's dependencies;
pyarrow is imported only when a Parquet file is read. Validation (`read_stats`, what ingest calls) may take a
fast path over whole blocks of lines where orjson (JSON Lines) or pyarrow (CSV) is installed; it takes a block
only when it can prove the exact per-line reading gives the same counts, and otherwise reads the block
exactly, so verdicts, reasons, details and line numbers do not depend on it. The trainer (`read_examples`)
always reads exactly.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from operator import itemgetter
from pathlib import Path
from typing import Any

BOM = b"\xef\xbb\xbf"
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
DEFAULT_MAX_LINE_BYTES = 1024 * 1024  # json.loads peaks at ~25x a line's size: bounded per line
BLOCK_BYTES = 256 * 1024  # lines are cut from chunks in blocks of about this size (and parsed a block at a time)
CSV_BLOCK_BYTES = 1024 * 1024  # pyarrow's CSV reader costs ~0.1 ms a call: larger blocks for CSV


def data_format(name: str) -> str | None:
    """jsonl, csv or parquet by extension (any case); None for anything else."""
    lower = name.lower()
    return next((fmt for ext, fmt in FORMATS.items() if lower.endswith(ext)), None)


class Invalid(Exception):
    """The data breaks a rule; `reason` is a RejectionReason symbol."""

    def __init__(self, reason: str, detail: str, line: int | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.line = reason, detail, line


@dataclass(frozen=True)
class Rules:
    """What a model's data must hold, and the bounds on reading it. The label column is always required."""

    required: tuple[str, ...] = ("text", "label")
    label_column: str = "label"
    max_labels: int = 10_000
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_columns: int = 1_000
    max_name_chars: int = 1_000  # the longest column name or label string

    def __post_init__(self) -> None:
        required = tuple(self.required)
        if self.label_column not in required:
            required += (self.label_column,)
        object.__setattr__(self, "required", required)

    @property
    def text_column(self) -> str | None:
        """The column a trainer reads as text: the first required column that is not the label column."""
        return next((c for c in self.required if c != self.label_column), None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "required": list(self.required)}

    @classmethod
    def from_dict(cls, given: dict[str, Any]) -> Rules:
        """The inverse of to_dict; unknown keys (from a newer writer) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in given.items() if k in known}
        if "required" in values:
            values["required"] = tuple(values["required"])
        return cls(**values)


@dataclass
class Stats:
    """What reading one object found. `rules` is what it was read with (the manifest records it)."""

    rules: Rules = field(default_factory=Rules)
    rows: int = 0
    columns: set[str] = field(default_factory=set)
    labels: Counter[str] = field(default_factory=Counter)

    def add_columns(self, names: Iterable[str], line: int | None) -> None:
        if self.columns.issuperset(names):  # the common case, one C-level pass
            return
        new = [n for n in names if n not in self.columns]
        if any(len(n) > self.rules.max_name_chars for n in new):
            raise Invalid("MALFORMED_ROW", f"a column name longer than {self.rules.max_name_chars} characters",
                          line)
        self.columns.update(new)
        if len(self.columns) > self.rules.max_columns:
            raise Invalid("MALFORMED_ROW", f"more than {self.rules.max_columns} distinct column names", line)

    def add_label(self, label: str, line: int | None, count: int = 1) -> None:
        if label not in self.labels:
            if len(label) > self.rules.max_name_chars:
                raise Invalid("MALFORMED_ROW", f"a label longer than {self.rules.max_name_chars} characters",
                              line)
            if len(self.labels) >= self.rules.max_labels:
                raise Invalid("MALFORMED_ROW", f"more than {self.rules.max_labels} distinct labels", line)
        self.labels[label] += count


def check_row(row: dict[str, Any], rules: Rules, stats: Stats, line: int) -> None:
    """The row-level rules shared by JSONL and CSV: required columns hold non-blank strings."""
    for name in rules.required:
        value = row[name]
        if not isinstance(value, str) or not value.strip():
            raise Invalid("MALFORMED_ROW", f"column {name!r} must be a non-empty string, got {value!r:.60}", line)
    stats.rows += 1
    stats.add_label(row[rules.label_column], line)


def lines(chunks: Iterable[bytes], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes without the line end); strips a leading UTF-8 BOM and the CR of CRLF line ends.
    A line longer than max_line_bytes is refused as soon as that many bytes are seen, never buffered whole.
    Splitting bytes on LF is safe in UTF-8: 0x0A never occurs inside a multi-byte character."""
    for first, block in _blocks(chunks, max_line_bytes):
        yield from _numbered(first, block, max_line_bytes)


def _too_long(max_line_bytes: int, line: int) -> Invalid:
    return Invalid("MALFORMED_ROW", f"a line longer than {max_line_bytes} bytes", line)


def _blocks(chunks: Iterable[bytes], max_line_bytes: int,
            piece: int = BLOCK_BYTES) -> Generator[tuple[int, bytes], int | None, None]:
    """(number of its first line, block): runs of whole lines, each block ending with LF but the last, which
    holds what follows the file's last LF. A block is at most `piece` bytes of a chunk plus one unfinished
    line (at most max_line_bytes + 1 bytes: the CR of a CRLF may still wait for its LF); a longer unfinished
    line is refused as soon as it is seen. A reader that already knows how many lines the block it was just
    given holds may `send` that count (counting LFs costs about as much as a fast path's parsing step)."""
    pending: list[bytes] = []
    size = number = 0
    for chunk in _without_bom(chunks):
        for start in range(0, len(chunk), piece):
            part = chunk[start:start + piece] if len(chunk) > piece else chunk
            cut = part.rfind(b"\n") + 1
            if cut:
                block = b"".join((*pending, memoryview(part)[:cut])) if pending else part[:cut]
                told = yield number + 1, block
                number += block.count(b"\n") if told is None else told
                pending, size, part = [], 0, part[cut:]
            if part:
                pending.append(part)
                size += len(part)
            if size > max_line_bytes + 1:
                raise _too_long(max_line_bytes, number + 1)
    if pending:
        yield number + 1, b"".join(pending)


def _numbered(first: int, block: bytes, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """The lines of one block from `_blocks`, numbered, without CR of CRLF; an empty last line is no line."""
    parts = block.split(b"\n")
    last = parts.pop().removesuffix(b"\r")  # b"" when the block ends with LF
    for number, raw in enumerate(parts, first):
        raw = raw.removesuffix(b"\r")
        if len(raw) > max_line_bytes:
            raise _too_long(max_line_bytes, number)
        yield number, raw
    if last:
        if len(last) > max_line_bytes:
            raise _too_long(max_line_bytes, first + len(parts))
        yield first + len(parts), last


def _without_bom(chunks: Iterable[bytes]) -> Iterator[bytes]:
    head = b""
    it = iter(chunks)
    for chunk in it:
        head += chunk
        if len(head) >= len(BOM):
            break
    yield head.removeprefix(BOM)
    yield from it


def _text(number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid("ENCODING_ERROR", f"not UTF-8 at byte {exc.start} of the line: {exc.reason}",
                      number) from None


def jsonl_rows(chunks: Iterable[bytes], rules: Rules, stats: Stats) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of every row; blank lines carry no row."""
    return _jsonl(chunks, rules, stats, None)


def _jsonl(chunks: Iterable[bytes], rules: Rules, stats: Stats,
           fast: Callable[[bytes, Stats], int | None] | None) -> Iterator[tuple[int, dict[str, Any]]]:
    """The rows of the blocks `fast` does not take (it counts the ones it takes into stats itself and says how
    many lines they hold)."""
    blocks = _blocks(chunks, rules.max_line_bytes)
    told = None
    while (got := _send(blocks, told)) is not None:
        first, block = got
        told = None if fast is None else fast(block, stats)
        if told is not None:
            continue
        for number, raw in _numbered(first, block, rules.max_line_bytes):
            if not raw.strip():
                continue
            yield number, _json_row(number, raw, rules, stats)


def _send(blocks: Generator[tuple[int, bytes], int | None, None], told: int | None) -> tuple[int, bytes] | None:
    try:
        return blocks.send(told)
    except StopIteration:
        return None


def _json_row(number: int, raw: bytes, rules: Rules, stats: Stats) -> dict[str, Any]:
    text = _text(number, raw)
    try:
        row = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Invalid("MALFORMED_ROW", f"invalid JSON: {exc.msg} at column {exc.colno}", number) from None
    except RecursionError:
        raise Invalid("MALFORMED_ROW", "invalid JSON: nested too deeply", number) from None
    except ValueError as exc:  # e.g. an integer over Python's digit limit
        raise Invalid("MALFORMED_ROW", f"invalid JSON: {exc}", number) from None
    if not isinstance(row, dict):
        raise Invalid("MALFORMED_ROW", f"a row must be a JSON object, got {type(row).__name__}", number)
    missing = [c for c in rules.required if c not in row]
    if missing:
        raise Invalid("MISSING_COLUMNS", f"row lacks required column(s) {', '.join(missing)}", number)
    stats.add_columns(row, number)
    check_row(row, rules, stats, number)
    return row


def csv_rows(chunks: Iterable[bytes], rules: Rules, stats: Stats) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, row) of every record after the header; RFC 4180 quoting (quoted fields may hold commas,
    quotes and line ends); a record, however many lines it spans, is bounded by max_line_bytes. The line
    of a record is the physical line where it ends."""
    return _csv(chunks, rules, stats, False)


def _csv(chunks: Iterable[bytes], rules: Rules, stats: Stats,
         accelerate: bool) -> Iterator[tuple[int, dict[str, Any]]]:
    """csv_rows; with `accelerate`, whole blocks that start at a record boundary are offered to the fast
    path first (it counts the ones it takes into stats itself; their rows are not yielded)."""
    limit = rules.max_line_bytes
    blocks = _blocks(chunks, limit, CSV_BLOCK_BYTES)
    held: list[tuple[int, bytes]] = []  # a block to read exactly next (the fast path declined it)
    current: tuple[int, bytes] = (1, b"")  # the block the exact reader is in
    record = last = 0  # bytes of the record so far; the number of the last line the reader took
    boundary = drop = False  # the reader took the last line of its block; abandon the rest of the block

    def physical() -> Iterator[str]:
        nonlocal current, record, last, boundary, drop
        while (got := held.pop() if held else next(blocks, None)) is not None:
            current = got
            first, block = got
            end = first + block.count(b"\n") - 1 if block.endswith(b"\n") else first
            for number, raw in _numbered(first, block, limit):
                record += len(raw) + 1
                if record > limit + 1:
                    raise Invalid("MALFORMED_ROW", f"a record longer than {limit} bytes", number)
                last, boundary = number, number == end
                yield _text(number, raw) + "\n"
                if drop:
                    drop = False
                    break

    def take_fast() -> None:
        told = None  # the line count of the block `blocks` gave last, when the fast path took it whole
        while True:
            fresh = not held  # held: the rest of a block the exact reader began, not the one `blocks` gave last
            if (got := held.pop() if held else _send(blocks, told)) is None:
                return
            taken = fast(got[1], stats)  # type: ignore[misc]
            if taken is None:
                held.append(got)
                return
            told = taken if fresh else None

    reader = csv.reader(physical(), strict=True)
    try:
        header = None
        for fields_ in reader:
            record = 0
            if fields_:
                header = fields_
                break
        if header is None:
            return
        if len(header) > rules.max_columns:
            raise Invalid("MALFORMED_ROW", f"more than {rules.max_columns} distinct column names", last)
        missing = [c for c in rules.required if c not in header]
        if missing:
            raise Invalid("MISSING_COLUMNS", f"header lacks required column(s) {', '.join(missing)}", last)
        stats.add_columns(header, last)
        fast = _csv_accelerator(header, rules) if accelerate else None
        if fast is not None and not boundary:  # hand the rest of the header's block to the fast path
            first, block = current
            rest = _after_lines(block, last - first + 1)
            if rest:
                held.append((last + 1, rest))
                drop = boundary = True
        while True:
            if fast is not None and boundary:
                take_fast()
            fields_ = next(reader, None)
            if fields_ is None:
                return
            record = 0
            if not fields_:
                continue
            if len(fields_) != len(header):
                raise Invalid("MALFORMED_ROW", f"expected {len(header)} fields, found {len(fields_)}", last)
            row = dict(zip(header, fields_, strict=True))
            check_row(row, rules, stats, last)
            yield last, row
    except csv.Error as exc:
        raise Invalid("MALFORMED_ROW", f"CSV: {exc}", last) from None


def _after_lines(block: bytes, count: int) -> bytes:
    """What follows the first `count` lines of a block."""
    at = 0
    for _ in range(count):
        at = block.find(b"\n", at) + 1
        if not at:
            return b""
    return block[at:]


# Accelerators: optional fast paths over a whole block of lines, used by `read_stats` (ingest's validation)
# when their package is installed (orjson for JSON Lines, pyarrow for CSV). Each takes a block only when it
# can prove the exact per-line reading above accepts every line of it with the same counts, and then
# updates stats itself; otherwise it leaves stats untouched and the block is read exactly, which names
# the reason and the line. So the verdict, reason, detail and line are those of the exact reading.

# Python's str.isspace characters, what str.strip removes (a test checks this against unicodedata)
WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
              "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
MAX_FAST_DEPTH = 256  # json.loads refuses nesting near the interpreter's recursion limit; orjson past 1024


def _short_lines(block: bytes, limit: int) -> bool:
    """Whether no line of the block is longer than limit bytes. A longer line would contain a whole aligned
    window of limit // 2 bytes without LF, so a few `find`s settle the common case without splitting."""
    if len(block) <= limit:
        return True
    width = max(limit // 2, 1)
    if all(block.find(b"\n", at, at + width) >= 0 for at in range(0, len(block) - width + 1, width)):
        return True
    return max(map(len, block.split(b"\n"))) <= limit


def _add_labels(counts: dict[Any, int], stats: Stats) -> bool:
    """Add a block's label counts (in order of first appearance) if every label is a non-blank string and
    the bounds hold; otherwise change nothing."""
    rules = stats.rules
    new = [label for label in counts if label not in stats.labels]
    if (len(stats.labels) + len(new) > rules.max_labels
            or not all(type(label) is str and label.strip() for label in counts)
            or any(len(label) > rules.max_name_chars for label in new)):
        return False
    for label, count in counts.items():
        stats.labels[label] += count
    return True


def _json_accelerator(rules: Rules) -> Callable[[bytes, Stats], int | None] | None:
    """A block of JSON lines parsed with orjson. What orjson accepts, json accepts with the same keys and
    strings (both keep the last of duplicate keys; orjson refuses NaN, lone surrogates, integers json would
    turn into over-long ints, and nesting deeper than 1024); nesting deep enough for json to refuse is ruled
    out by counting brackets. Blank lines other than empty ones, and every failure, go to the exact path."""
    try:
        from orjson import loads
    except ImportError:
        return None
    label = rules.label_column
    texts = [itemgetter(name) for name in rules.required if name != label]
    labels = itemgetter(label)

    def fast(block: bytes, stats: Stats) -> int | None:
        if not _short_lines(block, rules.max_line_bytes):
            return None
        parts = block.split(b"\n")
        try:
            rows = list(map(loads, filter(None, parts)))  # every row a dict holding the required columns:
            for text in texts:  # itemgetter fails on anything else
                if not all(map(str.strip, map(text, rows))):  # str.strip fails on anything but a str
                    return None
            counts = Counter(map(labels, rows))
        except (ValueError, TypeError, KeyError, RecursionError):  # orjson.JSONDecodeError is a ValueError
            return None
        if not rows:
            return len(parts) - 1
        if max(map(len, parts)) > MAX_FAST_DEPTH:  # else no line can nest that deep
            brackets = block.count(b"{") + block.count(b"[")  # every row holds at least one
            if brackets - len(rows) >= MAX_FAST_DEPTH and max(map(_brackets, parts)) > MAX_FAST_DEPTH:
                return None
        names = set().union(*rows)
        new = names - stats.columns
        if len(stats.columns) + len(new) > rules.max_columns or any(len(n) > rules.max_name_chars for n in new):
            return None
        if not _add_labels(counts, stats):
            return None
        stats.columns |= new
        stats.rows += len(rows)
        return len(parts) - 1  # the LFs: the lines of any block but the last

    return fast


def _brackets(line: bytes) -> int:
    return line.count(b"{") + line.count(b"[")


def _plain_quotes(block: bytes) -> bool:
    """Whether every quote of the block opens or closes a whole field on one line (or doubles a quote
    inside one): then the block is one record per line in the grammar both csv.reader(strict=True) and
    pyarrow parse alike. Splitting on quotes alternates outside / inside pieces; `""` inside a field is an
    empty outside piece."""
    if b'"' not in block:
        return True
    pieces = block.split(b'"')
    if len(pieces) % 2 == 0 or b"\n" in b"".join(pieces[1::2]):  # an open quote; a quoted line end
        return False
    head, tail = pieces[0], pieces[-1]
    if (head and not head.endswith((b",", b"\n"))) or not tail.startswith((b",", b"\n")):
        return False
    between = list(filter(None, pieces[2:-1:2]))  # from a closing quote to the next opening one
    if between:  # each must start and end with a delimiter (the block holds no NUL: a safe separator)
        joined = b"\0" + b"\0".join(between) + b"\0"
        if (joined.count(b"\0,") + joined.count(b"\0\n") != len(between)
                or joined.count(b",\0") + joined.count(b"\n\0") != len(between)):
            return False
    return True


def _csv_accelerator(header: list[str], rules: Rules) -> Callable[[bytes, Stats], int | None] | None:
    """A block of CSV records (after the header) parsed with pyarrow, taken only when every record is one
    line in the plain grammar (`_plain_quotes`; no CR but that of CRLF, no NUL, no BOM at its start, which
    pyarrow would drop), the block is UTF-8 and no line is longer than the record bound or csv's field size
    limit; then pyarrow and csv.reader read the same fields."""
    if len(set(header)) != len(header):  # csv_rows keeps the last of duplicate names
        return None
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pcsv
    except ImportError:
        return None
    label = rules.label_column
    read = pcsv.ReadOptions(column_names=header, use_threads=False)
    # an empty line would be a row of one empty field: refused (csv.reader skips it), read exactly
    parse = pcsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False)
    convert = pcsv.ConvertOptions(column_types={name: pa.string() for name in rules.required},
                                  include_columns=list(rules.required), strings_can_be_null=False,
                                  quoted_strings_can_be_null=False, check_utf8=False)

    def fast(block: bytes, stats: Stats) -> int | None:
        if block.startswith(BOM):
            return None
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if not block.endswith(b"\n"):  # the file's last line
            block = block.removesuffix(b"\r") + b"\n"
        if b"\r" in block or b"\0" in block:
            return None
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if not _short_lines(block, min(rules.max_line_bytes, csv.field_size_limit())) or not _plain_quotes(block):
            return None
        try:
            table = pcsv.read_csv(pa.py_buffer(block), read_options=read, parse_options=parse,
                                  convert_options=convert)
        except pa.ArrowException:
            return None
        for name in rules.required:
            if name != label and pc.min(pc.utf8_length(pc.utf8_ltrim(table.column(name), WHITESPACE))).as_py() == 0:
                return None
        counts = {item["values"]: item["counts"] for item in pc.value_counts(table.column(label)).to_pylist()}
        if not _add_labels(counts, stats):
            return None
        stats.rows += table.num_rows
        return table.num_rows  # a row a line

    return fast


def parquet_batches(path: Path, rules: Rules, stats: Stats, batch_rows: int = 65_536) -> Iterator[Any]:
    """The required (and label) columns, one checked record batch at a time: memory stays bounded by the
    batch, not the file. Lines are 1-based row numbers."""
    import pyarrow as pa  # only Parquet needs it

    try:
        parquet = _open_parquet(path)
        schema = parquet.schema_arrow
        if len(schema.names) > rules.max_columns:
            raise Invalid("MALFORMED_ROW", f"more than {rules.max_columns} distinct column names")
        _check_schema(schema, rules)
        stats.add_columns(schema.names, None)
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=list(rules.required)):
            _check_batch(batch, rules, first_row=stats.rows + 1)
            stats.rows += batch.num_rows
            _count_labels(batch, rules, stats)
            yield batch
    except (pa.ArrowException, OSError, ValueError) as exc:
        # pyarrow reports a corrupt page as OSError, a column name that is not UTF-8 as UnicodeDecodeError
        raise Invalid("ENCODING_ERROR", f"Parquet data could not be decoded: {exc}", stats.rows + 1) from None


def _open_parquet(path: Path) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise Invalid("ENCODING_ERROR", f"not a readable Parquet file: {exc}") from None


def _check_schema(schema: Any, rules: Rules) -> None:
    import pyarrow as pa

    missing = [c for c in rules.required if c not in schema.names]
    if missing:
        raise Invalid("MISSING_COLUMNS", f"schema lacks required column(s) {', '.join(missing)}")
    for name in rules.required:
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise Invalid("MALFORMED_ROW", f"column {name!r} is {kind}, expected string")


def _check_batch(batch: Any, rules: Rules, first_row: int) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    batch.validate(full=True)  # string data that is not UTF-8 (Parquet readers do not check it)
    for name in rules.required:
        column = batch.column(name)
        blank = pc.or_kleene(pc.is_null(column), pc.equal(pc.utf8_trim_whitespace(column.cast(pa.string())), ""))
        blank = pc.fill_null(blank, True)
        if pc.any(blank).as_py():
            offset = pc.index(blank, True).as_py()
            raise Invalid("MALFORMED_ROW", f"column {name!r} must be a non-empty string", first_row + offset)


def _count_labels(batch: Any, rules: Rules, stats: Stats) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    for item in pc.value_counts(batch.column(rules.label_column).cast(pa.string())).to_pylist():
        stats.add_label(str(item["values"]), stats.rows, item["counts"])


def non_empty(stats: Stats) -> Stats:
    if stats.rows == 0:
        raise Invalid("EMPTY_FILE", "the object holds no data rows")
    return stats


def read_stats(fmt: str, source: Iterable[bytes] | Path, rules: Rules, accelerate: bool = True) -> Stats:
    """Validate one object: its Stats, or Invalid. `source` is chunks for jsonl/csv, a local path for parquet.
    With `accelerate` (and orjson / pyarrow installed) whole blocks of plain lines take a fast path; the
    result, an Invalid's reason, detail and line included, is the same either way."""
    stats = Stats(rules)
    if fmt == "parquet":
        for _ in parquet_batches(Path(source), rules, stats):  # type: ignore[arg-type]
            pass
    elif fmt == "jsonl":
        for _ in _jsonl(source, rules, stats, _json_accelerator(rules) if accelerate else None):  # type: ignore[arg-type]
            pass
    else:
        for _ in _csv(source, rules, stats, accelerate):  # type: ignore[arg-type]
            pass
    return non_empty(stats)


def file_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(size):
            yield chunk


def read_examples(path: Path, rules: Rules) -> Iterator[tuple[str, str]]:
    """(text, label) of every row of one local file, read exactly as `read_stats` validates it: the same
    rows, the same refusals (an empty file included). The trainer's reading."""
    fmt = data_format(path.name)
    if fmt is None:
        raise Invalid("UNSUPPORTED_FORMAT", f"{path.name}: expected .jsonl, .ndjson, .csv or .parquet")
    text, label = rules.text_column, rules.label_column
    if text is None:
        raise Invalid("MISSING_COLUMNS", f"the rules name no text column besides the label {label!r}")
    stats = Stats(rules)
    if fmt == "parquet":
        for batch in parquet_batches(path, rules, stats):
            yield from zip(batch.column(text).to_pylist(), batch.column(label).to_pylist(), strict=True)
    else:
        reader = jsonl_rows if fmt == "jsonl" else csv_rows
        for _, row in reader(file_chunks(path), rules, stats):
            yield row[text], row[label]
    non_empty(stats)
