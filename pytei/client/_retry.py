"""When and how long to wait before sending a request again.

Policy (documented on :class:`RetryPolicy`): retry 429 (overloaded) and 503 (unhealthy),
connection resets and connect timeouts; never any other status (422 and friends are the
caller's input, 424 is a model-type mismatch or inference failure that a retry repeats) and
never a read timeout (the router may still be working on it: resending doubles the load).
Every TEI route is a pure function of its input, so resending a POST is safe.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["RetryPolicy", "parse_retry_after"]


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date.

    None when absent or unreadable (the caller then uses its own backoff); a date in the past
    gives 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; the parser leaves "-0000" naive
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True)
class RetryPolicy:
    """How :class:`pytei.Client` retries.

    - ``max_retries``: resends after the first attempt (0 disables retrying).
    - Delay before resend ``k`` (0-based): the server's ``Retry-After`` when it sent one,
      otherwise "full jitter" exponential backoff, ``uniform(0, min(backoff_max,
      backoff_base * 2**k))`` (spreads clients out instead of having them retry in lockstep).
    - A ``Retry-After`` longer than ``max_retry_after`` is not waited for: the error is raised
      at once (the server asked for more patience than a call should silently spend).
    - ``sleep`` and ``random`` are injectable so tests run without waiting.  With the default
      sleep, a cancelled bulk call (another batch failed, or Ctrl-C) wakes its sleepers at once.
    """

    max_retries: int = 3
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    max_retry_after: float = 60.0
    sleep: Callable[[float], None] | None = field(default=None, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("backoff_base, backoff_max and max_retry_after must be >= 0")

    def backoff(self, attempt: int) -> float:
        """The jittered delay before resend number ``attempt`` (0-based) without Retry-After."""
        ceiling = min(self.backoff_max, self.backoff_base * (2.0**attempt))
        return self.random() * ceiling

    def delay(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait before resend ``attempt``, or None when the policy says give up."""
        if attempt >= self.max_retries:
            return None
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after else None
        return self.backoff(attempt)

    def wait(self, seconds: float, cancel: threading.Event | None) -> bool:
        """Sleep; False when ``cancel`` was set (before or during the wait)."""
        if cancel is not None and cancel.is_set():
            return False
        if self.sleep is not None:
            self.sleep(seconds)
        elif cancel is not None:
            return not cancel.wait(seconds)
        elif seconds > 0:
            time.sleep(seconds)
        return cancel is None or not cancel.is_set()
