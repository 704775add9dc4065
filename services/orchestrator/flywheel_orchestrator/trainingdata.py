"""Which dataset versions a run trains on (docs/decisions/0012-retrain-data-policy.md). Pure: no I/O.

A dataset version is *feedback* when its version name in the dataset layout (`<prefix><model_id>/<version>/`)
starts with `feedback-`: the name serving's harvest gives every version it writes (flywheel_serving.harvest,
VERSION_PREFIX), and the only names serving's IAM policy lets it write. Every other version is *base* data
(a curated upload). The default policy trains on the newest base version plus the feedback versions that
arrived after it, within a window of versions and of time, and within a row cap.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field


class Version(Protocol):
    """What choosing needs of a dataset version (domain.DatasetRef has it; policy.py imports this module and
    domain.py imports policy.py, so the type is named by its shape, not imported)."""

    @property
    def prefix(self) -> str: ...
    @property
    def dataset_version_id(self) -> str: ...
    @property
    def landed_at_ms(self) -> int | None: ...
    @property
    def row_count(self) -> int: ...


D = TypeVar("D", bound=Version)

FEEDBACK_VERSION_PREFIX = "feedback-"  # flywheel_serving.harvest.VERSION_PREFIX (a cross-service agreement)
MAX_FEEDBACK_KEPT = 100  # feedback versions a model's state remembers after its base: the window's ceiling


def version_name(prefix: str) -> str:
    """`v1` of `datasets/m/v1/`; "" when the prefix is unknown (state written before prefixes were kept)."""
    parts = [p for p in prefix.split("/") if p]
    return parts[-1] if parts else ""


def is_feedback(dataset: Version) -> bool:
    return version_name(dataset.prefix).startswith(FEEDBACK_VERSION_PREFIX)


class BaseChoice(StrEnum):
    LATEST_NON_FEEDBACK = "latest-non-feedback"  # the newest base version, plus the feedback window
    LATEST = "latest"  # the newest version alone, whatever it is (no composition)


class TrainingDataPolicy(BaseModel):
    """Which versions a run trains on. Defaults: the newest base + up to 10 feedback versions after it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: BaseChoice = BaseChoice.LATEST_NON_FEEDBACK
    # The newest feedback versions that arrived after the base, at most this many (the run's own included).
    feedback_window_versions: int = Field(10, ge=1, le=MAX_FEEDBACK_KEPT)
    # Only feedback versions whose data landed within this many seconds of the decision (0: no time limit).
    feedback_window_s: float = Field(0.0, ge=0)
    # Total rows at most (0: no cap): the oldest feedback versions are left out first; the base is never cut.
    max_rows: int = Field(0, ge=0)


def remember(
    base: D | None, feedback: list[D], dataset: D
) -> tuple[D | None, list[D]]:
    """The (base, feedback after it) a model keeps once `dataset` arrived: a new base version starts an empty
    feedback list; a feedback version is appended (once), the oldest dropped beyond MAX_FEEDBACK_KEPT."""
    if not is_feedback(dataset):
        return dataset, []
    kept = [f for f in feedback if f.dataset_version_id != dataset.dataset_version_id] + [dataset]
    return base, kept[-MAX_FEEDBACK_KEPT:]


def choose(
    policy: TrainingDataPolicy,
    newest: D,
    base: D | None,
    feedback: list[D],
    now_ms: int,
) -> tuple[D, ...]:
    """The versions a run on `newest` trains on, base first then feedback oldest first; `newest` always in."""
    if policy.base is BaseChoice.LATEST or not is_feedback(newest):
        return (newest,)
    window = [f for f in feedback if f.dataset_version_id != newest.dataset_version_id]
    if policy.feedback_window_s > 0:
        since = now_ms - int(policy.feedback_window_s * 1000)
        window = [f for f in window if f.landed_at_ms is None or f.landed_at_ms >= since]
    window = (window + [newest])[-policy.feedback_window_versions :]
    chosen = ([base] if base is not None else []) + window
    while policy.max_rows and len(chosen) > 1 + (base is not None) and rows(chosen) > policy.max_rows:
        chosen.pop(1 if base is not None else 0)  # the oldest feedback version; `newest` (last) stays
    return tuple(chosen)


def rows(datasets: list[D] | tuple[D, ...]) -> int:
    return sum(d.row_count for d in datasets)
