"""One background loop on the event loop: started with the app, cancelled (and awaited) at shut-down.

The live-metrics emitter, the shadow-evaluation emitter and the harvester each run one such loop and then
flush what they hold; this is the part they share (the two emitters also share their boundary loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sized
from typing import Any

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Subclasses implement `_run` (a loop that never returns) and call `_cancel` first in their `stop`."""

    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        raise NotImplementedError


class WindowEmitter(BackgroundLoop):
    """A loop that wakes at each window boundary, closes the windows (`_close`) and publishes what they gave
    off the event loop (`publish_pending`); a failure is logged and what was kept goes at the next boundary.
    Subclasses set `windows` (with `next_boundary`), `clock` and `_pending`, and name themselves in `what`."""

    what = "windows"
    windows: Any
    clock: Callable[[], int]
    _pending: Sized

    def _close(self, boundary_ms: int) -> None:
        raise NotImplementedError

    def publish_pending(self) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            boundary = self.windows.next_boundary(self.clock())
            await asyncio.sleep(max(0.0, (boundary - self.clock()) / 1000))
            try:
                self._close(boundary)
                if self._pending:
                    await asyncio.to_thread(self.publish_pending)
            except Exception:  # never stops; what was kept goes at the next boundary
                log.exception("%s: closing the window ending %d failed", self.what, boundary)
