"""Per-key and per-address limits of the HTTP service (each worker process keeps its own counts).

* every key: at most ``ServeConfig.rate_limit`` requests (e.g. ``120/minute``), then 429;
* every client address: at most ``ServeConfig.failed_auth_limit`` requests with a missing, unknown or
  revoked key, then 429 even for a right key, so keys cannot be guessed at speed;
* every key: at most ``ServeConfig.long_polls_per_key`` long-polls open at once, then 429.

A 429 carries ``Retry-After`` (seconds). Counts use the ``limits`` library's moving window, in memory.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Iterator

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from sopagent.errors import SopAgentError


class LimitExceeded(SopAgentError):
    """A client went over a limit; ``retry_after`` says in how many seconds to try again."""

    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Limits:
    """The service's request limits (see the module doc)."""

    def __init__(self, rate_limit: str, failed_auth_limit: str, long_polls_per_key: int) -> None:
        try:
            self.per_key: RateLimitItem = parse(rate_limit)
            self.failed_auth: RateLimitItem = parse(failed_auth_limit)
        except ValueError as exc:
            raise SopAgentError(f"{exc}; write a limit like 120/minute or 10/second") from exc
        self.long_polls_per_key = long_polls_per_key
        self._window = MovingWindowRateLimiter(MemoryStorage())
        self._polls: dict[str, int] = {}
        self._lock = threading.Lock()

    def _retry_after(self, item: RateLimitItem, *identity: str) -> int:
        stats = self._window.get_window_stats(item, *identity)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def check_address(self, address: str) -> None:
        """Raise LimitExceeded when ``address`` sent too many requests with a bad key lately."""
        if not self._window.test(self.failed_auth, "failed-auth", address):
            raise LimitExceeded(f"too many requests with a missing or wrong API key from {address}; wait and "
                                "send a valid key", self._retry_after(self.failed_auth, "failed-auth", address))

    def failed(self, address: str) -> None:
        """Count a request from ``address`` with a missing, unknown or revoked key."""
        self._window.hit(self.failed_auth, "failed-auth", address)

    def hit(self, key_id: str) -> None:
        """Count a request of the key ``key_id`` (any stable id of it, e.g. a digest prefix); raise
        LimitExceeded over the key's rate."""
        if not self._window.hit(self.per_key, "key", key_id):
            raise LimitExceeded(f"this key sent more than {self.per_key} requests; slow down",
                                self._retry_after(self.per_key, "key", key_id))

    @contextmanager
    def long_poll(self, key_id: str) -> Iterator[None]:
        """Hold one of ``key_id``'s long-poll places while the block runs; LimitExceeded when none is free."""
        with self._lock:
            if self._polls.get(key_id, 0) >= self.long_polls_per_key:
                raise LimitExceeded(f"this key already has {self.long_polls_per_key} long-polls open; close "
                                    "one or poll less often", 1)
            self._polls[key_id] = self._polls.get(key_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._polls[key_id] -= 1
