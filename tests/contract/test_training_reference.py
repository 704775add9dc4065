"""The training entry point saves the live-metric reference: reference.json in the model directory (it ships in
model.tar.gz) with histograms over the shared bounds and their true sample sizes, the vocabulary and the
centroid; metrics.json's reference_distribution carries the same histograms as counts. Serving, loading the
artifact, computes the same features of the same texts into the same buckets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel import features as fx

TRAINING = Path(__file__).resolve().parents[2] / "services" / "training"
WORDS = {"billing": ["refund", "charge", "invoice"], "shipping": ["parcel", "courier", "delivery"]}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list[dict]]:
    tmp = tmp_path_factory.mktemp("train")
    rows = [{"text": f"my {WORDS[label][i % 3]} question number {i}", "label": label}
            for i in range(40) for label in WORDS]
    channel, output, model = tmp / "train", tmp / "output", tmp / "model"
    channel.mkdir()
    (channel / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {"SM_CHANNEL_TRAIN": str(channel), "SM_MODEL_DIR": str(model), "PATH": "/usr/bin:/bin",
           "SM_OUTPUT_DATA_DIR": str(output / "data"), "SM_OUTPUT_DIR": str(output),
           "SM_HPS": json.dumps({"max_len": "32", "batch_size": "16", "holdout": "0.3", "seed": "7"})}
    done = subprocess.run([sys.executable, str(TRAINING / "train.py")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return model, json.loads((output / "data" / "metrics.json").read_text()), rows


def test_reference_json_holds_histograms_with_true_sizes_vocabulary_and_centroid(trained):
    model, metrics, rows = trained
    reference = fx.read_reference(model)
    held_out = metrics["rows"]["heldout"]
    assert reference is not None and reference.labels == ("billing", "shipping")
    assert reference.rows == {"reference": held_out, "vocabulary": metrics["rows"]["train"],
                              "centroid": metrics["rows"]["train"]}
    assert set(reference.histograms) == set(fx.INPUT_FEATURES) | set(fx.OUTPUT_FEATURES)
    for name, h in reference.histograms.items():
        assert h["count"] == sum(h["counts"]) == held_out
        assert tuple(h["bounds"]) == fx.bounds_for(name, 2)
    assert {"refund", "parcel", "question"} <= reference.vocabulary
    assert len(reference.centroid) == 384 and sum(x * x for x in reference.centroid) == pytest.approx(1.0)


def test_metrics_json_registers_the_histograms_as_counts(trained):
    model, metrics, _ = trained
    distribution = metrics["reference_distribution"]
    assert distribution == {**distribution, **fx.read_reference(model).distribution()}
    assert sum(distribution[fx.TEXT_LENGTH]) == metrics["rows"]["heldout"]
    assert sum(distribution[fx.PREDICTION]) == metrics["rows"]["heldout"]  # counts now, over the same buckets


def test_serving_computes_the_same_features_into_the_same_buckets(trained):
    model, metrics, rows = trained
    sys.path.insert(0, str(TRAINING))
    import finetune

    from flywheel_serving.adapters import TransformersLoader

    held_out = [r["text"] for r in finetune.split(rows, 0.3, 7)[1]]
    predictor = TransformersLoader(max_length=32).load(model, "v1")
    answers = predictor.predict(held_out)
    reference = predictor.profile.reference
    served = {fx.TEXT_LENGTH: [a.length for a in answers], fx.OOV_RATE: [a.oov for a in answers],
              fx.PREDICTION: [a.index for a in answers]}
    for name, values in served.items():
        assert fx.Histogram(predictor.profile.bounds[name]).extend(values).counts == \
            reference.histograms[name]["counts"], name
    distances = fx.Histogram(predictor.profile.bounds[fx.CENTROID_DISTANCE]).extend(a.distance for a in answers)
    moved = sum(abs(a - b) for a, b in zip(distances.counts, reference.histograms[fx.CENTROID_DISTANCE]["counts"],
                                           strict=True))
    assert moved <= 2  # float noise across batch shapes may move a value sitting on a bound
