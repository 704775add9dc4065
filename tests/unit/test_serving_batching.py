"""The micro-batcher: batches close at max_batch or max_wait, requests never split, failures are per batch."""

from __future__ import annotations

import asyncio

import pytest

from flywheel_serving.batching import Batcher


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.delay_s, self.fail = delay_s, fail

    async def __call__(self, texts: list[str]) -> tuple[str, list[str]]:
        self.batches.append(list(texts))
        await asyncio.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("forward broke")
        return "v1", [t.upper() for t in texts]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_forward_and_each_gets_its_own_results() -> None:
    async def go():
        forward = Recorder()
        batcher = Batcher(forward, max_batch=16, max_wait_s=0.05)
        answers = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(5)))
        await batcher.stop()
        return forward, answers

    forward, answers = run(go())
    assert forward.batches == [["t0", "t1", "t2", "t3", "t4"]]
    assert answers == [("v1", [f"T{i}"]) for i in range(5)]


def test_a_batch_closes_at_max_batch_without_splitting_a_request() -> None:
    async def go():
        forward, sizes = Recorder(), []
        batcher = Batcher(forward, max_batch=4, max_wait_s=0.05, on_batch=sizes.append)
        answers = await asyncio.gather(batcher.submit(["a", "b", "c"]), batcher.submit(["d", "e"]),
                                       batcher.submit(["f"]))
        await batcher.stop()
        return forward, sizes, answers

    forward, sizes, answers = run(go())
    assert forward.batches == [["a", "b", "c"], ["d", "e", "f"]] and sizes == [3, 3]
    assert answers[1] == ("v1", ["D", "E"])


def test_a_request_larger_than_max_batch_runs_alone() -> None:
    async def go():
        forward = Recorder()
        batcher = Batcher(forward, max_batch=2, max_wait_s=0.0)
        answer = await batcher.submit(["a", "b", "c"])
        await batcher.stop()
        return forward, answer

    forward, answer = run(go())
    assert forward.batches == [["a", "b", "c"]] and answer == ("v1", ["A", "B", "C"])


def test_requests_arriving_during_a_forward_form_the_next_batch() -> None:
    async def go():
        forward = Recorder(delay_s=0.05)
        batcher = Batcher(forward, max_batch=16, max_wait_s=0.0)
        first = asyncio.create_task(batcher.submit(["a"]))
        await asyncio.sleep(0.01)
        rest = [asyncio.create_task(batcher.submit([t])) for t in "bcd"]
        await asyncio.gather(first, *rest)
        await batcher.stop()
        return forward

    assert run(go()).batches == [["a"], ["b", "c", "d"]]


def test_max_wait_bounds_the_wait_of_a_lone_request() -> None:
    async def go():
        batcher = Batcher(Recorder(), max_batch=16, max_wait_s=0.02)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit(["a"])
        elapsed = loop.time() - start
        await batcher.stop()
        return elapsed

    assert run(go()) < 0.5


def test_a_failing_forward_fails_its_batch_only() -> None:
    async def go():
        forward = Recorder(fail=True)
        batcher = Batcher(forward, max_batch=16, max_wait_s=0.0)
        with pytest.raises(RuntimeError, match="forward broke"):
            await batcher.submit(["a"])
        forward.fail = False
        answer = await batcher.submit(["b"])
        await batcher.stop()
        return answer

    assert run(go()) == ("v1", ["B"])


def test_a_cancelled_request_is_not_computed() -> None:
    async def go():
        forward = Recorder(delay_s=0.05)
        batcher = Batcher(forward, max_batch=16, max_wait_s=0.0)
        busy = asyncio.create_task(batcher.submit(["busy"]))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(batcher.submit(["gone"]))
        kept = asyncio.create_task(batcher.submit(["kept"]))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(busy, kept)
        await batcher.stop()
        return forward

    assert run(go()).batches == [["busy"], ["kept"]]


def test_a_lone_client_never_waits_but_concurrent_ones_do() -> None:
    async def go():
        forward = Recorder()
        batcher = Batcher(forward, max_batch=16, max_wait_s=0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        for text in "abc":
            await batcher.submit([text])
        lone = loop.time() - start
        await asyncio.gather(batcher.submit(["d"]), batcher.submit(["e"]))  # a batch of two requests...
        late = asyncio.create_task(batcher.submit(["f"]))  # ...so the next batch waits for company
        await asyncio.sleep(0.01)
        await asyncio.gather(late, batcher.submit(["g"]))
        await batcher.stop()
        return lone, forward.batches

    lone, batches = run(go())
    assert lone < 0.05 and batches == [["a"], ["b"], ["c"], ["d", "e"], ["f", "g"]]
