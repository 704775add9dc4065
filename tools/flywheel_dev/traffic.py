"""Live traffic for the demo and the e2e test: an application that asks serving for predictions and then
reports the true label of each answer, as a support desk would once a ticket is resolved.

Every request is an Open Inference Protocol v2 call (`POST /v2/models/{model}/infer`) carrying a few texts
and a request id; its feedback (`POST /v2/models/{model}/feedback` with one label per text) follows at
once. The messages come from `demodata.traffic`: a mix of the shop line and, once `drift()` is called, the
new charger line. The generator keeps what it saw per model version (texts answered, right by its own
count, first and last answer) and which request ids carried which product line, so the demo can say what a
harvested feedback dataset holds. It runs its own asyncio loop in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from flywheel_dev.demodata import traffic


@dataclass
class VersionSeen:
    """What the application saw of one model version's answers."""

    version: str
    first_at: float  # time.monotonic() of its first answer
    last_at: float = 0.0
    texts: int = 0
    correct: int = 0  # answers equal to the true label, counted by the application itself

    @property
    def accuracy(self) -> float:
        return self.correct / self.texts if self.texts else 0.0


@dataclass
class TrafficStats:
    requests: int = 0
    texts: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # "<status>" or exception class -> count
    feedback_ok: int = 0
    feedback_refused: int = 0
    versions: dict[str, VersionSeen] = field(default_factory=dict)


class Traffic:
    """Sends `rate` texts per second in requests of `texts_per_request`, with feedback for each answer.

    `on_new_version(previous, version)` is called (from the traffic thread) at the first answer of a version
    other than the last one seen: the moment the application sees serving swap.
    """

    def __init__(self, base_url: str, model_id: str, *, seed: int = 11, rate: float = 40.0,
                 texts_per_request: int = 4, concurrency: int = 8,
                 on_new_version: Callable[[str | None, str], None] | None = None) -> None:
        self.base_url, self.model_id = base_url.rstrip("/"), model_id
        self.texts_per_request, self.concurrency = texts_per_request, concurrency
        self.on_new_version = on_new_version
        self.stats = TrafficStats()
        self.lines: dict[str, list[str]] = {}  # request id -> product line of each of its texts
        self._seed = seed
        self._rate = rate
        self._new_line_share = 0.0
        self._batch = 0
        self._current: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="traffic", daemon=True)

    # --- control, from the demo's thread ------------------------------------------------------------
    def start(self) -> Traffic:
        self._thread.start()
        return self

    def set_rate(self, rate: float) -> None:
        self._rate = rate

    def drift(self, new_line_share: float) -> None:
        """From now on this share of the messages comes from the new product line."""
        self._new_line_share = new_line_share

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def version(self, version: str) -> VersionSeen | None:
        with self._lock:
            return self.stats.versions.get(version)

    def lines_of(self, request_ids: list[str]) -> dict[str, int]:
        """How many texts of these requests came from each product line."""
        out: dict[str, int] = {}
        with self._lock:
            for rid in request_ids:
                for line in self.lines.get(rid, ()):
                    out[line] = out.get(line, 0) + 1
        return out

    # --- the loop -------------------------------------------------------------------------------------
    def _main(self) -> None:
        asyncio.run(self._run())

    def _messages(self) -> list[dict[str, Any]]:
        self._batch += 1
        return traffic(self.texts_per_request, seed=self._seed * 1_000_003 + self._batch,
                       new_line_share=self._new_line_share)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30.0, limits=limits) as client:
            gate = asyncio.Semaphore(self.concurrency)
            tasks: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not self._stop.is_set():
                rate = max(self._rate, 0.1)
                next_at = max(next_at + self.texts_per_request / rate, time.monotonic() - 1.0)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                await gate.acquire()
                task = asyncio.create_task(self._one(client, self._messages()))
                tasks.add(task)
                task.add_done_callback(lambda t: (tasks.discard(t), gate.release()))
            for task in list(tasks):
                with contextlib.suppress(Exception):
                    await task

    async def _one(self, client: httpx.AsyncClient, messages: list[dict[str, Any]]) -> None:
        with self._lock:
            self.stats.requests += 1
            rid = f"req-{self._seed}-{self.stats.requests}"
            self.lines[rid] = [m["line"] for m in messages]
        body = {"id": rid, "inputs": [{"name": "text", "shape": [len(messages)], "datatype": "BYTES",
                                       "data": [m["text"] for m in messages]}]}
        try:
            resp = await client.post(f"/v2/models/{self.model_id}/infer", json=body)
        except httpx.HTTPError as exc:
            self._error(type(exc).__name__)
            return
        if resp.status_code != 200:
            self._error(str(resp.status_code))
            return
        answer = resp.json()
        predicted = next(o["data"] for o in answer["outputs"] if o["name"] == "label")
        truth = [m["label"] for m in messages]
        self._answered(answer["model_version"], predicted, truth)
        try:
            fb = await client.post(f"/v2/models/{self.model_id}/feedback", json={"id": rid, "labels": truth})
        except httpx.HTTPError as exc:
            self._error(f"feedback {type(exc).__name__}")
            return
        with self._lock:
            if fb.status_code == 200:
                self.stats.feedback_ok += 1
            else:
                self.stats.feedback_refused += 1

    def _error(self, key: str) -> None:
        with self._lock:
            self.stats.errors[key] = self.stats.errors.get(key, 0) + 1

    def _answered(self, version: str, predicted: list[str], truth: list[str]) -> None:
        now = time.monotonic()
        swapped: tuple[str | None, str] | None = None
        with self._lock:
            seen = self.stats.versions.get(version)
            if seen is None:
                seen = self.stats.versions[version] = VersionSeen(version, now)
            seen.last_at = now
            seen.texts += len(truth)
            seen.correct += sum(p == t for p, t in zip(predicted, truth, strict=False))
            self.stats.texts += len(truth)
            if version != self._current and (self._current is None or seen.texts == len(truth)):
                swapped, self._current = (self._current, version), version
        if swapped and self.on_new_version is not None:
            self.on_new_version(*swapped)
