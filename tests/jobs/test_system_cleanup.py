"""System cleanup: the configured tasks run for real on their machine, in order, with timeouts."""

from __future__ import annotations

import sys
import time

from core.executors import LocalExecutor
from jobs.system_cleanup import system_cleanup


async def test_tasks_run_in_order_and_a_failing_or_slow_task_fails_the_run(harness, tmp_path):
    marker = tmp_path / "cleaned"
    write = f"open({str(marker)!r}, 'w').write('x'); print('freed 3 GB')"
    fail = "import sys; print('disk busy', file=sys.stderr); sys.exit(4)"
    tasks = [
        {"machine": "here", "argv": [sys.executable, "-c", write]},
        {"machine": "here", "argv": [sys.executable, "-c", fail]},
        {"machine": "here", "argv": ["sleep", "30"], "timeout": "1s"},
    ]  # fmt: skip
    h = harness({"jobs": {"system_cleanup": {"tasks": tasks}}})
    started = time.monotonic()
    result = await system_cleanup(h.ctx)
    assert time.monotonic() - started < 10
    done = result.data["machines"]["here"]
    assert [d["ok"] for d in done] == [True, False, False]
    assert marker.read_text() == "x" and "freed 3 GB" in done[0]["output"]
    assert done[1]["exit"] == 4 and "disk busy" in done[1]["error"]
    assert done[2]["exit"] is None and "timed out after 1 s" in done[2]["error"]
    assert result.outcome == "failed" and result.summary.startswith("here: 1/3 ok")


async def test_all_tasks_passing_is_an_ok_run_and_no_tasks_is_ok_too(harness):
    h = harness({"jobs": {"system_cleanup": {"tasks": [{"machine": "here", "argv": ["true"]}]}}})
    result = await system_cleanup(h.ctx)
    assert result.outcome == "ok" and result.summary == "here: 1/1 ok"
    empty = await system_cleanup(harness().ctx)
    assert empty.outcome == "ok" and empty.data == {"machines": {}}


async def test_machines_run_concurrently_and_a_machines_tasks_one_after_another(harness):
    there = {"name": "there", "os": "linux", "address": "127.0.0.1",
             "ssh": {"host": "127.0.0.1", "port": 1}}  # fmt: skip
    h = harness({
        "machines": [{"name": "here", "os": "linux", "address": "127.0.0.1", "local": True},
                     there],
        "jobs": {"system_cleanup": {"tasks": [
            {"machine": "here", "argv": ["sleep", "1"]},
            {"machine": "here", "argv": ["sleep", "1"]},
            {"machine": "there", "argv": ["sleep", "1.5"]},
        ]}},
    })  # fmt: skip
    # "there" is a second machine that happens to be this one too: run its argv locally.
    h.fleet.executors["there"] = LocalExecutor(h.config.machine("there"))
    started = time.monotonic()
    result = await system_cleanup(h.ctx)
    took = time.monotonic() - started
    assert result.outcome == "ok" and result.summary == "here: 2/2 ok; there: 1/1 ok"
    assert 2 <= took < 3.4  # here's two in a row (2 s), there's alongside (1.5 s)
