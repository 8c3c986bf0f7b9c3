"""Scheduled commands run without the node's secrets, except those a job lists in ``env``."""

from __future__ import annotations

import sys

from jobs.registry import builtin_jobs

SHOW = "import os; print(*(os.environ.get(n, '-') for n in ('BOT_TOKEN_T', 'SIDE_T', 'CLAWOPS_X')))"


async def test_a_command_job_inherits_only_the_secrets_it_lists(harness, monkeypatch):
    monkeypatch.setenv("BOT_TOKEN_T", "123:bot-secret")
    monkeypatch.setenv("SIDE_T", "sidecar-secret")
    monkeypatch.setenv("CLAWOPS_X", "node-only")
    argv = [sys.executable, "-c", SHOW]
    h = harness(
        {
            "telegram": {"token_env": "BOT_TOKEN_T"},
            "sidecar": {"token_env": "SIDE_T"},
            "jobs": {
                "commands": [
                    {"name": "plain", "machine": "here", "every": "1h", "argv": argv},
                    {
                        "name": "backup",
                        "machine": "here",
                        "every": "1h",
                        "argv": argv,
                        "env": ["SIDE_T", "CLAWOPS_X"],
                    },
                ]
            },
        }
    )
    for spec in builtin_jobs(h.config):
        if spec.name in ("plain", "backup"):
            h.runner.add(spec)
    plain, _ = await h.runner.run("plain")
    assert plain is not None and plain.data["stdout"].split() == ["-", "-", "-"]
    backup, _ = await h.runner.run("backup")
    assert backup is not None
    assert backup.data["stdout"].split() == ["-", "sidecar-secret", "node-only"]
