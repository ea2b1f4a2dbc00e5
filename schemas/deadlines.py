"""`asyncio.timeout` for many awaits of one duration, with one timer for all of them.

A timeout's own timer (armed and cancelled per call, as `asyncio.timeout` and
aiohttp's per-request `ClientTimeout(total=...)` do) costs several microseconds,
more than the rest of many short awaits. Calls of one `timeout_s` are due in the
order they began, so a deque holds them and one timer, at the first due time plus
`slack_s`, cancels every overdue call; `run` turns that cancellation into a
TimeoutError as `asyncio.timeout` does (a cancellation from elsewhere stays one).
A call ends at most `slack_s` late. Used by the HTTP sink per delivery and by the
gateway's ASGI path for body reads (`body_timeout_s`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class _Call:
    __slots__ = ("cancelling", "due", "expired", "task")

    def __init__(self, due: float, task: asyncio.Task[object] | None) -> None:
        self.due = due
        self.task = task  # None once the call ended
        self.cancelling = task.cancelling() if task is not None else 0
        self.expired = False


class Deadlines:
    def __init__(self, timeout_s: float, slack_s: float = 0.05) -> None:
        self.timeout_s = timeout_s
        self.slack_s = min(slack_s, timeout_s / 4)
        self._due: deque[_Call] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None  # a new loop arms anew

    async def run(self, awaitable: Awaitable[T]) -> T:
        """``await awaitable``, or TimeoutError once `timeout_s` has passed."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        due = self._due
        if self._timer_loop is not loop:  # another loop's calls and timer are not ours
            due.clear()
            self._timer, self._timer_loop = None, loop
        while due and due[0].task is None:  # calls that ended: nothing to watch there
            due.popleft()
        call = _Call(loop.time() + self.timeout_s, task)
        due.append(call)
        if self._timer is None:
            self._timer = loop.call_at(call.due + self.slack_s, self._sweep)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if call.expired and task is not None and task.uncancel() <= call.cancelling:
                raise TimeoutError from None
            raise
        finally:
            call.task = None

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        now, due = loop.time(), self._due
        self._timer = None
        try:
            while due and (due[0].due <= now or due[0].task is None):
                call = due.popleft()
                if call.task is not None:
                    call.expired = True
                    call.task.cancel()
        finally:  # whatever happened, the calls still due keep a timer
            if due:
                self._timer = loop.call_at(due[0].due + self.slack_s, self._sweep)
