"""The live-metric reference of a trained model: reference.json in the model directory (so it ships in
model.tar.gz and serving reads it when it loads the version), and its histograms as counts for the
registration's `reference_distribution` (the monitor's drift baseline, with true sample sizes).

Vocabulary and centroid come from the training rows (the centroid from at most CENTROID_ROWS of them); the
histograms from the held-out rows, which the model never trained on, so they show what in-distribution
traffic looks like: text length, out-of-vocabulary rate, cosine distance of the mean-pooled last hidden
state to the centroid, predicted label and confidence. Bounds and text features come from
`flywheel.features`, which serving uses too. Serving computes the embedding the same way (`mean_pool` in
flywheel_serving/inputs.py; a unit test holds the two together).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from flywheel import features as fx

CENTROID_ROWS = 2_000
OPT_MODEL = Path("/opt/ml/model")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the last hidden state over real tokens (padding masked out)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


@torch.no_grad()
def forward(model: Any, tokenizer: Any, texts: list[str], batch_size: int, max_len: int,
            device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, L2-normalised mean-pooled embeddings) of `texts`, in one forward per batch."""
    model.eval()
    probs, pooled = [], []
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=max_len,
                        return_tensors="pt").to(device)
        out = model(**enc, output_hidden_states=True)
        probs.append(torch.softmax(out.logits, dim=-1).cpu())
        pooled.append(torch.nn.functional.normalize(mean_pool(out.hidden_states[-1], enc["attention_mask"]),
                                                    dim=-1).cpu())
    return torch.cat(probs), torch.cat(pooled)


def build(model: Any, tokenizer: Any, train_texts: list[str], reference_texts: list[str], labels: list[str],
          batch_size: int = 16, max_len: int = 64, device: Any = "cpu") -> fx.Reference:
    vocabulary = frozenset(fx.vocabulary(train_texts))
    _, train_embeddings = forward(model, tokenizer, train_texts[:CENTROID_ROWS], batch_size, max_len, device)
    centroid = torch.nn.functional.normalize(train_embeddings.mean(dim=0), dim=0)
    probs, embeddings = forward(model, tokenizer, reference_texts, batch_size, max_len, device)
    confidence, predicted = probs.max(dim=-1)
    distances = (1.0 - embeddings @ centroid).tolist()
    text = [fx.text_features(t, vocabulary) for t in reference_texts]
    values = {fx.TEXT_LENGTH: [n for n, _ in text], fx.OOV_RATE: [r for _, r in text],
              fx.CENTROID_DISTANCE: distances, fx.PREDICTION: [float(i) for i in predicted.tolist()],
              fx.CONFIDENCE: confidence.tolist()}
    histograms = {name: fx.histogram_entry(fx.Histogram(fx.bounds_for(name, len(labels))).extend(vals))
                  for name, vals in values.items()}
    rows = {"reference": len(reference_texts), "vocabulary": len(train_texts),
            "centroid": min(len(train_texts), CENTROID_ROWS)}
    return fx.Reference(tuple(labels), vocabulary, tuple(centroid.tolist()), histograms, rows)


def labels_of(model: Any) -> list[str]:
    id2label = model.config.id2label
    return [id2label[i] for i in range(len(id2label))]


def save_reference(model: Any, tokenizer: Any, train_rows: list[dict[str, str]], test_rows: list[dict[str, str]],
                   hp: dict[str, Any], device: Any) -> dict[str, list[float]]:
    """Write reference.json into SM_MODEL_DIR; return its histograms (counts) for `reference_distribution`."""
    reference = build(model, tokenizer, [r["text"] for r in train_rows], [r["text"] for r in test_rows],
                      labels_of(model), hp["batch_size"], hp["max_len"], device)
    model_dir = Path(os.environ.get("SM_MODEL_DIR", str(OPT_MODEL)))
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / fx.REFERENCE_FILE).write_text(json.dumps(reference.to_dict()))
    print(f"reference rows={reference.rows} vocabulary={len(reference.vocabulary)} "
          f"features={sorted(reference.histograms)}", flush=True)
    return reference.distribution()
