"""Bounded retries with full jitter for throttled AWS calls."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("orchestrator.retry")
THROTTLE_CODES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException",
                            "RequestLimitExceeded", "ProvisionedThroughputExceededException"})


def is_throttle(exc: BaseException) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in THROTTLE_CODES


def with_backoff(call: Callable[[], T], attempts: int = 6, base_s: float = 0.5, cap_s: float = 20.0,
                 sleep: Callable[[float], None] = time.sleep, rng: Callable[[], float] = random.random) -> T:
    """Run `call`; on throttling sleep a random time below base*2^n (capped) and try again, `attempts` times."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if not is_throttle(exc) or attempt == attempts - 1:
                raise
            delay = rng() * min(cap_s, base_s * 2 ** attempt)
            log.warning("throttled, retrying in %.2fs (attempt %d/%d)", delay, attempt + 1, attempts)
            sleep(delay)
    raise AssertionError("unreachable")
