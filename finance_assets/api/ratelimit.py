"""A client-side rate limiter shared by every endpoint read of a run.

Why: the API allows a number of requests per minute per client and says how many
are left (``X-Rate-Limit-Limit``, ``-Remaining``, ``-Reset``). Meeting a 429 costs
a ``Retry-After`` wait of up to a minute, so it pays to never send a request the
API has said it will refuse, while running at full speed when the budget is ample.

Three independent bounds, all enforced in :meth:`RateLimiter.acquire`:

- **in flight**: at most ``max_in_flight`` requests at once (a semaphore);
- **configured cap** (optional): at most ``per_minute`` acquisitions in any
  ``period`` seconds, as a sliding log, so it holds whatever window the server uses;
- **advertised budget**: after each response :meth:`observe` learns how many
  requests are left until the window resets. That budget is a hard cap, and a
  token bucket (capacity ``burst``) refilled at ``(budget - level) / time_to_reset``
  spreads it evenly over the time left, so it is never spent before the reset. With
  a large budget the refill outpaces any client, which is full speed.

:meth:`wait_after_429` holds everything back until ``Retry-After`` has passed. No
HTTP library is needed: headers are any mapping; clock and sleep are injectable.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

LIMIT_HEADER = "X-Rate-Limit-Limit"
REMAINING_HEADER = "X-Rate-Limit-Remaining"
RESET_HEADER = "X-Rate-Limit-Reset"
# Two readings whose resets differ by less than this belong to the same window
# (Reset is whole seconds and responses arrive with some delay).
SAME_WINDOW_SLACK = 2.0
# An advertised limit from which a run is bound by latency rather than by its budget:
# below it, a request spent on a page that may not exist makes the run longer.
AMPLE_LIMIT_PER_MINUTE = 600


def _header(headers: Mapping[str, str], name: str) -> float | None:
    """A numeric header from any mapping (case-insensitive ones, or plain dicts)."""
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class RateLimiter:
    """Thread-safe pacing of API requests; see the module docstring for the rules."""

    def __init__(
        self,
        per_minute: int | None = None,
        max_in_flight: int = 8,
        *,
        burst: int | None = None,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if per_minute is not None and per_minute < 1:
            raise ValueError("per_minute must be at least 1 (or None for no configured cap)")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.per_minute = per_minute
        self.max_in_flight = max_in_flight
        self.period = period
        self.burst = float(burst if burst is not None else max_in_flight)
        self.clock = clock
        self.sleep = sleep
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._in_flight = 0
        self._log: deque[float] = deque()  # acquisition times within the last period
        self._blocked_until = -math.inf  # from a 429's Retry-After
        # Advertised budget (None until a response has told us).
        self._limit: int | None = None
        self._budget: float | None = None  # acquisitions still allowed before _reset_at
        self._reset_at = -math.inf
        # Token bucket spreading the budget; infinite rate until a budget is known.
        self._level = self.burst
        self._level_at = clock()
        self._rate = math.inf

    # ---------- public API ----------
    def acquire(self) -> None:
        """Block until one more request may be sent, then count it as in flight."""
        self._slots.acquire()
        try:
            self._wait_for_budget()
        except BaseException:
            self._slots.release()
            raise
        with self._lock:
            self._in_flight += 1

    def release(self) -> None:
        """The request is over (answered or failed); frees its in-flight slot."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
        self._slots.release()

    def observe(self, headers: Mapping[str, str]) -> None:
        """Learn the advertised budget from a response's rate-limit headers.

        Call it while the request still holds its slot: the other requests in
        flight may not be counted in ``Remaining`` yet, so they are deducted.
        """
        limit = _header(headers, LIMIT_HEADER)
        remaining = _header(headers, REMAINING_HEADER)
        reset = _header(headers, RESET_HEADER)
        if remaining is None or reset is None:
            return
        with self._lock:
            now = self.clock()
            self._refill(now)
            if limit is not None:
                self._limit = int(limit)
            reset_at = now + reset
            candidate = remaining - max(0, self._in_flight - 1)
            if self._budget is None or now >= self._reset_at or (
                reset_at > self._reset_at + SAME_WINDOW_SLACK
            ):
                # First reading, or a new window: take it as it is.
                self._budget, self._reset_at = candidate, reset_at
            elif reset_at < self._reset_at - SAME_WINDOW_SLACK:
                return  # a late reading from the previous window
            else:
                # Same window: readings can arrive out of order, keep the lower.
                self._budget = min(self._budget, candidate)
                self._reset_at = max(self._reset_at, reset_at)
            self._budget = max(0.0, self._budget)
            self._respread(now)

    def wait_after_429(self, retry_after: float | None) -> None:
        """The API refused a request (429): hold every request back until Retry-After passes.

        The calling thread, the one that will retry, sleeps the wait out itself and lifts
        the hold when it wakes, so its own retry is not held a second time. Without a
        Retry-After the current window is taken as spent.
        """
        with self._lock:
            now = self.clock()
            until = -math.inf
            if retry_after is not None and retry_after > 0:
                until = now + retry_after
                self._blocked_until = max(self._blocked_until, until)
            elif self._budget is not None:
                # No Retry-After: assume this window is spent; observe() may say more.
                # With one, it is the API's own word on when to retry: honour just that.
                self._budget = 0.0
            self._respread(now)
        if retry_after is not None and retry_after > 0:
            self.sleep(retry_after)
            with self._lock:
                if self._blocked_until <= until:  # nobody extended the hold meanwhile
                    self._blocked_until = -math.inf

    def budget_is_ample(self) -> bool:
        """Whether a request may be spent on a page that may not exist.

        Only without a configured cap, with no 429 hold and with an advertised limit of
        at least ``AMPLE_LIMIT_PER_MINUTE``: under a tight limit (or one never said) a
        run is bound by its budget, and every wasted request makes it longer.
        """
        with self._lock:
            if self.per_minute is not None or self._blocked_until > self.clock():
                return False
            ample = AMPLE_LIMIT_PER_MINUTE * self.period / 60
            return self._limit is not None and self._limit >= ample

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    # ---------- internals ----------
    def _wait_for_budget(self) -> None:
        while True:
            with self._lock:
                now = self.clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._take(now)
                    return
            self.sleep(wait)

    def _wait_needed(self, now: float) -> float:
        """Seconds until a request may go; 0 when it may go now (caller holds the lock)."""
        if now < self._blocked_until:
            return self._blocked_until - now
        if self.per_minute is not None:
            while self._log and now - self._log[0] >= self.period:
                self._log.popleft()
            if len(self._log) >= self.per_minute:
                return self._log[0] + self.period - now
        if self._budget is not None and now >= self._reset_at:
            self._new_window(now)
        if self._budget is None:
            return 0.0
        if self._budget < 1:
            return max(self._reset_at - now, 1e-3)
        self._refill(now)
        if self._level >= 1:
            return 0.0
        if self._rate <= 0:
            return max(self._reset_at - now, 1e-3)
        return max((1 - self._level) / self._rate, 1e-6)

    def _take(self, now: float) -> None:
        if self.per_minute is not None:
            self._log.append(now)
        if self._budget is not None:
            self._budget -= 1
            self._level -= 1

    def _new_window(self, now: float) -> None:
        """The advertised window is over: assume a fresh one until a response says more."""
        if self._limit is None:  # the API never said its limit: no pacing until it does
            self._budget, self._rate, self._reset_at = None, math.inf, -math.inf
            return
        self._budget = float(max(0, self._limit - self._in_flight))
        self._reset_at = now + self.period
        self._respread(now)

    def _refill(self, now: float) -> None:
        if now > self._level_at:
            if math.isinf(self._rate):
                self._level = self.burst
            else:
                self._level = min(self.burst, self._level + self._rate * (now - self._level_at))
            self._level_at = now

    def _respread(self, now: float) -> None:
        """Refill so that the budget is used up exactly at the reset, not before."""
        if self._budget is None:
            return
        self._level = min(self._level, self._budget)
        left = self._reset_at - now
        self._rate = max(0.0, self._budget - self._level) / left if left > 0 else math.inf
