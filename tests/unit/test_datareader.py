"""The shared dataset reader (flywheel.datareader): formats, column mapping, bounds, and what the training
image can import."""

from __future__ import annotations

import ast
import csv
import io
import json
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel import datareader
from flywheel.datareader import Invalid, Rules, Stats, data_format, lines, read_examples, read_stats
from flywheel_ingest import layout

REPO = Path(__file__).resolve().parents[2]


DEFAULT = Rules()


def refusal(fmt: str, data: bytes, rules: Rules = DEFAULT) -> tuple[str, int | None, str]:
    with pytest.raises(Invalid) as caught:
        read_stats(fmt, [data], rules)
    return caught.value.reason, caught.value.line, caught.value.detail


def test_formats_go_by_extension_in_any_case_and_match_ingests_layout():
    assert datareader.FORMATS == layout.FORMATS
    for name, fmt in {"a.JSONL": "jsonl", "b.NdJson": "jsonl", "c.Csv": "csv", "d.PARQUET": "parquet",
                      "e.json": None, "f.jsonl.gz": None}.items():
        assert data_format(name) == layout.data_format(name) == fmt


def test_the_label_column_is_always_required_and_the_text_column_is_the_first_other_one():
    rules = Rules(required=("review", "source"), label_column="sentiment")
    assert rules.required == ("review", "source", "sentiment") and rules.text_column == "review"
    assert Rules(required=("label",)).text_column is None
    assert Rules.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules
    assert Rules.from_dict({**rules.to_dict(), "added_by_a_newer_writer": 1}) == rules


def test_a_line_over_the_bound_is_refused_before_it_is_parsed():
    """A 16 MiB line of `[{},{},...]` cost ~25x its size in json.loads; the default bound is 1 MiB."""
    poison = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y", "pad": [' + b"{}," * (600 * 1024) + b"{}]}\n"
    assert refusal("jsonl", poison) == ("MALFORMED_ROW", 2, "a line longer than 1048576 bytes")
    # a whole line inside one chunk is bounded too, not only a line still waiting for its end
    with pytest.raises(Invalid, match="longer than 10 bytes"):
        list(lines([b"short\n" + b"x" * 11 + b"\nshort\n"], max_line_bytes=10))
    assert [n for n, _ in lines([b"0123456789\r\n", b"0123456789"], max_line_bytes=10)] == [1, 2]


def test_deep_nesting_and_huge_integers_are_malformed_rows_not_crashes():
    for poison in (b"[" * 100_000 + b"\n", b'{"text": "a", "label": ' + b"7" * 5000 + b"}\n"):
        reason, line, _ = refusal("jsonl", poison)
        assert (reason, line) == ("MALFORMED_ROW", 1)


def test_distinct_column_names_and_label_strings_are_bounded():
    rows = "".join(json.dumps({"text": "t", "label": "x", f"c{i}": 1}) + "\n" for i in range(5)).encode()
    assert refusal("jsonl", rows, Rules(max_columns=5))[::2] == ("MALFORMED_ROW", "more than 5 distinct column names")
    wide_header = (",".join(["text", "label", *(f"c{i}" for i in range(10))]) + "\n").encode()
    assert refusal("csv", wide_header, Rules(max_columns=5))[:2] == ("MALFORMED_ROW", 1)
    long_label = json.dumps({"text": "t", "label": "y" * 1001}).encode()
    assert refusal("jsonl", long_label)[::2] == ("MALFORMED_ROW", "a label longer than 1000 characters")
    long_name = json.dumps({"text": "t", "label": "x", "n" * 1001: 1}).encode()
    assert refusal("jsonl", long_name)[0] == "MALFORMED_ROW"


def test_a_csv_record_spanning_lines_is_bounded_like_a_line():
    data = b'text,label\n"' + b"ab\n" * 400 + b'",x\n'
    assert read_stats("csv", [data], Rules()).rows == 1
    reason, line, detail = refusal("csv", data, Rules(max_line_bytes=1024))
    assert (reason, detail) == ("MALFORMED_ROW", "a record longer than 1024 bytes") and line is not None


def test_read_examples_maps_the_models_columns_to_text_and_label(tmp_path: Path):
    path = tmp_path / "part.NDJSON"
    path.write_bytes(datareader.BOM + b'{"review": "great", "stars": "5", "extra": 1}\r\n\r\n'
                     b'{"review": "poor", "stars": "1"}\r\n')
    rules = Rules(required=("review",), label_column="stars")
    assert list(read_examples(path, rules)) == [("great", "5"), ("poor", "1")]
    with pytest.raises(Invalid) as caught:
        list(read_examples(path, Rules()))
    assert (caught.value.reason, caught.value.line) == ("MISSING_COLUMNS", 1)


def test_the_reader_imports_only_the_standard_library_and_the_core_package_nothing_heavy():
    """The training image installs the core without its dependencies: this module must stand alone."""
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    lazy = {"pyarrow", "orjson"}  # only inside the Parquet functions and the optional accelerators
    for path in (REPO / "flywheel" / "datareader.py", REPO / "flywheel" / "__init__.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or (top in lazy and node.col_offset > 0), (path.name, name)


# The accelerated reading (orjson for JSON Lines, pyarrow for CSV, whole blocks of lines at a time) must give
# exactly what the exact per-line reading gives: the same stats (label order included), or the same refusal.

def outcome(fmt: str, data: bytes, size: int, rules: Rules, accelerate: bool) -> tuple:
    try:
        stats = read_stats(fmt, [data[i:i + size] for i in range(0, len(data), size)] or [b""], rules,
                           accelerate=accelerate)
    except Invalid as exc:
        return ("invalid", exc.reason, exc.detail, exc.line)
    return ("ok", stats.rows, sorted(stats.columns), list(stats.labels.items()))


def same_either_way(fmt: str, data: bytes, rules: Rules = DEFAULT, sizes: tuple[int, ...] = (1 << 20,)) -> tuple:
    exact = outcome(fmt, data, 1 << 20, rules, accelerate=False)
    for size in sizes:
        assert outcome(fmt, data, size, rules, accelerate=True) == exact, size
    return exact


SMALL = Rules(max_line_bytes=120, max_columns=4, max_labels=3, max_name_chars=8)
plain = st.text("abxyz é,\"'", min_size=1, max_size=10).filter(str.strip)
odd = st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
                st.sampled_from(["", " ", "\t", "\u3000", "\x1c", "x\ny", "x\ry", "\ufeffx", "aaaaaaaaaaaaa"]))
value = st.one_of(plain, plain, plain, plain, odd)  # mostly plain, so that whole blocks take the fast path
json_value = st.one_of(value, value, value, value, st.integers(), st.none(), st.lists(st.integers(), max_size=2))
RAW_LINES = [b"", b"  ", b"\r", b"\x0c", b"[1]", b"{}", b'{"text": "a", "label": NaN}', b'{"text": "a", "label": "\\ud800"}',
             b'{"text": "a", "label": "x", "label": 1}', b'{"text": "a", "label": 1, "label": "x"}',
             b'{"text": "a", "label": "x", "n": ' + b"1" * 400 + b"}", b'{"text": "a", "label": "\xff"}',
             b'{"text": "a", "label": "x"} {}', b'{"text": "a", "label": "x"}\r', b'{"text": "a",', b'"label": "x"}',
             b"\xef\xbb\xbf{}", b'{"text": "a", "label": "x", "d": ' + b"[" * 300 + b"]" * 300 + b"}"]


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    """Mostly files of plain rows with at most one defect (so blocks are taken and declined), or a mess."""
    messy = draw(st.booleans())
    out = []
    for _ in range(draw(st.integers(0, 12))):
        if messy and draw(st.integers(0, 9)) == 0:
            out.append(draw(st.sampled_from(RAW_LINES)))
            continue
        keys = draw(st.one_of(st.just(["text", "label"]), st.just(["label", "extra", "text"]),
                              st.lists(st.sampled_from(["text", "label", "review", "extra", "more", "k" * 9]),
                                       max_size=5))) if messy else ["text", "label", "extra"][:draw(st.integers(2, 3))]
        row = {k: draw(json_value if messy else plain) for k in keys}
        out.append(json.dumps(row, ensure_ascii=draw(st.booleans())).encode())
    if not messy and draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(RAW_LINES)))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    return (datareader.BOM if draw(st.booleans()) else b"") + end.join(out) + (end if draw(st.booleans()) else b"")


RAW_RECORDS = [b"", b" ", b"\r", b'"a"b,x', b'a"b,x', b' "a",x', b'"a" ,x', b'"a,x', b'a,"x', b"a,x,y", b"a",
               b'"a\rb",x', b"a\rb,x", b"a,\xff", b'"a\nb",x', b'"a""b",x', b'"""",x', b"\xef\xbb\xbfx,y", b"a,x\x00"]


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from([["text", "label"], ["label", "text"], ["text", "label", "extra"], ["text"],
                                   ["text", "label", "text"], ["review", "label"]]))
    messy = draw(st.booleans())
    records = [header] + [[draw(value if messy else plain) for _ in header] for _ in range(draw(st.integers(0, 12)))]
    buf = io.StringIO(newline="")
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    csv.writer(buf, lineterminator="\n", quoting=quoting).writerows(records)
    out = buf.getvalue().encode().split(b"\n")
    for _ in range(draw(st.sampled_from([0, 1, 3] if messy else [0, 1]))):
        out.insert(draw(st.integers(1, len(out))), draw(st.sampled_from(RAW_RECORDS)))
    end = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = end.join(out)
    return (datareader.BOM if draw(st.booleans()) else b"") + (data if draw(st.booleans()) else data.rstrip(b"\n"))


@settings(max_examples=300, deadline=None)
@given(json_lines(), st.integers(1, 48), st.sampled_from([DEFAULT, SMALL]))
def test_accelerated_jsonl_reading_gives_the_exact_readings_result(data: bytes, size: int, rules: Rules):
    same_either_way("jsonl", data, rules, (size, 1 << 20))


@settings(max_examples=300, deadline=None)
@given(csv_files(), st.integers(1, 48), st.sampled_from([DEFAULT, SMALL]))
def test_accelerated_csv_reading_gives_the_exact_readings_result(data: bytes, size: int, rules: Rules):
    same_either_way("csv", data, rules, (size, 1 << 20))


def test_the_accelerators_take_plain_blocks_and_decline_what_they_cannot_prove():
    """Else the equivalence above would hold trivially, by always falling back. A fast path that takes a
    block says how many lines it holds (empty ones included)."""
    jsonl = b"".join(json.dumps({"text": f"t {i}", "label": "xy"[i % 2], "n": [i]}).encode() + b"\n"
                     for i in range(50))
    fast_json = datareader._json_accelerator(DEFAULT)
    stats = Stats(DEFAULT)
    assert fast_json(jsonl, stats) == 50 and (stats.rows, dict(stats.labels)) == (50, {"x": 25, "y": 25})
    for bad in (b'{"text": "a", "label": " "}\n', b'{"text": "a"}\n', b"\r\n", b'{"text": "a", "label": NaN}\n'):
        assert fast_json(jsonl + bad, stats) is None and stats.rows == 50  # declined, stats untouched
    plain = b'"a, ""quoted""",x\nb,y\n"c",""""\n'
    fast_csv = datareader._csv_accelerator(["text", "label"], DEFAULT)
    stats = Stats(DEFAULT)
    assert fast_csv(plain, stats) == 3 and (stats.rows, dict(stats.labels)) == (3, {"x": 1, "y": 1, '"': 1})
    for bad in (b'"a\nb",x\n', b'"a"b,x\n', b"a\rb,x\n", b"a,x,y\n", b"a, \n", b"\n"):
        assert fast_csv(plain + bad, stats) is None and stats.rows == 3
    assert fast_csv(b'"",x\n', stats) is None  # a blank text
    assert datareader._csv_accelerator(["text", "label", "text"], DEFAULT) is None


def test_json_nesting_the_exact_reader_refuses_is_not_accepted_by_the_fast_one():
    """orjson accepts nesting up to 1024; json.loads refuses near the interpreter's recursion limit."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # the default (other tests' tools may have raised it)
    try:
        for depth, verdict in ((1010, "invalid"), (300, "ok")):
            deep = b'{"text": "a", "label": "x", "d": ' + b"[" * depth + b"]" * depth + b"}\n"
            assert same_either_way("jsonl", b'{"text": "a", "label": "x"}\n' + deep)[0] == verdict
    finally:
        sys.setrecursionlimit(limit)


def test_a_csv_field_over_csvs_field_size_limit_is_refused_by_both():
    """pyarrow has no field size limit; csv.reader refuses a field over csv.field_size_limit()."""
    data = b"text,label\n" + b"a" * (csv.field_size_limit() + 1) + b",x\n"
    assert same_either_way("csv", data)[:2] == ("invalid", "MALFORMED_ROW")


def test_a_bom_at_the_start_of_a_later_csv_block_is_data():
    """pyarrow drops a BOM at the start of its input; inside a file it is part of a field."""
    data = b"label,text\nx,a\n" + datareader.BOM + b"x,b\n"
    assert same_either_way("csv", data, sizes=(1 << 20, 16, 14)) == ("ok", 2, ["label", "text"],
                                                                     [("x", 1), ("\ufeffx", 1)])


def test_a_quoted_record_spanning_blocks_and_the_header_block_are_read_exactly():
    data = b'\ntext,label\nplain,x\n"two\nlines",y\n' + b"more,z\n" * 20 + b'"a\n' + b"b\n" * 30 + b'",x\n'
    assert same_either_way("csv", data, sizes=(1 << 20, 1, 5, 17, 64))[:2] == ("ok", 23)
    assert same_either_way("csv", data, Rules(max_line_bytes=50), sizes=(1 << 20, 9)) == (
        "invalid", "MALFORMED_ROW", "a record longer than 50 bytes", 51)


def test_without_orjson_or_pyarrow_the_reader_reads_exactly(monkeypatch: pytest.MonkeyPatch):
    """The training image installs the core without them; an import that fails means the exact path."""
    monkeypatch.setitem(sys.modules, "orjson", None)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert datareader._json_accelerator(DEFAULT) is None
    assert datareader._csv_accelerator(["text", "label"], DEFAULT) is None
    assert read_stats("jsonl", [b'{"text": "a", "label": "x"}\n'], DEFAULT).rows == 1
    assert read_stats("csv", [b"text,label\na,x\n"], DEFAULT).rows == 1


def test_the_whitespace_the_csv_accelerator_trims_is_what_str_strip_removes():
    spaces = "".join(c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace())
    assert spaces == datareader.WHITESPACE, unicodedata.unidata_version


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_line_numbers_hold_across_many_blocks_taken_fast_and_read_exactly(fmt: str):
    """Files of several blocks (chunks larger than a block, too), with an exact block in the middle: the
    refusal at the end names its line as the exact reading does."""
    def row(i: int) -> bytes:
        return (json.dumps({"text": f"row {i}", "label": "ab"[i % 2]}) if fmt == "jsonl" else f'"row {i}",{"ab"[i % 2]}').encode()
    head = [] if fmt == "jsonl" else [b"text,label"]
    odd = b"  " if fmt == "jsonl" else b'"two\nlines",a'  # declined by the fast path, fine for the exact one
    rows = [*head, *map(row, range(30_000)), odd, *map(row, range(30_000)), b'{"text": 1}' if fmt == "jsonl" else b"a,"]
    data = b"\r\n".join(rows) + b"\r\n"
    expected = len(rows) + (fmt == "csv")  # the quoted line end makes one more physical line
    for size in (1 << 20, 3 << 20, 65_521):
        assert outcome(fmt, data, size, DEFAULT, accelerate=True)[::3] == ("invalid", expected)
    assert same_either_way(fmt, data)[3] == expected
