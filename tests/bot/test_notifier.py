"""The alert notifier's own loop: it stops when asked, whatever it was doing."""

from __future__ import annotations

import asyncio

from bot.notify import Notifier
from core.alerts import Alerts


async def test_a_stop_right_after_a_wake_ends_the_notifier(db):
    # Python 3.11's wait_for swallows a cancel that arrives as the awaited event fires: the loop
    # went on and stop() waited for it forever (a node's stop hung in a CI run).
    for _ in range(20):
        notifier = Notifier(Alerts(db), lambda: None, None, interval=0.2)
        notifier.start()
        for _ in range(3):
            await asyncio.sleep(0)  # the loop is waiting for a wake
        notifier.wake()
        await asyncio.sleep(0)  # the wake has reached the waiting loop
        task = notifier._task
        assert task is not None
        stopping = asyncio.ensure_future(notifier.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)
        if not done:
            task.cancel()  # end it for good, then fail
            await asyncio.wait({stopping}, timeout=5)
        assert done, "the notifier did not stop"
        assert task.done()
