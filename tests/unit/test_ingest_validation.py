"""Streaming JSONL / CSV / Parquet validation: reasons, line numbers, and chunking that changes nothing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.datareader import read_stats
from flywheel_ingest.parquet_check import validate_parquet
from flywheel_ingest.validation import BOM, Invalid, Rules, lines, validate_csv, validate_jsonl

RULES = Rules()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def reason_of(fn, data: bytes) -> tuple[str, int | None]:  # noqa: ANN001
    with pytest.raises(Invalid) as caught:
        fn(chunked(data, 7), RULES)
    return caught.value.reason, caught.value.line


def test_jsonl_counts_rows_labels_and_columns() -> None:
    data = b'{"text": "a", "label": "x", "lang": "en"}\n{"text": "b", "label": "y"}\n\n{"text": "c", "label": "x"}'
    stats = validate_jsonl(chunked(data, 5), RULES)
    assert (stats.rows, dict(stats.labels), stats.columns) == (3, {"x": 2, "y": 1}, {"text", "label", "lang"})


def test_bom_and_crlf_are_handled() -> None:
    data = BOM + b'{"text": "a", "label": "x"}\r\n{"text": "b", "label": "y"}\r\n'
    assert validate_jsonl(chunked(data, 1), RULES).rows == 2
    csv_data = BOM + b'text,label\r\n"hello, world",x\r\n'
    stats = validate_csv(chunked(csv_data, 2), RULES)
    assert (stats.rows, stats.columns) == (1, {"text", "label"})


def test_a_bom_is_only_stripped_at_the_start() -> None:
    assert [raw for _, raw in lines([b"a\n", BOM + b"b\n"])] == [b"a", BOM + b"b"]


def test_csv_quoting_keeps_commas_quotes_and_line_ends_inside_a_field() -> None:
    data = b'text,label\n"line one\nline two, with ""quotes""",x\nplain,y\n'
    stats = validate_csv(chunked(data, 3), RULES)
    assert (stats.rows, dict(stats.labels)) == (2, {"x": 1, "y": 1})


@pytest.mark.parametrize(("data", "expected"), [
    (b'{"text": "a", "label": "x"}\n{"text": "b", "label": "\xff"}\n', ("ENCODING_ERROR", 2)),
    (b'{"text": "a", "label": "x"}\n{"text": "b"}\n', ("MISSING_COLUMNS", 2)),
    (b'{"text": "a", "label": "x"}\n{"text": "b", "label": \n', ("MALFORMED_ROW", 2)),
    (b'["a", "x"]\n', ("MALFORMED_ROW", 1)),
    (b'{"text": "a", "label": 3}\n', ("MALFORMED_ROW", 1)),
    (b'{"text": "", "label": "x"}\n', ("MALFORMED_ROW", 1)),
    (b"\n\n  \n", ("EMPTY_FILE", None)),
    (BOM, ("EMPTY_FILE", None)),
])
def test_jsonl_rejections_name_reason_and_line(data: bytes, expected: tuple[str, int | None]) -> None:
    assert reason_of(validate_jsonl, data) == expected


@pytest.mark.parametrize(("data", "expected"), [
    (b"text,label\nok,x\n\xc3\x28,y\n", ("ENCODING_ERROR", 3)),
    (b"text,category\na,x\n", ("MISSING_COLUMNS", 1)),
    (b"text,label\na,x\nb,y,z\n", ("MALFORMED_ROW", 3)),
    (b'text,label\n"unterminated,x\n', ("MALFORMED_ROW", 2)),
    (b'text,label\n"a"b,x\n', ("MALFORMED_ROW", 2)),
    (b"text,label\na,\n", ("MALFORMED_ROW", 2)),
    (b"text,label\n", ("EMPTY_FILE", None)),
    (b"", ("EMPTY_FILE", None)),
])
def test_csv_rejections_name_reason_and_line(data: bytes, expected: tuple[str, int | None]) -> None:
    assert reason_of(validate_csv, data) == expected


def test_an_endless_line_is_refused_without_buffering_it_all() -> None:
    with pytest.raises(Invalid) as caught:
        list(lines([b"x" * 1000] * 10, max_line_bytes=5000))
    assert caught.value.reason == "MALFORMED_ROW"


def test_too_many_distinct_labels_is_refused() -> None:
    data = "".join(f'{{"text": "t", "label": "l{i}"}}\n' for i in range(5)).encode()
    with pytest.raises(Invalid, match="distinct labels"):
        validate_jsonl([data], Rules(max_labels=4))


def test_required_columns_follow_the_rules() -> None:
    data = b'{"review": "good", "label": "pos"}\n'
    assert validate_jsonl([data], Rules(required=("review", "label"))).rows == 1
    with pytest.raises(Invalid, match="text"):
        validate_jsonl([data], RULES)


row_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(lambda s: s.strip())
rows = st.lists(st.tuples(row_text, row_text), min_size=1, max_size=20)


@settings(max_examples=150, deadline=None)
@given(rows, st.integers(1, 64), st.booleans(), st.booleans())
def test_any_chunking_bom_or_line_end_gives_the_same_stats(data: list[tuple[str, str]], size: int, bom: bool,
                                                           crlf: bool) -> None:
    import csv
    import io
    import json

    end = "\r\n" if crlf else "\n"
    as_jsonl = "".join(json.dumps({"text": t, "label": label}) + end for t, label in data).encode()
    buf = io.StringIO(newline="")
    # Python's writer leaves a lone CR unquoted (no reader can round-trip that): quote every field.
    csv.writer(buf, lineterminator=end, quoting=csv.QUOTE_ALL).writerows([("text", "label"), *data])
    as_csv = buf.getvalue().encode()
    prefix = BOM if bom else b""
    for fn, raw in ((validate_jsonl, as_jsonl), (validate_csv, as_csv)):
        stats = fn(chunked(prefix + raw, size), RULES)
        assert stats.rows == len(data)
        assert sum(stats.labels.values()) == len(data)


def write_parquet(path: Path, table: pa.Table, row_group_size: int = 2) -> Path:
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_is_read_batch_by_batch(tmp_path: Path) -> None:
    table = pa.table({"text": ["a", "b", "c", "d", "e"], "label": ["x", "y", "x", "x", "y"], "n": [1, 2, 3, 4, 5]})
    stats = validate_parquet(write_parquet(tmp_path / "ok.parquet", table), RULES, batch_rows=2)
    assert (stats.rows, dict(stats.labels), stats.columns) == (5, {"x": 3, "y": 2}, {"text", "label", "n"})


@pytest.mark.parametrize(("table", "expected"), [
    (pa.table({"text": ["a"], "category": ["x"]}), ("MISSING_COLUMNS", None)),
    (pa.table({"text": ["a"], "label": [1]}), ("MALFORMED_ROW", None)),
    (pa.table({"text": ["a", "b", "c"], "label": ["x", "y", None]}), ("MALFORMED_ROW", 3)),
    (pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), ("EMPTY_FILE", None)),
])
def test_parquet_rejections(tmp_path: Path, table: pa.Table, expected: tuple[str, int | None]) -> None:
    with pytest.raises(Invalid) as caught:
        validate_parquet(write_parquet(tmp_path / "bad.parquet", table), RULES, batch_rows=2)
    assert (caught.value.reason, caught.value.line) == expected


def test_a_file_that_is_not_parquet_is_an_encoding_error(tmp_path: Path) -> None:
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"text,label\na,b\n")
    with pytest.raises(Invalid) as caught:
        validate_parquet(path, RULES)
    assert caught.value.reason == "ENCODING_ERROR"


# Bounded fuzzing: arbitrary bytes, biased towards the tokens the parsers branch on.
TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\n", b"\r", b"\r\n", b"\\", b" ", BOM, b"\xff", b"\xc3",
          b"\x00", b"text", b"label", b'"text"', b'"label"', b'"x"', b"1e999", b"NaN", b"-", b"0", b"null"]
fuzz_bytes = st.one_of(
    st.binary(max_size=512),
    st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=6),
                       st.integers(1, 3000).map(lambda n: b"[" * n),
                       st.integers(1, 5000).map(lambda n: b"9" * n)), max_size=60).map(b"".join),
)


@settings(max_examples=400, deadline=None)
@given(fuzz_bytes, st.sampled_from([b"", b'{"text": "a", "label": "x"}\n', b"text,label\n"]), st.integers(1, 64))
def test_fuzzed_bytes_give_stats_or_invalid_and_nothing_else(data: bytes, head: bytes, size: int) -> None:
    """And the same as the exact per-line reading (the validators take a fast path over plain blocks)."""
    small = Rules(max_line_bytes=4096, max_columns=8, max_labels=8, max_name_chars=64)
    for fmt, fn in (("jsonl", validate_jsonl), ("csv", validate_csv)):
        for rules in (RULES, small):
            try:
                stats = fn(chunked(head + data, size), rules)
            except Invalid as exc:
                assert exc.reason in {"MALFORMED_ROW", "MISSING_COLUMNS", "ENCODING_ERROR", "EMPTY_FILE"}
                with pytest.raises(Invalid) as exact:
                    read_stats(fmt, [head + data], rules, accelerate=False)
                assert (exact.value.reason, exact.value.detail, exact.value.line) == (exc.reason, exc.detail, exc.line)
                continue
            assert stats.rows > 0 and sum(stats.labels.values()) == stats.rows
            assert len(stats.columns) <= rules.max_columns and len(stats.labels) <= rules.max_labels
            exact = read_stats(fmt, [head + data], rules, accelerate=False)
            assert (exact.rows, exact.columns, list(exact.labels.items())) == (
                stats.rows, stats.columns, list(stats.labels.items()))


def test_a_corrupt_parquet_page_is_an_encoding_error_not_a_crash(tmp_path: Path) -> None:
    """pyarrow reports a corrupt page header as OSError, which used to escape the validator."""
    path = write_parquet(tmp_path / "ok.parquet", pa.table({"text": ["0"], "label": ["0"]}))
    data = bytearray(path.read_bytes())
    data[4] = 0  # the first page header, just after the PAR1 magic
    path.write_bytes(bytes(data))
    with pytest.raises(Invalid) as caught:
        validate_parquet(path, RULES)
    assert caught.value.reason == "ENCODING_ERROR"


@pytest.mark.parametrize("column", ["text", "label"])
def test_parquet_strings_that_are_not_utf8_are_an_encoding_error(tmp_path: Path, column: str) -> None:
    """Parquet readers do not check string data: an encoded surrogate used to pass as text (the trainer was
    the first to fail on it) and, as a label, to crash the validator with UnicodeDecodeError."""
    columns = {"text": pa.array(["a", "b"]), "label": pa.array(["x", "y"])}
    columns[column] = pa.array([b"ok", b"\xed\xa0\x80"], pa.binary()).view(pa.string())
    path = write_parquet(tmp_path / "bad.parquet", pa.table(columns))
    with pytest.raises(Invalid) as caught:
        validate_parquet(path, RULES)
    assert caught.value.reason == "ENCODING_ERROR"


def test_a_parquet_column_name_that_is_not_utf8_is_an_encoding_error(tmp_path: Path) -> None:
    """Found by the ingest/trainer property test: pyarrow raised UnicodeDecodeError out of the validator."""
    path = write_parquet(tmp_path / "ok.parquet", pa.table({"text": ["a"], "label": ["x"], "zzzz": ["1"]}))
    path.write_bytes(path.read_bytes().replace(b"zzzz", b"\x80zzz"))
    with pytest.raises(Invalid) as caught:
        validate_parquet(path, RULES)
    assert caught.value.reason == "ENCODING_ERROR"
