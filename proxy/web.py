"""Browser sign-in on the sidecar (SPEC 7): GET /login/{secret}, POST /logout.

These routes do not take the sidecar's bearer token (a browser has none): they authenticate
users themselves, with the ``clawops_session`` cookie a login link sets, or an API token
(``Authorization: Bearer <token>``) for scripts. ``authenticate`` is what the claw proxy reuses.
"""

from __future__ import annotations

import html
import logging

from aiohttp import web

from core.errors import StorageError
from core.websessions import WebAuth
from proxy.sidecar import STATE

log = logging.getLogger(__name__)

COOKIE = "clawops_session"
AUTH = web.AppKey("web_auth", WebAuth)
LANDING = "/claws"
# Link-preview fetchers (Telegram's among them) open a link to draw its preview; they must not
# spend a one-time link meant for a person.
PREVIEW_AGENTS = ("telegrambot", "twitterbot", "slackbot", "discordbot", "whatsapp",
                  "facebookexternalhit")  # fmt: skip
# Pages that carry or follow a secret are neither cached nor referred onwards.
PRIVATE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
# GET / answers 200 without the token: the seed's healer checks `curl -sf http://localhost:9010`.
HOME = "/"
# The home page has no script, style or form: its policy allows nothing at all.
HOME_POLICY = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"


def setup_routes(app: web.Application) -> None:
    app[AUTH] = WebAuth(app[STATE].statuslog.db)
    # No implicit HEAD: a HEAD must not spend a login link either.
    app.router.add_get("/login/{secret}", login, allow_head=False)
    app.router.add_post("/logout", logout)
    app.router.add_get(HOME, home)
    # LANDING (the user's claws) is proxy.chat_page's, with the chat pages.


async def authenticate(request: web.Request) -> int | None:
    """The Telegram user id behind a request, or None.

    1. The ``clawops_session`` cookie, if it names a live session.
    2. Else ``Authorization: Bearer <api token>``, if it names an active token.
    """
    auth = request.app[AUTH]
    cookie = request.cookies.get(COOKIE)
    if cookie:
        user = await auth.session_user(cookie)
        if user is not None:
            return user
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return await auth.token_user(value.strip())
    return None


def page(title: str, body: str, status: int = 200) -> web.Response:
    """A tiny self-contained HTML page (``body`` is HTML; escape what you put in it)."""
    text = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<body style='font-family:system-ui,sans-serif;max-width:36em;margin:2em auto;"
        f"padding:0 1em'><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", headers=PRIVATE_HEADERS)


def _secure(request: web.Request) -> bool:
    public_url = request.app[STATE].public_url or ""
    return public_url.lower().startswith("https://")


async def login(request: web.Request) -> web.StreamResponse:
    agent = request.headers.get("User-Agent", "")
    if any(bot in agent.lower() for bot in PREVIEW_AGENTS):
        return page("clawops sign-in", "<p>Open this link in your browser to sign in.</p>")
    auth = request.app[AUTH]
    try:
        session = await auth.redeem_login(request.match_info["secret"], user_agent=agent)
    except StorageError as exc:
        log.warning("web: cannot redeem a login link: %s", exc)
        return page("Try again", "<p>Sign-in is unavailable right now; try again.</p>", 503)
    if session is None:
        return page(
            "Link no longer valid",
            "<p>Sorry: this link is no longer valid, ask the bot for a new one with /web.</p>",
            400,
        )
    response = web.Response(status=303, headers={"Location": LANDING, **PRIVATE_HEADERS})
    response.set_cookie(
        COOKIE, session, path="/", httponly=True, samesite="Lax", secure=_secure(request),
        max_age=int(auth.session_ttl.total_seconds()),
    )  # fmt: skip
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    cookie = request.cookies.get(COOKIE)
    if cookie:
        await request.app[AUTH].revoke_session(cookie)
    response = page("Signed out", "<p>You are signed out. /web in the bot signs you in.</p>")
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Lax", secure=_secure(request))
    return response


async def home(request: web.Request) -> web.StreamResponse:
    """What this server is and how to sign in; the status page may live here later."""
    node = html.escape(request.app[STATE].node)
    text = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>clawops · {node}</title><h1>clawops</h1>"
        f"<p>This is the sidecar of the clawops node <b>{node}</b>: the status API cron jobs "
        "report to, its health check and the web chat with the claws.</p>"
        "<p>To sign in, send <code>/web</code> to the bot in a private Telegram chat and open "
        f'the link it answers. Then <a href="{LANDING}">your claws</a> are here.</p></html>'
    )
    headers = {
        **PRIVATE_HEADERS,
        "Content-Security-Policy": HOME_POLICY,
        "X-Content-Type-Options": "nosniff",
    }
    return web.Response(text=text, content_type="text/html", headers=headers)
