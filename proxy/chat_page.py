"""The web chat page (SPEC 7): GET /claws lists the user's claws, GET /claws/{org}/{claw} chats.

The page is static HTML, CSS and JavaScript from ``proxy/static`` (no build step, no CDN); the
script talks to the claw through the proxy's WebSocket ``/api/ws/claws/{org}/{claw}`` on the
same origin. The server side only decides who may see the page: a signed-in user (cookie or API
token) who is a member of the org, for a claw that exists. A strict Content-Security-Policy
allows nothing but this origin (scripts, styles, and the WebSocket).
"""

from __future__ import annotations

import html
import logging
import re
from importlib.resources import files
from urllib.parse import quote

from aiohttp import web
from sqlalchemy import select

from core.claws import SLUG, Claw, Claws
from core.errors import InputError, StorageError
from core.orgs import is_member
from core.tables import org_members
from proxy.sidecar import STATE, json_error
from proxy.web import LANDING, PRIVATE_HEADERS, authenticate, page

log = logging.getLogger(__name__)

CHAT = "/claws/{org}/{claw}"
# Why the page's WebSocket was refused: a browser hides the HTTP answer of a failed upgrade, and
# a same-origin fetch of the socket's URL carries no Origin, so the page asks here instead.
CHECK = "/claws/{org}/{claw}/check"
ASSET = "/static/chat/{name}"
ASSETS = {"chat.js": "text/javascript", "chat.css": "text/css"}
# A Host header worth naming in the policy (else 'self' alone is used).
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def _static(name: str) -> str:
    return files("proxy").joinpath("static", name).read_text(encoding="utf-8")


def setup_routes(app: web.Application) -> None:
    app.router.add_get(LANDING, claws_list)
    app.router.add_get(CHAT, chat_page)
    app.router.add_get(CHECK, check)
    app.router.add_get(ASSET, asset)


def policy(request: web.Request) -> str:
    """The page's Content-Security-Policy: this origin only, and its WebSocket."""
    sockets = "'self'"
    if _HOST.match(request.host):
        sockets += f" ws://{request.host} wss://{request.host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {sockets}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


async def _user(request: web.Request) -> int | web.Response:
    """The signed-in user, or the page that says why not."""
    try:
        user = await authenticate(request)
    except StorageError as exc:
        log.warning("web: cannot check a session: %s", exc)
        return page("Try again", "<p>Sign-in is unavailable right now; try again.</p>", 503)
    if user is None:
        return page(
            "Not signed in",
            "<p>Ask the bot for a sign-in link with /web (in a private chat).</p>",
            401,
        )
    return user


async def claws_list(request: web.Request) -> web.StreamResponse:
    user = await _user(request)
    if isinstance(user, web.Response):
        return user
    db = request.app[STATE].statuslog.db
    query = select(org_members.c.org).where(org_members.c.user_id == user)
    async with db.connect() as conn:
        member_of = set((await conn.execute(query)).scalars())
    rows = [c for c in await Claws(db, None).list() if c.org in member_of]
    items = "".join(_claw_item(c) for c in rows)
    listing = f"<ul>{items}</ul>" if rows else "<p>No claws in your orgs yet.</p>"
    return page(
        "Your claws",
        f"<p>Signed in as Telegram user <b>{user}</b>.</p>{listing}"
        '<form method=post action="/logout"><button>Sign out</button></form>',
    )


def _claw_item(claw: Claw) -> str:
    """One claw: its name and status, its "Web chat" and (with a tunnel) "OpenClaw Gateway"."""
    name = f"{html.escape(claw.org)}/{html.escape(claw.slug)}"
    chat = f"/claws/{quote(claw.org, safe='')}/{quote(claw.slug, safe='')}"
    links = [f'<a href="{html.escape(chat)}">Web chat</a>']
    if claw.gateway_link:
        links.append(
            f'<a href="{html.escape(claw.gateway_link)}" rel="noopener noreferrer">'
            "OpenClaw Gateway</a>"
        )
    return (
        f'<li><a href="{html.escape(chat)}">{name}</a> · {html.escape(claw.status)} · '
        + " · ".join(links)
        + "</li>"
    )


async def chat_page(request: web.Request) -> web.StreamResponse:
    org, slug = request.match_info["org"], request.match_info["claw"]
    user = await _user(request)
    if isinstance(user, web.Response):
        # A page to sign in from: the chat itself needs a session.
        raise web.HTTPSeeOther(LANDING, headers=PRIVATE_HEADERS)
    db = request.app[STATE].statuslog.db
    if not (SLUG.match(org) and SLUG.match(slug)) or not await is_member(db, org, user):
        return page("Not allowed", "<p>You are not a member of this org.</p>", 403)
    try:
        await Claws(db, None).get(org, slug)
    except InputError:
        return page("No such claw", f"<p>There is no claw {html.escape(org)}/"
                    f"{html.escape(slug)}. <a href={LANDING}>Your claws</a></p>", 404)  # fmt: skip
    text = _static("chat.html").replace("{{org}}", org).replace("{{claw}}", slug)
    headers = {**PRIVATE_HEADERS, "Content-Security-Policy": policy(request)}
    return web.Response(text=text, content_type="text/html", headers=headers)


async def check(request: web.Request) -> web.StreamResponse:
    """JSON ``{"ok": true, "status"}``, or the refusal the proxy gives before the upgrade."""
    org, slug = request.match_info["org"], request.match_info["claw"]
    user = await _user(request)
    if isinstance(user, web.Response):
        return json_error(user.status, "not signed in (or the session ended): /web in the bot")
    db = request.app[STATE].statuslog.db
    if not await is_member(db, org, user):
        return json_error(403, f"you are not a member of {org}")
    try:
        claw = await Claws(db, None).get(org, slug)
    except InputError:
        return json_error(404, f"no claw {org}/{slug}")
    if claw.status != "active":
        return json_error(409, f"claw {org}/{slug} is {claw.status}, not active")
    return web.json_response({"ok": True, "status": claw.status}, headers=PRIVATE_HEADERS)


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound(text="no such file")
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    return web.Response(text=_static(name), content_type=ASSETS[name], headers=headers)
