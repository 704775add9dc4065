"""Data loading, fine-tuning and evaluation for train.py; depends on torch, transformers, pyarrow (Parquet)
and the dataset reader of the Flywheel core (`flywheel.datareader`, standard library only)."""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from flywheel.datareader import Invalid, Rules, data_format
from flywheel.datareader import read_examples as read_file

CONFIDENCE_BUCKETS = 10


def read_examples(channel: Path, rules: Rules | None = None, expected_rows: int = -1) -> list[dict[str, str]]:
    """Every data file under the channel, sorted by path so the order is reproducible, read by the dataset
    reader ingest validated them with (`rules`: the manifest's reader rules), so the rows are exactly the
    validated rows. Refuses a file ingest would refuse, and a total that is not `expected_rows` (the
    manifest's row count; negative: not checked)."""
    rules = rules or Rules()
    examples: list[dict[str, str]] = []
    files = sorted(p for p in channel.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
    for path in files:
        if data_format(path.name) is None:
            print(f"data skipped {path.name}: not a dataset file", flush=True)
            continue
        try:
            examples += [{"text": text, "label": label} for text, label in read_file(path, rules)]
        except Invalid as exc:
            where = f" line {exc.line}" if exc.line is not None else ""
            raise ValueError(f"{path.name}{where}: {exc.reason}: {exc.detail}") from None
    if expected_rows >= 0 and len(examples) != expected_rows:
        raise ValueError(f"read {len(examples)} rows from {len(files)} file(s) but the dataset version's manifest "
                         f"lists {expected_rows}: the channel is not the validated data")
    if not examples:
        raise ValueError(f"no rows in the train channel ({len(files)} files)")
    return examples


def holdout_score(text: str) -> float:
    """A row's fixed place in [0, 1): held out iff below the holdout fraction, in every dataset version."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split(examples: list[dict[str, str]], holdout: float, seed: int) -> tuple[list, list]:
    """Held-out rows chosen by a hash of their text, not by the seed: a row held out here was held out in
    every run that saw it, so the champion never trained on the rows the challenger is judged on. The
    training rows are then shuffled with the run's seed. At least one row is held out."""
    if len(examples) < 2:
        raise ValueError(f"{len(examples)} rows are too few to hold out {holdout:.0%} for evaluation")
    scores = [holdout_score(r["text"]) for r in examples]
    test_idx = {i for i, score in enumerate(scores) if score < holdout} or {min(range(len(scores)), key=scores.__getitem__)}
    if len(test_idx) >= len(examples):
        raise ValueError(f"{len(examples)} rows are too few to hold out {holdout:.0%} for evaluation")
    train_rows = [r for i, r in enumerate(examples) if i not in test_idx]
    random.Random(seed).shuffle(train_rows)
    return train_rows, [r for i, r in enumerate(examples) if i in test_idx]


def load_model(model_dir: str, labels: list[str], device: torch.device) -> tuple[Any, Any]:
    # eager attention: sdpa was 5-10x slower on a loaded 2-core CPU; local_files_only: never download.
    # Quiet loading: the expected "classifier weights newly initialised" report reads like an error in logs.
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)}, attn_implementation="eager",
        local_files_only=True, dtype=torch.float32)  # fp32 master weights, whatever the checkpoint stores
    return tokenizer, model.to(device)


def load_trained(model_dir: Path, device: torch.device) -> tuple[Any, Any, list[str]]:
    """A model saved by train.py (a champion's artifact): tokenizer, model and its label names."""
    hf_logging.set_verbosity_error()
    labels = json.loads((model_dir / "labels.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager",
                                                               local_files_only=True, dtype=torch.float32)
    return tokenizer, model.to(device), list(labels)


def batches(tokenizer: Any, rows: list[dict[str, str]], label_ids: dict[str, int], size: int,
            max_len: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    out = []
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        enc = tokenizer([r["text"] for r in chunk], padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt")
        enc["labels"] = torch.tensor([label_ids.get(r["label"], -100) for r in chunk])
        out.append({k: v.to(device) for k, v in enc.items()})
    return out


CHECKPOINT = "checkpoint.pt"


def train(model: Any, train_batches: list, epochs: int, lr: float, seed: int,
          checkpoint_dir: Path | None = None, fingerprint: dict[str, Any] | None = None) -> list[float]:
    """Plain AdamW with linear decay; prints one progress line per epoch quarter so logs show it moving.

    With a checkpoint directory (SageMaker's /opt/ml/checkpoints, synced with the run's S3 prefix) the model,
    optimizer and scheduler are saved after every epoch, and a checkpoint found there at the start (a spot
    interruption restarted the job) is resumed from the next epoch. A checkpoint of other training (its
    `fingerprint`: labels, batch count, epochs, seed differ) is ignored and overwritten."""
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    total = max(1, epochs * len(train_batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total)
    fingerprint = {**(fingerprint or {}), "batches": len(train_batches), "epochs": epochs, "seed": seed}
    first = 1 + resume(checkpoint_dir, fingerprint, model, optimizer, scheduler)
    every = max(1, len(train_batches) // 4)
    losses, started = [], time.monotonic()
    model.train()
    for epoch in range(first, epochs + 1):
        order = list(range(len(train_batches)))
        random.Random(seed + epoch).shuffle(order)
        for step, index in enumerate(order, 1):
            loss = model(**train_batches[index]).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
            if step % every == 0 or step == len(order):
                print(f"progress epoch={epoch}/{epochs} step={step}/{len(order)} loss={loss.item():.4f} "
                      f"elapsed_s={time.monotonic() - started:.1f}", flush=True)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, {"epoch": epoch, "fingerprint": fingerprint, "model": model.state_dict(),
                                             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
    return losses


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write then rename: an interruption mid-write leaves the previous epoch's checkpoint intact."""
    directory.mkdir(parents=True, exist_ok=True)
    partial = directory / (CHECKPOINT + ".partial")
    torch.save(state, partial)
    partial.replace(directory / CHECKPOINT)
    print(f"checkpoint epoch={state['epoch']} saved to {directory}", flush=True)


def resume(directory: Path | None, fingerprint: dict[str, Any], model: Any, optimizer: Any, scheduler: Any) -> int:
    """Load the checkpoint of this same training if there is one; the number of epochs it completed (0: none)."""
    path = directory / CHECKPOINT if directory is not None else None
    if path is None or not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        print(f"checkpoint in {directory} is from other training ({state.get('fingerprint')}): ignored", flush=True)
        return 0
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    print(f"resumed from checkpoint epoch={state['epoch']}", flush=True)
    return int(state["epoch"])


@torch.no_grad()
def evaluate(model: Any, eval_batches: list, labels: list[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 on held-out rows, plus the distributions the monitor keeps for drift checks."""
    model.eval()
    gold, pred, conf = [], [], []
    for batch in eval_batches:
        probs = torch.softmax(model(**{k: v for k, v in batch.items() if k != "labels"}).logits, dim=-1)
        top, idx = probs.max(dim=-1)
        gold += batch["labels"].tolist()
        pred += idx.tolist()
        conf += top.tolist()
    correct = [g == p for g, p in zip(gold, pred, strict=True)]  # an unknown gold label (-100) is never right
    accuracy = sum(correct) / len(gold)
    return {"accuracy": accuracy, "correct": correct, "macro_f1": macro_f1(gold, pred, len(labels)),
            "prediction_distribution": _fractions(Counter(pred), len(labels), len(pred)),
            "confidence_histogram": _histogram(conf)}


def macro_f1(gold: list[int], pred: list[int], n_labels: int) -> float:
    scores = []
    for label in range(n_labels):
        tp = sum(g == p == label for g, p in zip(gold, pred, strict=True))
        fp = sum(p == label != g for g, p in zip(gold, pred, strict=True))
        fn = sum(g == label != p for g, p in zip(gold, pred, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / n_labels


def _fractions(counts: Counter, n: int, total: int) -> list[float]:
    return [counts.get(i, 0) / total for i in range(n)]


def _histogram(values: list[float]) -> list[float]:
    buckets = [0] * CONFIDENCE_BUCKETS
    for v in values:
        buckets[min(CONFIDENCE_BUCKETS - 1, math.floor(v * CONFIDENCE_BUCKETS))] += 1
    return [b / len(values) for b in buckets]
