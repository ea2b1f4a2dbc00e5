"""`Deadlines`: asyncio.timeout for many awaits of one duration, one timer for all."""

from __future__ import annotations

import asyncio
import time

import pytest

from schemas.deadlines import Deadlines


def test_in_time_returns_the_result_and_late_raises_timeout() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(0.2, slack_s=0.01)
        assert await deadlines.run(asyncio.sleep(0.01, "done")) == "done"
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await deadlines.run(asyncio.sleep(5))
        assert 0.2 <= time.monotonic() - started < 1.0
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_many_calls_each_get_their_own_due_time() -> None:
    async def scenario() -> list[str]:
        deadlines = Deadlines(0.3, slack_s=0.01)

        async def call(delay: float) -> str:
            try:
                return await deadlines.run(asyncio.sleep(delay, "ok"))
            except TimeoutError:
                return "timeout"

        first = [asyncio.create_task(call(d)) for d in (0.05, 5, 0.1, 5)]
        await asyncio.sleep(0.2)  # begun later: due later, while the first ones expire
        later = [asyncio.create_task(call(d)) for d in (0.05, 0.2)]
        return await asyncio.gather(*first, *later)

    assert asyncio.run(scenario()) == ["ok", "timeout", "ok", "timeout", "ok", "ok"]


def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    async def scenario() -> None:
        deadlines = Deadlines(5)
        task = asyncio.create_task(deadlines.run(asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        # cancelled from elsewhere as the deadline expires: still cancelled, not a timeout
        short = Deadlines(0.05, slack_s=0.0)

        async def both() -> None:
            await short.run(asyncio.sleep(10))

        task = asyncio.create_task(both())
        await asyncio.sleep(0.03)
        task.cancel()  # first: the deadline fires later into an already-cancelled task
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())


def test_a_new_loop_starts_afresh() -> None:
    deadlines = Deadlines(0.1, slack_s=0.0)

    async def late() -> None:
        with pytest.raises(TimeoutError):
            await deadlines.run(asyncio.sleep(5))

    asyncio.run(late())
    asyncio.run(late())  # the first loop's timer and calls are gone with it
