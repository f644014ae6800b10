"""The reconcile queue: one reconcile per key at a time, merged triggers, backoff on Retry, none on Stalled."""

from __future__ import annotations

import asyncio

from modelservice.controller.queue import Backoff, Done, Key, Outcome, ReconcileQueue, Retry

A: Key = ("ns", "a")
B: Key = ("ns", "b")


async def test_triggers_while_queued_merge_and_while_running_rerun_once() -> None:
    calls: list[Key] = []
    running: set[Key] = set()
    overlap = False
    gate = asyncio.Event()

    async def reconcile(key: Key) -> Outcome:
        nonlocal overlap
        overlap = overlap or key in running
        running.add(key)
        calls.append(key)
        await gate.wait()
        running.discard(key)
        return Done()

    queue = ReconcileQueue(reconcile, workers=4)
    queue.add(A)
    queue.add(A)  # merged with the queued one
    queue.start()
    await asyncio.sleep(0.01)
    for _ in range(5):
        queue.add(A)  # while running: exactly one more reconcile afterwards
    queue.add(B)
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.sleep(0.05)
    await queue.stop()
    assert sorted(calls) == [A, A, B]
    assert not overlap


async def test_event_during_reconcile_that_echoes_its_own_write_is_not_news() -> None:
    calls: list[Key] = []
    gate = asyncio.Event()
    written: set[str] = set()

    async def reconcile(key: Key) -> Outcome:
        calls.append(key)
        await gate.wait()
        written.add("rv-2")  # the answer to the reconcile's write arrives after the watch event
        return Done()

    queue = ReconcileQueue(reconcile, workers=2)
    queue.start()
    queue.add(A)
    queue.add(B)
    await asyncio.sleep(0.01)
    queue.add(A, unless=lambda: "rv-2" in written)  # the echo of A's own write
    queue.add(B, unless=lambda: "rv-9" in written)  # someone else's change
    gate.set()
    await asyncio.sleep(0.05)
    await queue.stop()
    assert sorted(calls) == [A, B, B]


async def test_retry_backs_off_and_stalled_is_not_retried() -> None:
    calls: dict[Key, int] = {A: 0, B: 0}

    async def reconcile(key: Key) -> Outcome:
        calls[key] += 1
        if key == A:
            return Retry("API 500") if calls[A] < 3 else Done()
        return Done(stalled=True)

    queue = ReconcileQueue(reconcile, workers=2, backoff=Backoff(base=0.02, jitter=0))
    queue.start()
    queue.add(A)
    queue.add(B)
    await asyncio.sleep(0.3)
    await queue.stop()
    assert calls == {A: 3, B: 1}


async def test_exceptions_are_retried_not_fatal() -> None:
    calls = 0

    async def reconcile(key: Key) -> Outcome:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug")
        return Done()

    queue = ReconcileQueue(reconcile, workers=1, backoff=Backoff(base=0.01, jitter=0))
    queue.start()
    queue.add(A)
    await asyncio.sleep(0.1)
    await queue.stop()
    assert calls == 2


def test_backoff_grows_to_a_maximum() -> None:
    backoff = Backoff(base=1, factor=2, maximum=10, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 10, 10]
