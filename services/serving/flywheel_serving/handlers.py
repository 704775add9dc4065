"""The HTTP side: Open Inference Protocol v2 REST, a plain JSON form (/v1/predict) and SageMaker's container
contract (/ping, /invocations), all on one port with /metrics. Parse (core) -> batch + forward (models) ->
answer; a request the core refuses gets its 4xx and an OIP error body {"error": reason}, and nothing a
client sends takes the server down."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter as Tally
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from flywheel.events import now_ms
from flywheel_serving.core import (
    OIP_PROTOCOL,
    Answer,
    BadRequest,
    InferRequest,
    Joined,
    Limits,
    RecentPredictions,
    Served,
    infer_response,
    model_metadata,
    parse_feedback,
    parse_infer,
    parse_simple,
)
from flywheel_serving.events import feedback_forwarded
from flywheel_serving.harvester import Harvester
from flywheel_serving.live import LiveWindows
from flywheel_serving.metrics import ServingMetrics
from flywheel_serving.models import ModelManager
from flywheel_serving.ports import Publisher
from flywheel_serving.shadow import ShadowWindows
from flywheel_serving.topics import FORWARDED_TOPIC, SERVICE

log = logging.getLogger(__name__)
SERVER = {"name": "flywheel-serving", "version": "0.1.0", "extensions": []}
REQUEST_ID = "x-request-id"


def reply(status: int, body: dict[str, Any], request_id: str | None = None) -> Response:
    headers = {"X-Request-Id": request_id} if request_id else None
    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


def request_id_of(request: Request) -> str:
    given = request.headers.get(REQUEST_ID, "")
    return given if 0 < len(given) <= 256 else uuid.uuid4().hex


@dataclass(frozen=True)
class Forwarding:
    """Feedback across replicas (docs/decisions/0007-serving.md): labels for an id this replica did not answer go
    to serving.feedback-forwarded; `origin` names this process, whose own forwarded labels it skips."""

    publisher: Publisher
    origin: str


class Handlers:
    loop: asyncio.AbstractEventLoop | None = None  # set at start-up: forwarded labels hop onto it
    forwarding: Forwarding | None = None  # None: an unknown id is counted and dropped (404)

    def __init__(self, manager: ModelManager, metrics: ServingMetrics, limits: Limits,
                 recent: RecentPredictions, live: LiveWindows | None = None,
                 harvester: Harvester | None = None, shadow: ShadowWindows | None = None) -> None:
        self.manager, self.metrics, self.limits, self.recent = manager, metrics, limits, recent
        self.live = live  # live metric windows (live.py): features of every answer, joined feedback
        self.harvester = harvester  # the data flywheel (harvester.py): joined feedback -> dataset versions
        self.shadow = shadow  # shadow evaluation (shadow.py): candidate vs production on the same labelled texts

    def _known(self, model: str) -> str:
        return model if model in self.manager.current else "_unknown"  # bounded label cardinality

    def _remember(self, request_id: str, model: str, answer: Answer, texts: list[str]) -> None:
        if not self.recent.capacity:
            return
        labels = tuple(p.label for p in answer.predictions)
        if self.harvester is None:  # texts are kept only when they may become data
            self.recent.remember(request_id, Served(model, answer.model_version, labels))
            return
        self.recent.remember(request_id, Served(model, answer.model_version, labels, tuple(texts),
                                                tuple(p.probability for p in answer.predictions), now_ms()))

    async def _answer(self, model: str, version: str | None, request: InferRequest) -> Answer:
        current = self.manager.current.get(model)
        if version is not None and current is not None and current.version != version:
            raise BadRequest(f"version {version!r} of {model!r} is not served (serving {current.version!r})", 404)
        answer = await self.manager.predict(model, request.texts)
        tally = Tally(p.label for p in answer.predictions)
        for label, count in tally.items():
            self.metrics.predictions.labels(model, answer.model_version, label).inc(count)
        if self.live is not None:
            self.live.served(model, answer.model_version, answer.predictions, now_ms())
        return answer

    def _done(self, model: str, protocol: str, status: int, started: float) -> None:
        self.metrics.requests.labels(self._known(model), protocol, str(status)).inc()
        if status == 200:
            self.metrics.latency.labels(model).observe(time.perf_counter() - started)

    async def infer(self, request: Request, model: str, version: str | None = None) -> Response:
        started, rid = time.perf_counter(), request_id_of(request)
        try:
            parsed = parse_infer(await request.body(), self.limits)
            answer = await self._answer(model, version, parsed)
        except BadRequest as exc:
            self._done(model, OIP_PROTOCOL, exc.status, started)
            return reply(exc.status, {"error": exc.reason}, rid)
        except Exception as exc:  # a failed forward: this request's 500, never the server's end
            return self._failed(model, OIP_PROTOCOL, exc, rid, started)
        self._done(model, OIP_PROTOCOL, 200, started)
        self._remember(parsed.request_id or rid, model, answer, parsed.texts)
        self.manager.shadow_score(model, parsed.request_id or rid, parsed.texts, answer)
        return reply(200, infer_response(model, parsed.request_id or rid, answer, parsed.outputs), rid)

    async def feedback(self, request: Request, model: str) -> Response:
        """The true label(s) of an answered request: joined to its prediction once. An id not answered here is
        forwarded to the other replicas (202) or, without forwarding (or for a model not served here, as replicas
        serve the same models), counted as unknown and dropped (404)."""
        rid, received_at = request_id_of(request), now_ms()
        try:
            request_id, labels = parse_feedback(await request.body(), self.limits)
            joined = self.recent.join(model, request_id, labels)
        except BadRequest as exc:
            return reply(exc.status, {"error": exc.reason}, rid)
        if joined is None and self.forwarding is not None and model in self.manager.current:
            return await self._forward(model, request_id, labels, received_at, rid)
        if joined is None:
            self.metrics.feedback_unknown.labels(self._known(model)).inc()
            return reply(404, {"error": f"no recent prediction {request_id!r} of {model!r} (unknown, already "
                                        "labelled or forgotten): dropped"}, rid)
        self._apply(model, request_id, joined, labels)
        return reply(200, {"id": request_id, "model_version": joined.version, "count": len(joined.pairs),
                           "correct": joined.correct}, rid)

    def _apply(self, model: str, request_id: str, joined: Joined, labels: list[str]) -> None:
        """One join, wherever its labels came in: live windows, harvest, shadow pairs, counters."""
        if self.live is not None:
            self.live.joined(joined, now_ms())
        if self.harvester is not None:
            self.harvester.add(joined, now_ms())
        self._pair_shadow(model, request_id, joined.version, labels)
        correct = joined.correct
        for outcome, count in (("correct", correct), ("incorrect", len(joined.pairs) - correct)):
            if count:
                self.metrics.feedback.labels(model, joined.version, outcome).inc(count)

    async def _forward(self, model: str, request_id: str, labels: list[str], received_at: int,
                       rid: str) -> Response:
        assert self.forwarding is not None
        record = feedback_forwarded(model, request_id, labels, self.forwarding.origin, received_at, SERVICE)
        try:  # acknowledged by the broker before the 202: a forwarded label is not lost silently
            await asyncio.to_thread(self.forwarding.publisher.publish, FORWARDED_TOPIC, record)
        except Exception as exc:
            log.warning("feedback could not be forwarded: %s: %s", type(exc).__name__, exc,
                        extra={"model_id": model, "request_id": request_id})
            return reply(503, {"error": f"prediction {request_id!r} was not answered here and its feedback could "
                                        f"not be forwarded ({type(exc).__name__}): retry"}, rid)
        self.metrics.feedback_forwarded.labels(self._known(model)).inc()
        log.debug("feedback forwarded", extra={"model_id": model, "request_id": request_id,
                                               "event_id": record["envelope"]["event_id"]})
        return reply(202, {"id": request_id, "forwarded": True}, rid)

    def forwarded(self, model: str, request_id: str, labels: list[str], origin: str) -> None:
        """Forwarded feedback (on the event loop): joined when this replica answered `request_id`, the same way
        as feedback posted here; ignored otherwise, and never forwarded again (no loops)."""
        if self.forwarding is not None and origin == self.forwarding.origin:
            return
        try:
            joined = self.recent.join(model, request_id, labels)
        except BadRequest as exc:
            self.metrics.feedback_forwarded_received.labels(model, "refused").inc()
            log.warning("forwarded feedback refused: %s", exc.reason, extra={"model_id": model,
                                                                              "request_id": request_id})
            return
        if joined is None:  # answered by another replica (or forgotten)
            return
        self.metrics.feedback_forwarded_received.labels(model, "joined").inc()
        self._apply(model, request_id, joined, labels)

    def forwarded_from_thread(self, model: str, request_id: str, labels: list[str], origin: str) -> None:
        """For the event follower's thread: hand a forwarded label to the event loop."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.forwarded, model, request_id, labels, origin)

    def _pair_shadow(self, model: str, request_id: str, version: str, labels: list[str]) -> None:
        scored = self.manager.shadow_book.take(model, request_id)
        paired = self.shadow.pair(scored, version, labels, now_ms()) if scored and self.shadow else None
        if paired is None:
            return
        for role, right in (("production", paired.production_correct), ("shadow", paired.candidate_correct)):
            for outcome, count in (("correct", right), ("incorrect", paired.n - right)):
                if count:
                    self.metrics.shadow_feedback.labels(model, role, outcome).inc(count)

    async def predict(self, request: Request, protocol: str = "v1") -> Response:
        started, rid, model = time.perf_counter(), request_id_of(request), "_unknown"
        try:
            named, parsed = parse_simple(await request.body(), self.limits)
            model = named or self._only_model()
            answer = await self._answer(model, None, parsed)
        except BadRequest as exc:
            self._done(model, protocol, exc.status, started)
            return reply(exc.status, {"error": exc.reason}, rid)
        except Exception as exc:
            return self._failed(model, protocol, exc, rid, started)
        self._done(model, protocol, 200, started)
        self._remember(parsed.request_id or rid, model, answer, parsed.texts)
        self.manager.shadow_score(model, parsed.request_id or rid, parsed.texts, answer)
        predictions = [{"label": p.label, "probability": round(p.probability, 6)} for p in answer.predictions]
        return reply(200, {"id": parsed.request_id or rid, "model": model, "model_version": answer.model_version,
                           "predictions": predictions}, rid)

    def _failed(self, model: str, protocol: str, exc: Exception, rid: str, started: float) -> Response:
        log.error("prediction failed: %s: %s", type(exc).__name__, exc, exc_info=exc,
                  extra={"model_id": model, "request_id": rid})
        self._done(model, protocol, 500, started)
        return reply(500, {"error": f"prediction failed: {type(exc).__name__}"}, rid)

    def _only_model(self) -> str:
        served = sorted(self.manager.current)
        if len(served) != 1:
            raise BadRequest(f"name the `model`: this server serves {served}")
        return served[0]

    def metadata(self, model: str) -> Response:
        current = self.manager.current.get(model)
        if current is None:
            return reply(404, {"error": f"model {model!r} is not served here"})
        return reply(200, model_metadata(model, [current.version]))

    def model_ready(self, model: str) -> Response:
        if not self.manager.model_ready(model):
            return reply(404, {"name": model, "ready": False, "error": f"model {model!r} is not loaded"})
        return reply(200, {"name": model, "ready": True})

    def ready(self) -> Response:
        ok = self.manager.ready()
        return reply(200 if ok else 503, {"ready": ok, "models": {m: p.version for m, p in
                                                                    self.manager.current.items()}})


def register(api: FastAPI, handlers: Handlers, metrics: ServingMetrics) -> None:
    """Every route; all async, so nothing runs on Starlette's thread pool."""
    h = handlers

    async def live() -> Response:
        return reply(200, {"live": True})

    async def ready() -> Response:
        return h.ready()

    async def server() -> Response:
        return reply(200, SERVER)

    async def metadata(model: str) -> Response:
        return h.metadata(model)

    async def version_metadata(model: str, version: str) -> Response:
        return h.metadata(model)

    async def model_ready(model: str) -> Response:
        return h.model_ready(model)

    async def infer(request: Request, model: str) -> Response:
        return await h.infer(request, model)

    async def version_infer(request: Request, model: str, version: str) -> Response:
        return await h.infer(request, model, version)

    async def predict(request: Request) -> Response:
        return await h.predict(request)

    async def feedback(request: Request, model: str) -> Response:
        return await h.feedback(request, model)

    async def ping() -> Response:
        return Response(status_code=200 if h.manager.ready() else 503)

    async def invocations(request: Request) -> Response:
        return await h.predict(request, "sagemaker")

    async def exposition() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    for path, endpoint, method in (
            ("/v2/health/live", live, "GET"), ("/healthz", live, "GET"), ("/v2/health/ready", ready, "GET"), ("/v2", server, "GET"),
            ("/v2/models/{model}", metadata, "GET"), ("/v2/models/{model}/versions/{version}", version_metadata, "GET"),
            ("/v2/models/{model}/ready", model_ready, "GET"), ("/v2/models/{model}/infer", infer, "POST"),
            ("/v2/models/{model}/versions/{version}/infer", version_infer, "POST"), ("/v1/predict", predict, "POST"),
            ("/v2/models/{model}/feedback", feedback, "POST"),
            ("/ping", ping, "GET"), ("/invocations", invocations, "POST"), ("/metrics", exposition, "GET")):
        api.add_api_route(path, endpoint, methods=[method])
    api.add_exception_handler(HTTPException, _http_error)
    api.add_exception_handler(Exception, _server_error)


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    return reply(status, {"error": str(getattr(exc, "detail", exc))}, request_id_of(request))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return reply(500, {"error": f"internal error: {type(exc).__name__}"}, request_id_of(request))
