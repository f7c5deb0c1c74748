"""The long-running asyncio tasks of a live module (subscriber, emitter, ...): started from
`app.on_startup`, cancelled and awaited from `app.on_shutdown`, so a stopping app leaves no
task behind and never waits on one that is already gone. A task that ends on its own is
dropped at once (short ones, e.g. re-reading a room after a message, do not pile up), and the
set holds a reference to every running one (asyncio keeps only weak ones: an unreferenced task
may be collected before it is done)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task] = set()

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        # Cancel again until each task is done: a task can swallow one cancellation (a client
        # library catching it inside a read) and go on looping, and a plain `await t` then
        # waits for ever (a suspect: once a LiveSubscriber test hung ten minutes, loop idle).
        while pending := [t for t in tasks if not t.done()]:
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=1.0)
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
