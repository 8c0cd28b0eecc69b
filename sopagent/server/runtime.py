"""Process-local machinery of the service: a FIFO model queue with a timeout, per-conversation
locks that hold across processes on PostgreSQL, and the escalation webhook.

Nothing here is conversation state: a restart or another process loses nothing by not having it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.exc import SQLAlchemyError

from sopagent.errors import CapacityError, ModelError, StoreError
from sopagent.models.base import CallStats, ChatPrompt, Choice, DecisionModel, Extraction, M, PromptCachingModel

log = logging.getLogger("sopagent.server")
R = TypeVar("R", Extraction, Choice)
T = TypeVar("T")


class QueuedModel:
    """One model per process; every call goes through one worker thread in arrival order (FIFO).

    A call that has not finished ``timeout_s`` after it was queued raises :class:`ModelError`, so
    the engine answers with the policy's fallback and records the decision as escalated. The
    abandoned call still finishes in the worker (llama.cpp cannot be interrupted), delaying the
    calls queued after it; their own timeouts keep every customer's wait bounded.
    """

    def __init__(self, model: DecisionModel, timeout_s: float) -> None:
        self.inner = model
        self.name = model.name
        self.timeout_s = timeout_s
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sopagent-model")
        self._queued = 0
        self._count = threading.Lock()

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        """Queue an extraction; see :meth:`DecisionModel.extract`."""
        return self._call(self.inner.extract, prompt, schema)

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """Queue a choice; see :meth:`DecisionModel.choose`."""
        return self._call(self.inner.choose, prompt, n_options)

    def prefetch(self, prompt: ChatPrompt, upto: str) -> CallStats | None:
        """Queue the inner model's ``prefetch`` only while no call waits (it must never delay a turn);
        returns at once, None."""
        if not isinstance(self.inner, PromptCachingModel):
            return None
        with self._count:
            if self._queued:
                return None
            self._queued += 1
        self._worker.submit(self._counted, self.inner.prefetch, prompt, upto)
        return None

    def _counted(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        finally:
            with self._count:
                self._queued -= 1

    def _call(self, fn: Callable[..., R], *args: Any) -> R:
        queued_at = time.perf_counter()

        def run() -> R:
            waited_ms = (time.perf_counter() - queued_at) * 1000
            result = fn(*args)
            result.stats.queued_ms = waited_ms
            return result

        with self._count:
            self._queued += 1
        future = self._worker.submit(self._counted, run)
        try:
            return future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()  # drops it if it has not started yet
            raise ModelError(f"the model did not answer within {self.timeout_s:g} s "
                             "(raise --model-timeout or add capacity)", retryable=True) from None

    def shutdown(self) -> None:
        """Stop the worker thread (queued calls are dropped)."""
        self._worker.shutdown(wait=False, cancel_futures=True)


class TurnAdmission:
    """At most ``slots`` turns of this process past the door at once; the others wait here, in order.

    A turn holds a database connection (its conversation's lock) and a place in the model queue from
    the moment it passes until it commits. With one model per process, more turns in flight than a
    few only lengthen the model queue while holding connections: measured with 200 concurrent
    conversations on 2 workers, turns waited 45-95 s for the model while holding lock connections,
    and the lock pool ran dry (503s). Turns beyond ``slots`` wait here holding nothing, and give up
    with a 503 (nothing recorded, nothing sent) after ``wait_s``.
    """

    def __init__(self, slots: int, wait_s: float) -> None:
        self.slots = slots
        self.wait_s = wait_s
        self._semaphore = threading.BoundedSemaphore(slots)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for a free slot (raises :class:`~sopagent.errors.CapacityError` after ``wait_s``)."""
        if not self._semaphore.acquire(timeout=self.wait_s):
            raise CapacityError(f"the service is at capacity: a turn waited {self.wait_s:g} s for one of "
                                f"{self.slots} places. Retry later, or add workers (--workers) or "
                                "model capacity", retryable=True)
        try:
            yield
        finally:
            self._semaphore.release()


class ConversationLocks:
    """Serialize the turns of one conversation; different conversations run concurrently.

    On PostgreSQL a session-level advisory lock keyed by the conversation id is taken on a
    dedicated connection, so a second process (or thread) waits for the first turn to commit.
    On other databases (SQLite: one process) a lock per conversation in this process does it; the
    store's revision check still refuses a stale turn from another process (HTTP 409, retry).
    """

    def __init__(self, url: str, pool_size: int = 20, wait_s: float = 120.0) -> None:
        self.postgres = url.startswith("postgresql")
        self.wait_s = wait_s
        self._guard = threading.Lock()
        self._local: dict[str, tuple[threading.Lock, int]] = {}
        if self.postgres:
            self._engine = create_engine(url, pool_size=pool_size, max_overflow=0, pool_pre_ping=True,
                                         isolation_level="AUTOCOMMIT")

    @contextmanager
    def hold(self, conversation_id: str) -> Iterator[None]:
        """Hold the conversation's lock for the duration of the ``with`` block."""
        if self.postgres:
            with self._pg(conversation_id):
                yield
            return
        lock = self._acquire_local(conversation_id)
        try:
            yield
        finally:
            lock.release()
            self._release_local(conversation_id)

    @contextmanager
    def _pg(self, conversation_id: str) -> Iterator[None]:
        try:
            connection = self._engine.connect()
            connection.execute(text("SELECT set_config('lock_timeout', :ms, false)"),
                               {"ms": f"{int(self.wait_s * 1000)}ms"})
            connection.execute(text("SELECT pg_advisory_lock(hashtextextended(:key, 0))"), {"key": conversation_id})
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot lock conversation {conversation_id}: the audit store is unreachable "
                             f"({type(exc).__name__})", retryable=True) from exc
        try:
            yield
        finally:
            try:
                connection.execute(text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"),
                                   {"key": conversation_id})
                connection.close()
            except SQLAlchemyError:
                connection.invalidate()  # closing the session ends its advisory locks

    def _acquire_local(self, conversation_id: str) -> threading.Lock:
        with self._guard:
            lock, users = self._local.get(conversation_id, (threading.Lock(), 0))
            self._local[conversation_id] = (lock, users + 1)
        lock.acquire()
        return lock

    def _release_local(self, conversation_id: str) -> None:
        with self._guard:
            lock, users = self._local[conversation_id]
            if users <= 1:
                del self._local[conversation_id]
            else:
                self._local[conversation_id] = (lock, users - 1)


def notify_webhook(url: str, event: dict[str, Any], timeout_s: float = 5.0) -> None:
    """POST an event as JSON (best effort: a failure is logged, never raised; no personal text is sent)."""
    try:
        response = httpx.post(url, json=event, timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("escalation webhook failed for decision %s: %s", event.get("decision_id"), exc)
