"""/web: a one-time link that signs the user in to the sidecar's web pages (SPEC 7)."""

from __future__ import annotations

from bot.commands import Command, Context, Reply
from bot.format import esc
from core.websessions import WebAuth


def base_url(ctx: Context) -> str:
    """Where browsers reach the sidecar: its public URL, else its own address."""
    sidecar = ctx.node.config.sidecar
    if sidecar.public_url:
        return sidecar.public_url.rstrip("/")
    host = sidecar.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{ctx.node.sidecar.port}"


async def web_command(ctx: Context) -> Reply:
    auth = WebAuth(ctx.node.db)
    secret = await auth.create_login(ctx.inv.user_id)
    minutes = int(auth.login_ttl.total_seconds() // 60)
    url = f"{base_url(ctx)}/login/{secret}"
    return Reply(
        f"🔑 Sign in to the web pages (works once, for {minutes} minutes; do not share it):\n"
        f"{esc(url)}"
    )


WEB_COMMANDS = [
    Command("web", "A one-time link to sign in on the web", web_command, private_only=True),
]
