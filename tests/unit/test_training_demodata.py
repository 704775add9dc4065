"""The demo task's generated data: deterministic, balanced, varied, with optional label noise."""

from __future__ import annotations

from collections import Counter

import pytest

from flywheel_dev.demodata import LABELS, make_examples


def test_deterministic_per_seed_and_different_across_seeds():
    assert make_examples(100, seed=1) == make_examples(100, seed=1)
    assert make_examples(100, seed=1) != make_examples(100, seed=2)


def test_balanced_labels_and_varied_texts():
    examples = make_examples(500, seed=7)
    assert Counter(e["label"] for e in examples) == {label: 125 for label in LABELS}
    assert len({e["text"] for e in examples}) > 400
    assert all(set(e) == {"text", "label"} and e["text"] for e in examples)


def billing_share(examples: list[dict]) -> float:
    """Of the messages that can only be billing (they mention a refund or a charge), the share labelled so."""
    billing = [e for e in examples if "refund" in e["text"] or "charged" in e["text"]]
    return sum(e["label"] == "billing" for e in billing) / len(billing)


def test_noise_replaces_about_that_fraction_of_labels():
    assert billing_share(make_examples(4000, seed=3)) == 1.0
    # 40% get a random label, a quarter of which is billing again: about 0.6 + 0.1 stay billing.
    assert 0.6 < billing_share(make_examples(4000, seed=3, noise=0.4)) < 0.8


@pytest.mark.parametrize(("n", "noise"), [(-1, 0.0), (10, 1.5)])
def test_bad_arguments(n, noise):
    with pytest.raises(ValueError):
        make_examples(n, seed=0, noise=noise)
