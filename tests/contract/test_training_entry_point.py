"""The training entry point keeps SageMaker's contract: SM_* paths, hyperparameters, the failure file."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_split_is_seeded_and_keeps_a_held_out_set():
    rows = [{"text": str(i), "label": "a"} for i in range(10)]
    assert finetune.split(rows, 0.2, 13) == finetune.split(rows, 0.2, 13)
    train_rows, test_rows = finetune.split(rows, 0.2, 13)
    assert len(test_rows) == 2 and {r["text"] for r in train_rows + test_rows} == {str(i) for i in range(10)}


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
