"""The data flywheel, pure part: labelled feedback (core.Joined) -> rows with provenance -> per-model batches,
each written as one new dataset version in ingest's layout (docs/ingest.md):

    <dataset prefix><model_id>/feedback-<UTC yyyymmddTHHMMSS>-<replica>/part-0000.jsonl  (then _SUCCESS)

One row per labelled text: the model's text and label columns (the ingest rules of that model) plus
provenance: request_id, index (the text's position in its request), model_version (the version that
answered), predicted_label, confidence, answered_at, labelled_at (ms since the epoch), source="feedback".
Each row is checked by the dataset reader ingest validates with (flywheel.datareader) before it is kept, so
a batch never holds a row that would reject its version; refused rows are counted, never written.

A model's batch is due at `max_rows` rows, or `interval_ms` after its first row once it holds `min_rows`;
at shut-down (`everything`) whatever is held. No I/O here: harvester.py writes the batches.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from flywheel.datareader import Invalid, Rules, read_stats
from flywheel_serving.core import Joined

SOURCE = "feedback"
VERSION_PREFIX = "feedback-"
DATA_FILE = "part-0000.jsonl"
MARKER = "_SUCCESS"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")  # a model id or version in the layout
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_REPLICA_CHARS = 80  # feedback-<15>-<replica>-<n> stays within the layout's 128 characters


@dataclass(frozen=True, slots=True)
class HarvestConfig:
    dataset_prefix: str = "datasets/"
    replica: str = "serving"
    interval_ms: int = 300_000
    max_rows: int = 500
    min_rows: int = 20


def replica_name(raw: str) -> str:
    """A replica id safe in a version name: [A-Za-z0-9._-] only, at most MAX_REPLICA_CHARS."""
    return _UNSAFE.sub("-", raw).strip("-")[:MAX_REPLICA_CHARS] or "serving"


def version_name(at_ms: int, replica: str) -> str:
    """feedback-<UTC yyyymmddTHHMMSS>-<replica>; a writer appends -<n> when that name is taken."""
    return f"{VERSION_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime(at_ms // 1000))}-{replica}"


def text_and_label(rules: Rules) -> tuple[str, str] | None:
    """The columns feedback fills; None when the model requires a column feedback cannot fill."""
    text = rules.text_column
    if text is None or set(rules.required) - {text, rules.label_column}:
        return None
    return text, rules.label_column


def feedback_rows(joined: Joined, labelled_at: int, text: str, label: str) -> list[dict[str, object]]:
    return [{"request_id": joined.request_id, "index": i, "model_version": joined.version,
             "predicted_label": predicted,
             "confidence": round(joined.probabilities[i], 6) if i < len(joined.probabilities) else None,
             "answered_at": joined.answered_at, "labelled_at": labelled_at, "source": SOURCE,
             text: joined.texts[i], label: true}
            for i, (predicted, true) in enumerate(joined.pairs)]


def encoded(row: dict[str, object], rules: Rules) -> bytes:
    """One JSON line, accepted by ingest's reader under `rules` (else Invalid)."""
    line = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    read_stats("jsonl", [line], rules, accelerate=False)
    return line


@dataclass(slots=True)
class Batch:
    """One version to write: its rows as JSON Lines. Mutable bookkeeping for the writer."""

    model_id: str
    version: str
    body: bytes
    rows: int
    prefix: str  # <dataset prefix><model_id>/<version>/
    seq: int = 0  # bumped when the version name was taken by someone else
    attempts: int = 0  # failed attempts whose outcome is unknown (the data object may have landed)
    data_written: bool = False

    @property
    def data_key(self) -> str:
        return self.prefix + DATA_FILE

    @property
    def marker_key(self) -> str:
        return self.prefix + MARKER


@dataclass(slots=True)
class _Buffer:
    started_ms: int
    lines: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Added:
    rows: int
    dropped: Counter[str]


class Harvest:
    def __init__(self, config: HarvestConfig, rules_for: Callable[[str], Rules]) -> None:
        self.config, self.rules_for = config, rules_for
        self._buffers: dict[str, _Buffer] = {}
        self._last: dict[str, tuple[str, int]] = {}  # model -> (last version's time part, seq) : unique names

    @property
    def held_rows(self) -> int:
        return sum(len(b.lines) for b in self._buffers.values())

    def add(self, joined: Joined, at_ms: int) -> Added:
        """Keep the joined texts as rows; rows ingest would refuse are dropped and counted by reason."""
        dropped: Counter[str] = Counter()
        rules = self.rules_for(joined.model)
        columns = text_and_label(rules)
        if not _NAME.match(joined.model):
            dropped["model_id"] += len(joined.pairs)
        elif columns is None:
            dropped["columns"] += len(joined.pairs)
        elif len(joined.texts) != len(joined.pairs):
            dropped["no_text"] += len(joined.pairs)
        if dropped:
            return Added(0, dropped)
        lines = []
        for row in feedback_rows(joined, at_ms, *columns):
            try:
                lines.append(encoded(row, rules))
            except (Invalid, UnicodeEncodeError):  # e.g. a blank text, a lone surrogate, a too-long label
                dropped["invalid"] += 1
        if lines:
            self._buffers.setdefault(joined.model, _Buffer(at_ms)).lines.extend(lines)
        return Added(len(lines), dropped)

    def full(self) -> bool:
        return any(len(b.lines) >= self.config.max_rows for b in self._buffers.values())

    def due(self, now_ms: int, *, everything: bool = False) -> list[Batch]:
        batches = []
        for model, buffer in list(self._buffers.items()):
            while len(buffer.lines) >= self.config.max_rows:
                batches.append(self._batch(model, buffer.lines[:self.config.max_rows], now_ms))
                del buffer.lines[:self.config.max_rows]
                buffer.started_ms = now_ms
            aged = now_ms - buffer.started_ms >= self.config.interval_ms
            if buffer.lines and (everything or (aged and len(buffer.lines) >= self.config.min_rows)):
                batches.append(self._batch(model, buffer.lines, now_ms))
                buffer.lines = []
            if not buffer.lines:
                del self._buffers[model]
        return batches

    def _batch(self, model: str, lines: list[bytes], now_ms: int) -> Batch:
        stamp = version_name(now_ms, self.config.replica)
        last, seq = self._last.get(model, ("", 0))
        seq = seq + 1 if last == stamp else 0
        self._last[model] = (stamp, seq)
        return self.named(Batch(model, "", b"".join(lines), len(lines), ""), stamp, seq)

    def named(self, batch: Batch, stamp: str, seq: int) -> Batch:
        version = stamp + (f"-{seq}" if seq else "")
        batch.version, batch.seq = version, seq
        batch.prefix = f"{self.config.dataset_prefix}{batch.model_id}/{version}/"
        return batch

    def renamed(self, batch: Batch) -> Batch:
        """The same rows under the next free name (the name was taken: a restarted replica of the same name)."""
        stamp = batch.version if not batch.seq else batch.version.rsplit("-", 1)[0]
        return self.named(batch, stamp, batch.seq + 1)
