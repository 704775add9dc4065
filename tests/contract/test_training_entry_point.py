"""The training entry point keeps SageMaker's contract: SM_* paths, hyperparameters, the failure file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TRAINING = Path(__file__).resolve().parents[2] / "services" / "training"
sys.path.insert(0, str(TRAINING))
import finetune  # noqa: E402  (services/training is a script folder, not a package)
import train  # noqa: E402


def test_hyperparameters_defaults_then_sm_hps_then_command_line(monkeypatch):
    monkeypatch.setenv("SM_HPS", json.dumps({"epochs": "5", "learning_rate": "0.001"}))
    hp = train.hyperparameters(["--epochs", "2", "--sagemaker_program", "train.py"])
    assert hp["epochs"] == 2 and hp["learning_rate"] == 0.001 and hp["batch_size"] == 16
    assert isinstance(hp["epochs"], int)


def test_reads_jsonl_csv_and_parquet_in_path_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.jsonl").write_text('{"text": "one", "label": "billing"}\n\n')
    with (tmp_path / "b.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["text", "label"], ["two", "shipping"]])
    pq.write_table(pa.table({"text": ["three"], "label": ["account"]}), tmp_path / "c.parquet")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [r["text"] for r in finetune.read_examples(tmp_path)] == ["one", "two", "three"]


def test_split_holds_out_by_text_whatever_the_seed_or_the_other_rows():
    rows = [{"text": str(i), "label": "a"} for i in range(200)]
    train_rows, test_rows = finetune.split(rows, 0.2, 13)
    assert 20 <= len(test_rows) <= 60 and {r["text"] for r in train_rows + test_rows} == {str(i) for i in range(200)}
    assert finetune.split(rows, 0.2, 99)[1] == test_rows  # the seed shuffles training rows only
    assert {r["text"] for r in finetune.split(rows, 0.2, 99)[0]} == {r["text"] for r in train_rows}
    more = rows + [{"text": f"new {i}", "label": "b"} for i in range(100)]
    held_out = {r["text"] for r in finetune.split(more, 0.2, 5)[1]}
    assert {r["text"] for r in test_rows} <= held_out  # a row held out once is held out in every version
    assert len(finetune.split(rows[:3], 0.2, 1)[1]) == 1


def test_macro_f1():
    assert finetune.macro_f1([0, 0, 1, 1], [0, 0, 1, 1], 2) == 1.0
    assert finetune.macro_f1([0, 0, 1, 1], [0, 0, 0, 0], 2) == pytest.approx((2 / 3) / 2)


def test_a_failing_training_writes_the_failure_file_and_exits_non_zero(tmp_path):
    channel, output = tmp_path / "train", tmp_path / "output"
    channel.mkdir()
    (channel / "data.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "billing"}) + "\n"
                                                for i in range(10)))
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(tmp_path / "model"),
           "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_OUTPUT_DIR": str(output), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(TRAINING / "train.py")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    reason = (output / "failure").read_text().split("\n\n")[0]
    assert reason == "ValueError: need at least 2 distinct labels to train a classifier, found ['billing']"


def test_reads_every_shape_ingest_accepts_with_the_models_columns(tmp_path):
    """.ndjson, upper-case extensions, a BOM, CRLF, quoting and per-model column names (the manifest's reader
    rules): the trainer used to read only exact lower-case .jsonl/.csv/.parquet with text/label, no BOM."""
    (tmp_path / "a.NDJSON").write_bytes(b'\xef\xbb\xbf{"review": "one", "label": "billing"}\r\n')
    (tmp_path / "b.CSV").write_bytes(b'\xef\xbb\xbfreview,label\r\n"two, with ""quotes""",shipping\r\n')
    (tmp_path / "_SUCCESS").write_bytes(b"")
    rules = train.reader_rules(json.dumps({"required": ["review", "label"], "label_column": "label"}))
    assert finetune.read_examples(tmp_path, rules, expected_rows=2) == [
        {"text": "one", "label": "billing"}, {"text": 'two, with "quotes"', "label": "shipping"}]


def test_a_channel_that_does_not_hold_the_manifests_rows_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one", "label": "a"}\n{"text": "two", "label": "b"}\n')
    with pytest.raises(ValueError, match="read 2 rows from 1 file.* but the dataset version's manifest lists 3"):
        finetune.read_examples(tmp_path, expected_rows=3)
    (tmp_path / "b.jsonl").write_text('{"text": "three"}\n')
    with pytest.raises(ValueError, match="b.jsonl line 1: MISSING_COLUMNS: row lacks required column"):
        finetune.read_examples(tmp_path)


def test_a_row_count_mismatch_ends_in_the_failure_file(tmp_path):
    channel, output = tmp_path / "train", tmp_path / "output"
    channel.mkdir()
    (channel / "data.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": f"l{i % 2}"}) + "\n"
                                                for i in range(10)))
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(tmp_path / "model"), "PATH": "/usr/bin:/bin",
           "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_OUTPUT_DIR": str(output),
           "SM_HPS": json.dumps({"expected_rows": "11"})}
    done = subprocess.run([sys.executable, str(TRAINING / "train.py")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    reason = (output / "failure").read_text().split("\n\n")[0]
    assert reason.startswith("ValueError: read 10 rows from 1 file(s) but the dataset version's manifest lists 11")


# --- the data contract: what ingest accepts, the trainer reads with the same rows, and vice versa -----------

cell = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12).filter(lambda s: s.strip())
shapes = st.fixed_dictionaries({
    "rows": st.lists(st.tuples(cell, cell), min_size=1, max_size=8),
    "ext": st.sampled_from([".jsonl", ".ndjson", ".csv", ".parquet"]),
    "upper": st.booleans(), "bom": st.booleans(), "crlf": st.booleans(), "blank_lines": st.booleans(),
    "text_column": st.sampled_from(["text", "review", "Body text"]),
    "label_column": st.sampled_from(["label", "intent"]),
    "extra": st.booleans(),
})


def write_shape(directory, shape) -> tuple:
    """A file of the shape; returns (path, rules, the rows it holds as (text, label))."""
    import csv as csv_module
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    text, label = shape["text_column"], shape["label_column"]
    rules = finetune.Rules(required=(text,), label_column=label)
    rows = shape["rows"]
    records = [{text: t, label: lab, **({"n": "1"} if shape["extra"] else {})} for t, lab in rows]
    ext = shape["ext"].upper() if shape["upper"] else shape["ext"]
    path = directory / f"part{ext}"
    end = "\r\n" if shape["crlf"] else "\n"
    if shape["ext"] == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path)
        return path, rules, rows
    if shape["ext"] == ".csv":
        buf = io.StringIO(newline="")
        writer = csv_module.DictWriter(buf, fieldnames=list(records[0]), lineterminator=end,
                                       quoting=csv_module.QUOTE_ALL)
        writer.writeheader()
        writer.writerows(records)
        body = buf.getvalue()
    else:
        body = "".join(json.dumps(r) + end + (end if shape["blank_lines"] else "") for r in records)
    path.write_bytes((b"\xef\xbb\xbf" if shape["bom"] else b"") + body.encode())
    return path, rules, rows


def ingest_verdict(path, rules):
    """What ingest decides for the object: its format from the key, then its validator (the service's code)."""
    from flywheel_ingest.layout import data_format
    from flywheel_ingest.parquet_check import validate_parquet
    from flywheel_ingest.validation import Invalid, validate_csv, validate_jsonl

    fmt = data_format(path.name)
    chunks = [path.read_bytes()[i:i + 5] for i in range(0, path.stat().st_size, 5)]
    try:
        if fmt == "parquet":
            return validate_parquet(path, rules).rows
        return (validate_jsonl if fmt == "jsonl" else validate_csv)(chunks, rules).rows
    except Invalid as exc:
        return exc.reason


def trainer_rows(path, rules, expected_rows=-1):
    try:
        return [(r["text"], r["label"]) for r in finetune.read_examples(path.parent, rules, expected_rows)]
    except ValueError as exc:
        return str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes)
def test_every_shape_ingest_accepts_is_trained_with_the_same_rows(shape):
    with tempfile.TemporaryDirectory() as tmp:
        path, rules, rows = write_shape(Path(tmp), shape)
        rules = finetune.Rules.from_dict(json.loads(json.dumps(rules.to_dict())))  # as the manifest carries it
        assert ingest_verdict(path, rules) == len(rows)
        assert trainer_rows(path, rules, expected_rows=len(rows)) == rows


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shapes, st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=0, max_size=3)), max_size=3))
def test_the_trainer_reads_only_what_ingest_accepts_and_the_same_rows(shape, edits):
    """Mutated files: ingest accepts exactly the files the trainer reads, with the same row count."""
    with tempfile.TemporaryDirectory() as tmp:
        path, rules, _ = write_shape(Path(tmp), shape)
        data = bytearray(path.read_bytes())
        for at, replacement in edits:
            at %= len(data) + 1
            data[at:at + len(replacement)] = replacement
        path.write_bytes(bytes(data))
        verdict, read = ingest_verdict(path, rules), trainer_rows(path, rules)
        assert isinstance(verdict, int) == isinstance(read, list), (verdict, read)
        if isinstance(read, list):
            assert len(read) == verdict


# --- the promotion gate's evidence: the champion scored on the challenger's held-out rows ------------------

import compare  # noqa: E402


@pytest.mark.parametrize(("b", "c", "p"), [
    (0, 0, 1.0), (0, 5, 1 / 32), (1, 9, 11 / 1024), (5, 5, 638 / 1024), (9, 1, 1023 / 1024), (3, 0, 1.0),
    (10, 20, 0.04936857335269451),
])
def test_mcnemar_exact_one_sided_p_values(b, c, p):
    assert compare.mcnemar_exact_p(b, c) == pytest.approx(p, rel=1e-12)


def test_mcnemar_agrees_with_scipys_binomial_test():
    scipy_stats = pytest.importorskip("scipy.stats")
    for b, c in [(4, 11), (30, 45), (0, 1), (12, 3)]:
        want = scipy_stats.binomtest(c, b + c, 0.5, alternative="greater").pvalue
        assert compare.mcnemar_exact_p(b, c) == pytest.approx(want, rel=1e-9)


def test_compare_counts_discordant_pairs():
    got = compare.compare([True, True, False, True, False], [True, False, True, False, False])
    assert got == {"n": 5.0, "b": 1.0, "c": 2.0, "p_value": 0.5, "delta": pytest.approx(0.2)}
    with pytest.raises(ValueError, match="same rows"):
        compare.compare([True], [])


def run_training(tmp_path, name, rows, champion=None):
    channel, output, model = tmp_path / name / "train", tmp_path / name / "output", tmp_path / name / "model"
    channel.mkdir(parents=True)
    (channel / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(model), "PATH": "/usr/bin:/bin",
           "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_OUTPUT_DIR": str(output),
           "SM_HPS": json.dumps({"max_len": "16", "batch_size": "16", "holdout": "0.3", "seed": "7"})}
    if champion is not None:
        env["SM_CHANNEL_CHAMPION"] = str(champion)
    done = subprocess.run([sys.executable, str(TRAINING / "train.py")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return model, json.loads((output / "data" / "metrics.json").read_text())


def test_the_champion_is_scored_on_the_same_held_out_rows_and_labels_are_matched_by_name(tmp_path):
    words = {"billing": "refund charge invoice", "shipping": "parcel courier delivery", "account": "password login"}
    rows = [{"text": f"{words[label].split()[i % len(words[label].split())]} question {i}", "label": label}
            for i in range(30) for label in ("billing", "shipping")]
    champion_model, first = run_training(tmp_path, "v1", rows)
    assert "comparison" not in first and "champion_metrics" not in first
    archive = tmp_path / "champion" / "model.tar.gz"
    archive.parent.mkdir()
    import tarfile

    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(champion_model.iterdir()):
            tar.add(path, arcname=path.name)
    new_label = [{"text": f"password login issue {i}", "label": "account"} for i in range(30)]
    _, second = run_training(tmp_path, "v2", rows + new_label, champion=archive.parent)
    cmp, champ = second["comparison"], second["champion_metrics"]
    assert set(cmp) == {"n", "b", "c", "p_value", "delta"} and cmp["n"] == second["rows"]["heldout"]
    assert 0 <= cmp["b"] + cmp["c"] <= cmp["n"] and 0 <= cmp["p_value"] <= 1
    assert cmp["delta"] == pytest.approx(second["metrics"]["accuracy"] - champ["accuracy"])
    assert cmp["p_value"] == pytest.approx(compare.mcnemar_exact_p(int(cmp["b"]), int(cmp["c"])))
    # The champion never heard of "account": those held-out rows count against it.
    held_out_account = sum(1 for r in new_label if finetune.holdout_score(r["text"]) < 0.3)
    assert champ["accuracy"] <= 1 - held_out_account / cmp["n"] + 1e-9
    _, from_dir = run_training(tmp_path, "v3", rows, champion=champion_model)  # an extracted directory works too
    assert from_dir["comparison"]["n"] == from_dir["rows"]["heldout"]


def test_an_unreadable_champion_is_reported_not_fatal(tmp_path):
    rows = [{"text": f"text {i}", "label": f"l{i % 2}"} for i in range(20)]
    broken = tmp_path / "champion"
    broken.mkdir()
    (broken / "labels.json").write_text('["l0", "l1"]')
    _, metrics = run_training(tmp_path, "v1", rows, champion=broken)
    assert "comparison" not in metrics and metrics["champion_error"]
