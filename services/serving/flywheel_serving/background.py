"""One background loop on the event loop: started with the app, cancelled (and awaited) at shut-down.

The live-metrics emitter, the shadow-evaluation emitter and the harvester each run one such loop and then
flush what they hold; this is the part they share."""

from __future__ import annotations

import asyncio
import contextlib


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
