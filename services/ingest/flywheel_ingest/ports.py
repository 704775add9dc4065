"""What the handlers and the closer depend on, as Protocols; `adapters` implements them on boto3.

Blocking methods: they are called from worker threads, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from flywheel_ingest.layout import ObjectSeen

# publish(topic, record): returns once the broker acknowledged the record (the app binds
# FaustPublisher.publish with acked=True), so the done-record written after it is never ahead of the event.
# It raises Unpublishable when the record can never be published; any other error is transient and retried.
Publish = Callable[[str, dict[str, Any]], Awaitable[None]]
# size(topic, record): the encoded size in bytes (key + framed value) of what publish would send.
EventSize = Callable[[str, dict[str, Any]], int]
# transient(error): whether an ObjectStore error is worth retrying as it is (throttling, 5xx, a timeout, a
# dropped connection); a transient error is never recorded as the version's final outcome.
IsTransient = Callable[[BaseException], bool]


class Unpublishable(Exception):
    """The producer, the broker or the encoder refuses this record for good (too large for the broker, not
    fitting its schema): retrying cannot help. `too_large` says whether its size was the reason."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class Conflict(Exception):
    """A conditional write lost: the document exists (`if_none_match`) or changed since it was read
    (`if_match`). Another replica wrote first; re-read and decide again."""


class ObjectStore(Protocol):
    """The data bucket: listings, object bytes and ingest's own JSON documents (manifests, state).

    Writes of ingest's own documents can be conditional, which is what makes N replicas safe
    (docs/decisions/0010-ingest-scale-out.md): `if_none_match` creates only when the key is absent,
    `if_match` replaces only the version with that ETag; a lost condition raises `Conflict`."""

    def list_prefix(self, bucket: str, prefix: str) -> list[ObjectSeen]: ...

    def list_page(self, bucket: str, prefix: str, start_after: str,
                  max_keys: int) -> tuple[list[ObjectSeen], bool]: ...

    def chunks(self, bucket: str, key: str, chunk_bytes: int) -> Iterator[bytes]: ...

    def get_json(self, bucket: str, key: str) -> dict[str, Any] | None: ...

    def get_json_tagged(self, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
        """The document and its ETag, or None when there is none. A body that is not a JSON object reads as
        {} (so that it can still be replaced conditionally)."""
        ...

    def put_json(self, bucket: str, key: str, doc: dict[str, Any], *, if_none_match: bool = False,
                 if_match: str | None = None) -> str:
        """Write the document; returns its new ETag. Raises Conflict when a condition fails."""
        ...

    def exists(self, bucket: str, key: str) -> bool: ...


@dataclass(frozen=True)
class QueueMessage:
    message_id: str
    receipt: str
    body: str


class NotificationQueue(Protocol):
    """The queue of the bucket's S3 event notifications."""

    @property
    def name(self) -> str: ...

    @property
    def visibility_s(self) -> int: ...

    def receive(self) -> list[QueueMessage]: ...

    def extend(self, receipts: list[str]) -> int: ...

    def delete(self, receipts: list[str]) -> int: ...
