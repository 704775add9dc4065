"""Watch every catalogue topic and keep a decoded, timestamped timeline (the demo, e2e and fault tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flywheel.catalogue import TOPICS
from flywheel.codec import AvroCodec
from flywheel.errors import FlywheelError
from flywheel.settings import FlywheelSettings
from flywheel.topicreader import watch


@dataclass(frozen=True)
class Seen:
    at: float  # monotonic seconds since the timeline started
    topic: str
    name: str  # short event name, or the error class for undecodable records
    record: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.record.get(key, default)


class Timeline:
    """A background consumer of all topics; `wait_for` blocks until a matching event arrives."""

    def __init__(self, settings: FlywheelSettings, codec: AvroCodec,
                 on_event: Callable[[Seen], None] | None = None) -> None:
        # A group subscription, not an assignment: the fault tests wipe the local broker under a timeline.
        self._messages = watch(settings, [t.name for t in TOPICS], from_beginning=True, reader="timeline",
                               poll_s=0.1, subscribe=True)
        self._codec = codec
        self._on_event = on_event
        self._events: list[Seen] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="timeline", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for msg in self._messages:
            if self._stop.is_set():
                break
            if msg is None:
                continue
            seen = self._decode(msg)
            with self._cond:
                self._events.append(seen)
                self._cond.notify_all()
            if self._on_event:
                self._on_event(seen)
        self._messages.close()

    def _decode(self, msg: Any) -> Seen:
        at = time.monotonic() - self.started
        try:
            decoded = self._codec.decode(msg.value())
        except FlywheelError as exc:
            return Seen(at, msg.topic(), type(exc).__name__, {"reason": str(exc)})
        return Seen(at, msg.topic(), decoded.name.rsplit(".", 1)[-1], decoded.record)

    @property
    def events(self) -> list[Seen]:
        with self._cond:
            return list(self._events)

    def matching(self, name: str, where: Callable[[Seen], bool] = lambda s: True) -> list[Seen]:
        return [s for s in self.events if s.name == name and where(s)]

    def wait_for(self, name: str, where: Callable[[Seen], bool] = lambda s: True, timeout: float = 60.0,
                 count: int = 1) -> list[Seen]:
        """Block until `count` events named `name` satisfy `where`; TimeoutError names what was missing."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [s for s in self._events if s.name == name and where(s)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"waited {timeout:.0f}s for {count} x {name}; saw {len(found)}")
                self._cond.wait(min(left, 0.2))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
