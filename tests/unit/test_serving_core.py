"""Request parsing and validation (OIP v2 and the plain JSON form), response shapes, the swap plan."""

from __future__ import annotations

import json

import pytest

from flywheel_serving.core import (
    Answer,
    BadRequest,
    Limits,
    Plan,
    Prediction,
    Target,
    infer_response,
    parse_infer,
    parse_simple,
)

LIMITS = Limits(max_texts=4, max_bytes=2000)


def oip(data, shape=None, datatype="BYTES", **extra) -> bytes:
    shape = [len(data)] if shape is None else shape
    return json.dumps({"inputs": [{"name": "text", "shape": shape, "datatype": datatype, "data": data}],
                       **extra}).encode()


def test_an_oip_request_gives_its_texts_and_id() -> None:
    parsed = parse_infer(oip(["a", "b"], id="r-1"), LIMITS)
    assert parsed.texts == ["a", "b"] and parsed.request_id == "r-1"
    assert parsed.outputs == ("label", "probability")


def test_nested_data_is_flattened_row_major() -> None:
    assert parse_infer(oip([["a"], ["b"]], shape=[2, 1]), LIMITS).texts == ["a", "b"]


def test_requested_outputs_are_kept_in_order() -> None:
    parsed = parse_infer(oip(["a"], outputs=[{"name": "probability"}]), LIMITS)
    assert parsed.outputs == ("probability",)


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"inputs": []}).encode(), 400, "exactly one tensor"),
    (json.dumps({}).encode(), 400, "exactly one tensor"),
    (json.dumps({"inputs": ["x"]}).encode(), 400, "exactly one tensor"),
    (oip(["a"], datatype="FP32"), 400, "datatype BYTES"),
    (oip("a"), 400, "list of strings"),
    (oip(["a", "b"], shape=[3]), 400, "holds 3 elements"),
    (oip(["a"], shape=["1"]), 400, "non-negative integers"),
    (oip(["a"], shape=[True]), 400, "non-negative integers"),
    (oip([1]), 400, "every text must be a string"),
    (oip([]), 400, "no texts"),
    (oip(["a"] * 5), 413, "exceed the limit"),
    (oip(["a"], id=7), 400, "`id` must be a string"),
    (oip(["a"], outputs=[{"name": "logits"}]), 400, "unknown outputs"),
    (oip(["x" * 3000]), 413, "exceeds the limit"),
])
def test_malformed_requests_get_a_status_and_a_reason(body: bytes, status: int, reason: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_infer(body, LIMITS)
    assert caught.value.status == status and reason in caught.value.reason


def test_the_simple_form_takes_one_text_or_several() -> None:
    assert parse_simple(b'{"model": "m", "text": "hi"}', LIMITS)[1].texts == ["hi"]
    model, parsed = parse_simple(b'{"texts": ["a", "b"], "id": "x"}', LIMITS)
    assert model is None and parsed.texts == ["a", "b"] and parsed.request_id == "x"
    with pytest.raises(BadRequest, match="give `text`"):
        parse_simple(b'{"model": "m"}', LIMITS)
    with pytest.raises(BadRequest, match="`model` must be a string"):
        parse_simple(b'{"model": 3, "text": "a"}', LIMITS)


def test_the_response_carries_label_and_probability_tensors() -> None:
    answer = Answer("v2", [Prediction("spam", 0.9), Prediction("ham", 0.6)])
    body = infer_response("m", "r-1", answer, ("label", "probability"))
    assert body["model_name"] == "m" and body["model_version"] == "v2" and body["id"] == "r-1"
    assert body["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["spam", "ham"]},
        {"name": "probability", "datatype": "FP32", "shape": [2], "data": [0.9, 0.6]}]


def test_the_plan_loads_each_new_version_once_and_only_the_latest_wins() -> None:
    plan = Plan()
    v1, v2 = Target("m", "v1", "s3://b/1"), Target("m", "v2", "s3://b/2")
    assert plan.want(v1) and not plan.want(v1)  # a duplicate event is no news
    plan.served(v1)
    assert plan.want(v2) and plan.still_wanted(v2) and not plan.still_wanted(v1)
    assert not plan.want(v1) and plan.wanted["m"] == v1  # back to what serves: nothing to load


def test_the_plan_ignores_models_it_does_not_serve() -> None:
    plan = Plan(models=frozenset({"a"}))
    assert not plan.want(Target("b", "v1", "s3://x/y")) and "b" not in plan.wanted


def test_a_rollback_to_the_version_serving_needs_no_load() -> None:
    plan = Plan()
    v1, v2 = Target("m", "v1", "s3://b/1"), Target("m", "v2", "s3://b/2")
    plan.want(v1)
    plan.served(v1)
    plan.want(v2)  # its load failed: v1 still serves
    assert not plan.want(Target("m", "v1", "s3://b/1", {"event_id": "e"}))
    assert plan.wanted["m"].version == "v1"


def test_recent_predictions_join_a_label_once_and_forget_the_oldest() -> None:
    from flywheel_serving.core import RecentPredictions, Served

    recent = RecentPredictions(capacity=2)
    recent.remember("a", Served("m", "v1", ("spam",)))
    recent.remember("b", Served("m", "v1", ("ham", "spam")))
    recent.remember("c", Served("m", "v2", ("ham",)))
    assert len(recent) == 2 and recent.join("m", "a", ["spam"]) is None  # forgotten
    joined = recent.join("m", "b", ["ham", "ham"])
    assert joined.version == "v1" and joined.pairs == (("ham", "ham"), ("spam", "ham")) and joined.correct == 1
    assert recent.join("m", "b", ["ham", "ham"]) is None  # labelled once
    assert recent.join("other", "c", ["ham"]) is None  # another model's id
    with pytest.raises(BadRequest, match="1 texts"):
        recent.join("m", "c", ["ham", "spam"])


@pytest.mark.parametrize(("body", "reason"), [
    (b'{"label": "x"}', "needs the `id`"),
    (b'{"id": "r"}', "give `label`"),
    (b'{"id": "r", "labels": []}', "give `label`"),
    (b'{"id": "r", "label": 3}', "give `label`"),
    (b'{"id": 5, "label": "x"}', "`id` must be a string"),
])
def test_malformed_feedback_gets_a_reason(body: bytes, reason: str) -> None:
    from flywheel_serving.core import parse_feedback

    with pytest.raises(BadRequest, match=reason):
        parse_feedback(body, LIMITS)
