"""Artifacts with a live-metric reference (reference.json, as training's reference.py writes it) and traffic
for serving's live-metric tests: in-distribution support texts and a drifted batch (a new product line's
vocabulary, longer texts)."""

from __future__ import annotations

import json
import random
import sys
import tarfile
from pathlib import Path

from flywheel import features as fx
from flywheel_dev.harness.serving import LABELS, build_artifact

TRAINING = Path(__file__).resolve().parents[3] / "services" / "training"
TOPICS = {"billing": ["invoice", "refund", "charge", "payment", "bill"],
          "shipping": ["parcel", "courier", "delivery", "package", "tracking"],
          "returns": ["return", "exchange", "label", "damaged", "replacement"]}
DRIFTED = ["quantum", "blender", "firmware", "turbo", "nozzle", "overheats", "warranty", "smart", "oven",
           "bluetooth", "pairing", "app", "sensor", "calibration"]


def support_texts(n: int, seed: int) -> list[tuple[str, str]]:
    """(text, label): short support questions built from each label's words."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        label = rng.choice(LABELS)
        out.append((f"my {rng.choice(TOPICS[label])} is {rng.choice(['late', 'wrong', 'missing'])} "
                    f"please help with the {rng.choice(TOPICS[label])}", label))
    return out


def drifted_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(DRIFTED) for _ in range(rng.randint(14, 24))) for _ in range(n)]


def build_artifact_with_reference(out_dir: Path, seed: int = 0) -> tuple[Path, fx.Reference]:
    """harness.serving's artifact plus reference.json from training's own reference code."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    archive = build_artifact(out_dir, seed=seed)
    model_dir = out_dir / "model"
    sys.path.insert(0, str(TRAINING))
    import reference  # services/training is a script folder, not a package

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True,
                                                               attn_implementation="eager")
    train = [t for t, _ in support_texts(200, seed + 1)]
    held_out = [t for t, _ in support_texts(120, seed + 2)]
    ref = reference.build(model, tokenizer, train, held_out, list(LABELS), max_len=64)
    (model_dir / fx.REFERENCE_FILE).write_text(json.dumps(ref.to_dict()))
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for path in sorted(model_dir.iterdir()):
            tar.add(path, arcname=path.name)
    return archive, ref
