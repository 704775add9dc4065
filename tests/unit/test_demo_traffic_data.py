"""The demo's harder data and its drifting traffic (tools/flywheel_dev/demodata.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from flywheel_dev.demodata import CHARGER_MIX, LABELS, demo_examples, make_examples, traffic


def test_demo_examples_are_deterministic_balanced_and_noisy():
    examples = demo_examples(800, seed=1)
    assert examples == demo_examples(800, seed=1) != demo_examples(800, seed=2)
    assert all(set(e) == {"text", "label"} and e["text"] for e in examples)
    counts = Counter(e["label"] for e in examples)
    assert set(counts) == set(LABELS) and min(counts.values()) > 150  # balanced before the label noise
    # Some messages say nothing about their intent: the same text under several labels.
    labels_of: dict[str, set[str]] = {}
    for e in examples:
        labels_of.setdefault(e["text"], set()).add(e["label"])
    assert any(len(labels) > 1 for labels in labels_of.values())


def test_make_examples_is_unchanged_by_the_demo_data():
    # Other tests use make_examples as a small clean fixture: no ambiguity, no charger line.
    assert not any("wallbox" in e["text"] for e in make_examples(400, seed=3))


def test_traffic_mixes_product_lines_with_the_new_line_label_mix():
    shop = traffic(400, seed=5)
    assert {m["line"] for m in shop} == {"shop"}
    drifted = traffic(4000, seed=5, new_line_share=0.75)
    lines = Counter(m["line"] for m in drifted)
    assert 0.70 < lines["charger"] / len(drifted) < 0.80
    charger = Counter(m["label"] for m in drifted if m["line"] == "charger")
    total = sum(charger.values())
    for label, share in CHARGER_MIX.items():
        assert abs(charger[label] / total - share) < 0.04, label
    words = " ".join(m["text"] for m in drifted if m["line"] == "charger")
    assert "wallbox" in words and "kWh" in words
    assert traffic(50, seed=9, new_line_share=0.5) == traffic(50, seed=9, new_line_share=0.5)


@pytest.mark.parametrize(("n", "share"), [(-1, 0.0), (10, 1.5)])
def test_traffic_bad_arguments(n, share):
    with pytest.raises(ValueError):
        traffic(n, seed=0, new_line_share=share)
