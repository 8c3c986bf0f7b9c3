"""claws_health: asks every Mini's agent for its health and its claws' gateways (issue 14).

The work is ``core.clawwatch``; this job builds it from ``[jobs.claws_health]`` and the claws
key (a Mini whose token is sealed cannot be asked without it: that Mini is counted as a miss,
with the reason). With no Mini in the inventory it only lets go the alerts of Minis removed.
"""

from __future__ import annotations

from core.clawwatch import ClawWatch, WatchSettings
from core.crypto import Keyring, SecretsError
from jobs.base import JobContext, JobResult


async def claws_health(ctx: JobContext) -> JobResult:
    keyring: Keyring | None
    try:
        keyring = Keyring.from_env(ctx.config.claws.secret_key_env)
    except SecretsError:
        keyring = None
    settings = WatchSettings.from_job(ctx.config.jobs.claws_health)
    summary = await ClawWatch(ctx.db, ctx.alerts, keyring, settings).round()
    if summary.flips:
        ctx.wake_notifier()
    return JobResult("ok", summary.text(), summary.data())
