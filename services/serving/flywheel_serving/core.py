"""The pure core: request parsing and validation, response shapes, and which version each model should serve.

Open Inference Protocol v2 (KServe/Triton REST): a request carries `inputs`, each a named tensor with a
`shape`, a `datatype` and row-major `data`; serving takes one BYTES tensor of texts and answers two
outputs, `label` (BYTES) and `probability` (FP32), one element per text. No I/O here.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

OIP_PROTOCOL = "v2"


class BadRequest(Exception):
    """A request the server refuses, with the HTTP status and the reason the client reads."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Limits:
    max_texts: int = 64
    max_bytes: int = 1_000_000


@dataclass(frozen=True)
class InferRequest:
    texts: list[str]
    request_id: str | None = None  # the body's `id`, echoed in the response
    outputs: tuple[str, ...] = ("label", "probability")


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float


@dataclass(frozen=True)
class Answer:
    """What one request got back: its predictions and the version that computed them (one batch, one version)."""

    model_version: str
    predictions: list[Prediction]


def decode_json(body: bytes, limits: Limits) -> dict[str, Any]:
    if len(body) > limits.max_bytes:
        raise BadRequest(f"request body of {len(body)} bytes exceeds the limit of {limits.max_bytes}", 413)
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise BadRequest("request body must be a JSON object")
    return parsed


def parse_infer(body: bytes, limits: Limits) -> InferRequest:
    """An OIP v2 inference request: exactly one BYTES input holding the texts."""
    doc = decode_json(body, limits)
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest("`inputs` must be a list holding exactly one tensor (the texts, datatype BYTES)")
    tensor = inputs[0]
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f"input `{tensor.get('name')}` must have datatype BYTES, not {tensor.get('datatype')!r}")
    texts = _flatten(tensor.get("data"))
    _check_shape(tensor.get("shape"), len(texts))
    return InferRequest(_checked_texts(texts, limits), _request_id(doc.get("id")), _wanted_outputs(doc))


def parse_simple(body: bytes, limits: Limits) -> tuple[str | None, InferRequest]:
    """The plain JSON form: {"model": ..., "text": "..."} or {"texts": [...]}, optional "id"."""
    doc = decode_json(body, limits)
    model = doc.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("`model` must be a string")
    if "text" in doc:
        texts = [doc["text"]]
    elif isinstance(doc.get("texts"), list):
        texts = doc["texts"]
    else:
        raise BadRequest("give `text` (a string) or `texts` (a list of strings)")
    return model, InferRequest(_checked_texts(texts, limits), _request_id(doc.get("id")))


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise BadRequest("input `data` must be a list of strings")
    flat: list[Any] = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    return flat


def _check_shape(shape: Any, count: int) -> None:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise BadRequest("input `shape` must be a list of non-negative integers")
    if math.prod(shape) != count:
        raise BadRequest(f"input `shape` {shape} holds {math.prod(shape)} elements but `data` has {count}")


def _checked_texts(texts: list[Any], limits: Limits) -> list[str]:
    if not texts:
        raise BadRequest("no texts to classify")
    if len(texts) > limits.max_texts:
        raise BadRequest(f"{len(texts)} texts exceed the limit of {limits.max_texts} per request", 413)
    if not all(isinstance(t, str) for t in texts):
        raise BadRequest("every text must be a string")
    return list(texts)


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise BadRequest("`id` must be a string of at most 256 characters")
    return value


def _wanted_outputs(doc: dict[str, Any]) -> tuple[str, ...]:
    requested = doc.get("outputs")
    if requested is None:
        return ("label", "probability")
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise BadRequest("`outputs` must be a list of objects with a `name`")
    names = tuple(o.get("name") for o in requested)
    unknown = [n for n in names if n not in ("label", "probability")]
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}: this model has `label` and `probability`")
    return names


def infer_response(model: str, request_id: str, answer: Answer, outputs: tuple[str, ...]) -> dict[str, Any]:
    count = len(answer.predictions)
    tensors = {
        "label": {"name": "label", "datatype": "BYTES", "shape": [count],
                  "data": [p.label for p in answer.predictions]},
        "probability": {"name": "probability", "datatype": "FP32", "shape": [count],
                        "data": [round(p.probability, 6) for p in answer.predictions]},
    }
    return {"model_name": model, "model_version": answer.model_version, "id": request_id,
            "outputs": [tensors[name] for name in outputs]}


def model_metadata(model: str, versions: list[str]) -> dict[str, Any]:
    return {"name": model, "versions": versions, "platform": "pytorch_transformers",
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "label", "datatype": "BYTES", "shape": [-1]},
                        {"name": "probability", "datatype": "FP32", "shape": [-1]}]}


@dataclass(frozen=True)
class Target:
    """A version a model should serve, and the event (envelope) that asked for it, if any."""

    model_id: str
    version: str
    artifact_uri: str
    cause: dict[str, Any] | None = None


@dataclass
class Plan:
    """Per model: the version wanted last and the one serving. Loads run in order; a load whose target was
    superseded meanwhile is skipped, and an older event never replaces what a newer one asked for."""

    wanted: dict[str, Target] = field(default_factory=dict)
    serving: dict[str, str] = field(default_factory=dict)
    models: frozenset[str] = frozenset()  # empty: every model

    def want(self, target: Target) -> bool:
        """Record `target`; True when it needs a load (a model we serve, a version not already wanted)."""
        if self.models and target.model_id not in self.models:
            return False
        current = self.wanted.get(target.model_id)
        if current is not None and current.version == target.version:
            return False
        self.wanted[target.model_id] = target
        return self.serving.get(target.model_id) != target.version

    def still_wanted(self, target: Target) -> bool:
        return self.wanted.get(target.model_id) == target

    def served(self, target: Target) -> None:
        self.serving[target.model_id] = target.version


@dataclass(frozen=True)
class Served:
    """What one request was answered: the model, the version and one predicted label per text; with harvesting
    on (harvest.py) also the texts, each prediction's probability and when it was answered (ms)."""

    model: str
    version: str
    labels: tuple[str, ...]
    texts: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    answered_at: int = 0

    @property
    def text_chars(self) -> int:
        return sum(len(t) for t in self.texts)


@dataclass(frozen=True)
class Joined:
    """Feedback joined to its prediction: (predicted, true) per text, and what harvesting needs (the texts,
    probabilities and answer time kept in `Served`, the request id)."""

    model: str
    version: str
    pairs: tuple[tuple[str, str], ...]
    request_id: str = ""
    texts: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    answered_at: int = 0

    @property
    def correct(self) -> int:
        return sum(predicted == true for predicted, true in self.pairs)


def parse_feedback(body: bytes, limits: Limits) -> tuple[str, list[str]]:
    """{"id": ..., "label": "..."} (a one-text request) or {"id": ..., "labels": [...]} (one per text)."""
    doc = decode_json(body, limits)
    request_id = _request_id(doc.get("id"))
    if request_id is None:
        raise BadRequest("feedback needs the `id` of the prediction it labels")
    labels = [doc["label"]] if "label" in doc else doc.get("labels")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x for x in labels):
        raise BadRequest("give `label` (a string) or `labels` (one non-empty string per text)")
    return request_id, labels


class RecentPredictions:
    """The last `capacity` answers by request id (oldest forgotten first), and at most `max_text_chars` characters
    of kept texts (0: no bound); a label joins its prediction once."""

    def __init__(self, capacity: int, max_text_chars: int = 0) -> None:
        self.capacity = capacity
        self.max_text_chars = max_text_chars
        self.text_chars = 0
        self._items: OrderedDict[str, Served] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, request_id: str, served: Served) -> None:
        replaced = self._items.pop(request_id, None)
        if replaced is not None:
            self.text_chars -= replaced.text_chars
        self._items[request_id] = served
        self.text_chars += served.text_chars
        while self._items and (len(self._items) > self.capacity
                               or (self.max_text_chars and self.text_chars > self.max_text_chars)):
            _, oldest = self._items.popitem(last=False)
            self.text_chars -= oldest.text_chars

    def join(self, model: str, request_id: str, labels: list[str]) -> Joined | None:
        """None for an unknown (or forgotten) id; BadRequest when the labels do not fit the prediction."""
        served = self._items.get(request_id)
        if served is None or served.model != model:
            return None
        if len(labels) != len(served.labels):
            raise BadRequest(f"{len(labels)} labels for a prediction of {len(served.labels)} texts")
        del self._items[request_id]
        self.text_chars -= served.text_chars
        return Joined(served.model, served.version, tuple(zip(served.labels, labels, strict=True)), request_id,
                      served.texts, served.probabilities, served.answered_at)
