"""Dynamic batching on the event loop: requests queue up, a batch closes at `max_batch` texts or `max_wait_s`
after its first request (waiting only when the previous batch held several requests), and one forward
answers it. A request's texts never split across batches, so each
request is answered by exactly one model version. Pure asyncio: the forward itself is injected."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")
log = logging.getLogger(__name__)

# forward(texts) -> (tag, one result per text); the tag names what answered (the model version).
Forward = Callable[[list[str]], Awaitable[tuple[str, Sequence[R]]]]


@dataclass
class _Item(Generic[R]):
    texts: list[str]
    future: asyncio.Future[tuple[str, list[R]]]


class Batcher(Generic[R]):
    def __init__(self, forward: Forward[R], max_batch: int, max_wait_s: float,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.forward, self.max_batch, self.max_wait_s = forward, max_batch, max_wait_s
        self.on_batch = on_batch or (lambda size: None)
        self._queue: asyncio.Queue[_Item[R]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._carry: _Item[R] | None = None
        self._last_requests = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def submit(self, texts: list[str]) -> tuple[str, list[R]]:
        """The tag of what answered and one result per text; the forward's error, if it failed."""
        self.start()
        item: _Item[R] = _Item(texts, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(item)
        return await item.future

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            await self._answer(batch)

    async def _collect(self) -> list[_Item[R]]:
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.texts)
        # Wait for company only when the last batch had some: a lone client never pays max_wait.
        wait = self.max_wait_s if self._last_requests > 1 else 0.0
        deadline = asyncio.get_running_loop().time() + wait
        while size < self.max_batch:
            item = self._next_waiting() or await self._wait_until(deadline)
            if item is None:
                break
            if size + len(item.texts) > self.max_batch:
                self._carry = item  # it starts the next batch: a request is never split
                break
            batch.append(item)
            size += len(item.texts)
        self._last_requests = len(batch)
        return batch

    def _next_waiting(self) -> _Item[R] | None:
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    async def _wait_until(self, deadline: float) -> _Item[R] | None:
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), remaining)
        except TimeoutError:
            return None

    async def _answer(self, batch: list[_Item[R]]) -> None:
        live = [item for item in batch if not item.future.done()]  # a client that gave up is not computed
        if not live:
            return
        texts = [text for item in live for text in item.texts]
        self.on_batch(len(texts))
        try:
            tag, results = await self.forward(texts)
        except Exception as exc:  # the forward's failure is each request's failure, never the batcher's
            log.exception("forward failed", extra={"batch": len(texts)})
            for item in live:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        start = 0
        for item in live:
            if not item.future.done():
                item.future.set_result((tag, list(results[start:start + len(item.texts)])))
            start += len(item.texts)
