"""A level-triggered work queue: each ModelService key is reconciled by one worker at a time.

Watch events (of the ModelService or of any of its children) only *add the key*; keys added while queued are
merged, keys added while being reconciled are reconciled once more afterwards. A failed reconcile is retried with
exponential backoff per key (``Retry``); a permanent problem (``Stalled``) is not retried until the next change.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from modelservice import metrics

logger = logging.getLogger(__name__)

Key = tuple[str, str]


@dataclass(frozen=True)
class Done:
    """Reconciled; nothing to retry."""

    stalled: bool = False  # a problem only a spec change (or a cluster change) can fix: do not retry
    requeue_after: float | None = None  # look again after this many seconds (a canary step's analysis or pause)


@dataclass(frozen=True)
class Retry:
    """Try again later (API error, conflict): with backoff, or after ``delay`` seconds when set."""

    reason: str
    delay: float | None = None


Outcome = Done | Retry


@dataclass(frozen=True)
class Backoff:
    base: float = 0.5
    factor: float = 2.0
    maximum: float = 300.0
    jitter: float = 0.1

    def delay(self, failures: int) -> float:
        value = min(self.maximum, self.base * self.factor ** max(0, failures - 1))
        return value * (1 + random.uniform(-self.jitter, self.jitter))


class ReconcileQueue:
    """Deduplicating queue of keys with ``workers`` concurrent reconciles, never two for the same key."""

    def __init__(
        self,
        reconcile: Callable[[Key], Awaitable[Outcome]],
        workers: int = 16,
        backoff: Backoff | None = None,
    ) -> None:
        self._reconcile = reconcile
        self._workers = workers
        self._backoff = backoff or Backoff()
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._active: set[Key] = set()
        self._again: set[Key] = set()
        self._deferred: dict[Key, list[Callable[[], bool]]] = {}
        self._failures: dict[Key, int] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: Key, unless: Callable[[], bool] | None = None) -> None:
        """Reconcile ``key`` soon (at most once more, however often it is added meanwhile).

        ``unless``: for a watch event that arrives while ``key`` is being reconciled, a check run when that
        reconcile ends; True means the event only reported what the reconcile itself wrote (its answer can come
        after the watch event), so no further reconcile is needed for it."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if key in self._active:
            if unless is None:
                self._again.add(key)
            else:
                self._deferred.setdefault(key, []).append(unless)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_after(self, key: Key, delay: float) -> None:
        """Reconcile ``key`` after ``delay`` seconds, unless something adds it sooner."""
        if key in self._timers or key in self._queued:
            return
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    @property
    def depth(self) -> int:
        return len(self._queued) + len(self._active)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work(), name=f"reconcile-{i}") for i in range(self._workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            try:
                outcome = await self._run(key)
            finally:
                self._active.discard(key)
            deferred = self._deferred.pop(key, [])
            if key in self._again or not all(check() for check in deferred):
                self._again.discard(key)
                self.add(key)
            elif isinstance(outcome, Retry):
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = outcome.delay if outcome.delay is not None else self._backoff.delay(failures)
                logger.info("%s/%s: retrying in %.1fs: %s", key[0], key[1], delay, outcome.reason)
                self.add_after(key, delay)
            elif outcome.requeue_after is not None:
                self.add_after(key, outcome.requeue_after)

    async def _run(self, key: Key) -> Outcome:
        started = time.perf_counter()
        outcome: Outcome
        try:
            outcome = await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or an unexpected answer: log it, back off, never hot-loop
            logger.exception("%s/%s: reconcile failed", key[0], key[1])
            outcome = Retry(f"{type(exc).__name__}: {exc}")
            metrics.RECONCILES.labels(result="error").inc()
        else:
            if isinstance(outcome, Retry):
                metrics.RECONCILES.labels(result="retry").inc()
            else:
                metrics.RECONCILES.labels(result="stalled" if outcome.stalled else "success").inc()
                self._failures.pop(key, None)
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)
        return outcome
