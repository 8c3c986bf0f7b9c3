"""A local Telegram Bot API server: the bot talks to it over HTTP exactly as to Telegram.

It serves the methods python-telegram-bot calls (getMe, deleteWebhook, getUpdates with real long
polling, sendMessage, editMessageText, editMessageReplyMarkup, answerCallbackQuery,
setMyCommands, getMyCommands, sendDocument, sendChatAction) with Telegram's JSON shapes and its
error format (``{"ok": false, "error_code", "description", "parameters"}`` with that HTTP status).
Like Telegram it allows one getUpdates consumer per token: a second poller terminates the waiting
one with 409 Conflict, and the server counts those. It checks what Telegram checks that matters
here: text length (4096) and, for ``parse_mode=HTML``, that the markup parses.

A control API under ``/control/`` (and the same methods in Python) injects user messages, edits
of them and button presses, reads what the bot sent (with long polling; chat actions such as
"typing" are recorded too, as kind "action", and returned only when asked for), and makes the
next N calls of a method fail (a 429 with retry_after, a 502) to test retries. Limits: one bot
user per server, no webhooks, no media but documents, files are kept in memory.

Who may talk to it (bind it to loopback only; any web page the operator opens can still send
requests to loopback, so the server checks):

1. Every route refuses a Host header that is not a loopback name (421): a page that rebinds its
   own DNS name to 127.0.0.1 sends its own name as the Host.
2. ``/control/`` routes need ``Authorization: Bearer <control_secret>`` (401), a secret made per
   start; ``write_access_file`` stores it with the URL in a 0600 file for ``clawops chat``.
3. Their POSTs must be ``application/json`` (415): a cross-site form or a ``text/plain`` fetch
   cannot send that without a CORS preflight, which this server never answers.
4. With ``token`` set, the Bot API answers only that bot token (401 otherwise, as Telegram does),
   so a page cannot read updates or send as the bot with a guessed token.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aiohttp import web

from core.httpedge import bearer_token, host_allowed, token_matches
from core.secrets import write_private

TEXT_LIMIT = 4096
ALLOWED_TAGS = frozenset(
    ("b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "a", "code", "pre", "span",
     "tg-spoiler", "tg-emoji", "blockquote")
)  # fmt: skip
URL_SCHEMES = ("http://", "https://", "tg://")
JSON_PARAMS = ("reply_markup", "scope", "commands", "reply_parameters", "entities")
ACCESS_FILE = "local-bot-api.json"  # in the node's data dir: the URL and the control secret


def random_bot_token(bot_id: int = 7000000001) -> str:
    """A bot token in Telegram's ``<id>:<secret>`` shape (what python-telegram-bot expects)."""
    return f"{bot_id}:{secrets.token_urlsafe(32)}"


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (any port): ``localhost:9011``,
    ``127.0.0.1``, ``[::1]:9011`` (the sidecar's and the agent's rule with no names added)."""
    return host_allowed(host)


def read_access_file(path: Path) -> tuple[str, str]:
    """The URL and control secret a running server wrote (``OSError``/``ValueError`` if none)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), str) for k in ("url", "secret")
    ):
        raise ValueError(f"{path} does not hold a url and a secret")
    return data["url"], data["secret"]


class _HtmlCheck(HTMLParser):
    """Telegram's HTML mode: only a few tags, every one closed, entities well formed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.error = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.error = self.error or f'Unsupported start tag "{tag}"'
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.error = self.error or f'Unmatched end tag "{tag}"'

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            self.error = self.error or f'Unsupported entity "&{name};"'


def html_error(text: str) -> str:
    """Why Telegram would refuse ``text`` in HTML parse mode ("" if it would not)."""
    checker = _HtmlCheck()
    checker.feed(text)
    checker.close()
    if checker.error:
        return checker.error
    if checker.stack:
        return f'Can\'t find end tag corresponding to start tag "{checker.stack[-1]}"'
    if "<" in checker.rawdata:
        return "Unclosed start tag"
    return ""


class ApiError(Exception):
    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def response(self) -> web.Response:
        body: dict[str, Any] = {"ok": False, "error_code": self.code,
                                "description": self.description}  # fmt: skip
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.code)


@dataclass
class Sent:
    """One thing the bot did that a user would see: a message, an edit, a document, an answer."""

    seq: int
    kind: str  # message | edit | document | answer | action (text: the action, e.g. "typing")
    chat_id: int
    message_id: int | None
    text: str
    buttons: list[list[dict[str, Any]]] = field(default_factory=list)
    filename: str | None = None
    content: bytes | None = None

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq, "kind": self.kind, "chat_id": self.chat_id,
            "message_id": self.message_id, "text": self.text, "buttons": self.buttons,
        }  # fmt: skip
        if self.filename is not None:
            data["filename"] = self.filename
            data["size"] = len(self.content or b"")
            data["content"] = (self.content or b"").decode("utf-8", "replace")
        return data


class LocalTelegram:
    """The server: state, Bot API methods, control API; run it with ``start``/``stop``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        bot_id: int = 7000000001,
        bot_username: str = "clawops_local_bot",
        token: str | None = None,
    ) -> None:
        self.host, self.port = host, port
        # None: any bot token is served (tests that play Telegram for a configured token).
        self.token = token
        self.control_secret = secrets.token_urlsafe(32)
        self._access_file: Path | None = None
        self.bot_user = {"id": bot_id, "is_bot": True, "first_name": "clawops",
                         "username": bot_username}  # fmt: skip
        self.updates: list[dict[str, Any]] = []
        self.next_update_id = 1
        self.next_message_id: dict[int, int] = {}
        self.messages: dict[tuple[int, int], dict[str, Any]] = {}
        self.sent: list[Sent] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self.calls: dict[str, int] = {}
        self.conflicts = 0
        self.faults: dict[str, list[ApiError]] = {}
        # A method whose gate is here waits for it to open (a Telegram slow to answer);
        # ``waiting`` counts the requests that reached a gate.
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: dict[str, int] = {}
        self._changed = asyncio.Condition()
        self._pollers: dict[str, asyncio.Future[None]] = {}
        self._runner: web.AppRunner | None = None
        self._closing = False

    # -- running -----------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=50 * 1024 * 1024, middlewares=[self._guard])
        app.router.add_route("*", "/bot{token}/{method}", self._api)
        app.router.add_post("/control/message", self._control_message)
        app.router.add_post("/control/press", self._control_press)
        app.router.add_get("/control/sent", self._control_sent)
        app.router.add_post("/control/fail", self._control_fail)
        app.router.add_get("/control/state", self._control_state)
        return app

    async def start(self) -> None:
        # A client that hangs up (a killed bot, a stopped poller) ends its getUpdates at once, as
        # at Telegram: only a poller still connected is terminated by a newer one (a 409).
        self._closing = False
        self._runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, handler_cancellation=True
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    def write_access_file(self, data_dir: Path) -> Path:
        """Write the URL and the control secret to ``<data_dir>/local-bot-api.json`` (0600 from
        creation, replaced atomically); ``stop`` removes it."""
        path = data_dir / ACCESS_FILE
        body = json.dumps({"url": self.url, "secret": self.control_secret})
        write_private(path, body.encode())
        self._access_file = path
        return path

    async def stop(self) -> None:
        if self._access_file is not None:
            self._access_file.unlink(missing_ok=True)
            self._access_file = None
        for waiter in self._pollers.values():
            if not waiter.done():
                waiter.cancel()
        # Long polls of the sent log (a `clawops chat` following along) answer now, so the
        # runner's graceful shutdown does not wait out their timeouts.
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> LocalTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/bot"

    @property
    def base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    # -- what users do (control API, also callable from Python) -------------------------------

    async def inject_message(self, chat_id: int, user_id: int, text: str, *,
                             chat_type: str | None = None, username: str | None = None,
                             first_name: str = "User") -> dict[str, int]:  # fmt: skip
        message = self._message(chat_id, text, chat_type, self._user(user_id, username, first_name))
        if text.startswith("/"):
            message["entities"] = [{"type": "bot_command", "offset": 0,
                                    "length": len(text.split()[0])}]  # fmt: skip
        update_id = await self._push({"message": message})
        return {"update_id": update_id, "message_id": message["message_id"]}

    async def inject_edit(self, chat_id: int, message_id: int, text: str) -> dict[str, int]:
        """The user edits their message ``message_id``: an ``edited_message`` update."""
        message = self.messages.get((chat_id, message_id))
        if message is None or message["from"].get("is_bot"):
            raise ApiError(400, "Bad Request: message can't be edited")
        message = {**message, "text": text, "edit_date": int(time.time())}
        message.pop("entities", None)
        if text.startswith("/"):
            message["entities"] = [
                {"type": "bot_command", "offset": 0, "length": len(text.split()[0])}
            ]
        self.messages[(chat_id, message_id)] = message
        update_id = await self._push({"edited_message": message})
        return {"update_id": update_id, "message_id": message_id}

    async def press(self, chat_id: int, user_id: int, message_id: int, data: str, *,
                    username: str | None = None) -> dict[str, Any]:  # fmt: skip
        message = self.messages.get((chat_id, message_id))
        if message is None:
            raise ApiError(400, "Bad Request: message not found")
        query_id = f"{self.next_update_id}{int(time.time())}"
        query = {"id": query_id, "from": self._user(user_id, username, "User"),
                 "chat_instance": str(chat_id), "message": message, "data": data}  # fmt: skip
        update_id = await self._push({"callback_query": query})
        return {"update_id": update_id, "callback_query_id": query_id}

    def fail(self, method: str, code: int, count: int = 1, *, retry_after: int | None = None,
             description: str | None = None) -> None:  # fmt: skip
        """Make the next ``count`` calls of ``method`` answer an error."""
        text = description or {429: "Too Many Requests: retry after", 502: "Bad Gateway"}.get(
            code, "Error"
        )
        self.faults.setdefault(method, []).extend(
            ApiError(code, text, retry_after) for _ in range(count)
        )

    async def wait_sent(
        self,
        after: int = 0,
        timeout: float = 5.0,
        chat_id: int | None = None,
        *,
        actions: bool = False,
    ) -> list[Sent]:
        """What the bot did after ``after`` (a seq), waiting up to ``timeout`` for something
        (chat actions only with ``actions``: they come and go while a command runs)."""

        def found() -> list[Sent]:
            return [
                s
                for s in self.sent
                if s.seq > after
                and chat_id in (None, s.chat_id)
                and (actions or s.kind != "action")
            ]

        async with self._changed:
            try:
                async with asyncio.timeout(timeout):  # not wait_for: it may swallow a cancel
                    await self._changed.wait_for(lambda: bool(found()) or self._closing)
            except TimeoutError:
                return []
        return found()

    # -- internals ---------------------------------------------------------------------------

    def _user(self, user_id: int, username: str | None, first_name: str) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
        if username:
            user["username"] = username
        return user

    def _message(self, chat_id: int, text: str, chat_type: str | None,
                 sender: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
        message_id = self.next_message_id.get(chat_id, 0) + 1
        self.next_message_id[chat_id] = message_id
        kind = chat_type or ("private" if chat_id > 0 else "supergroup")
        chat: dict[str, Any] = {"id": chat_id, "type": kind}
        chat.update({"first_name": "User"} if kind == "private" else {"title": "ops"})
        message = {"message_id": message_id, "date": int(time.time()), "chat": chat,
                   "from": sender, "text": text}  # fmt: skip
        self.messages[(chat_id, message_id)] = message
        return message

    async def _push(self, payload: dict[str, Any]) -> int:
        update_id = self.next_update_id
        self.next_update_id += 1
        self.updates.append({"update_id": update_id, **payload})
        async with self._changed:
            self._changed.notify_all()
        return update_id

    async def _record(self, item: Sent) -> None:
        self.sent.append(item)
        async with self._changed:
            self._changed.notify_all()

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            body = await request.json()
            params.update(body if isinstance(body, dict) else {})
        elif request.method == "POST":
            for key, value in (await request.post()).items():
                params[key] = value
        for key in JSON_PARAMS:
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    raise ApiError(400, f"Bad Request: can't parse {key} JSON object") from None
        return params

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Host, control secret and content type checks (see the module docstring)."""
        if not loopback_host(request.headers.get("Host", "")):
            return ApiError(421, "Misdirected Request: Host is not a loopback name").response()
        if request.path.startswith("/control/"):
            if not token_matches(bearer_token(request), self.control_secret):
                return ApiError(
                    401,
                    "Unauthorized: the control secret is missing or wrong (it is "
                    "in local-bot-api.json in the node's data dir)",
                ).response()
            if request.method != "GET" and request.content_type != "application/json":
                return ApiError(415, "Unsupported Media Type: send application/json").response()
        return await handler(request)  # type: ignore[no-any-return]

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.token is not None and not token_matches(request.match_info["token"], self.token):
            return ApiError(401, "Unauthorized").response()
        try:
            faults = self.faults.get(method)
            if faults:
                raise faults.pop(0)
            handler = getattr(self, f"_m_{method}", None)
            if handler is None:
                raise ApiError(404, "Not Found: method not found")
            params = await self._params(request)
            gate = self.gates.get(method)
            if gate is not None:
                self.waiting[method] = self.waiting.get(method, 0) + 1
                await gate.wait()
            result = await handler(request.match_info["token"], params)
        except ApiError as exc:
            return exc.response()
        return web.json_response({"ok": True, "result": result})

    def _chat_id(self, params: dict[str, Any]) -> int:
        try:
            return int(params["chat_id"])
        except (KeyError, ValueError):
            raise ApiError(400, "Bad Request: chat_id is empty or invalid") from None

    def _text(self, params: dict[str, Any], key: str = "text") -> str:
        text = str(params.get(key) or "")
        if key == "text" and not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > TEXT_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        if str(params.get("parse_mode", "")).upper() == "HTML":
            problem = html_error(text)
            if problem:
                raise ApiError(400, f"Bad Request: can't parse entities: {problem}")
        return text

    @staticmethod
    def _buttons(params: dict[str, Any]) -> list[list[dict[str, Any]]]:
        markup = params.get("reply_markup") or {}
        rows = markup.get("inline_keyboard", []) if isinstance(markup, dict) else []
        for row in rows:
            for button in row:
                url = button.get("url") if isinstance(button, dict) else None
                # Like Telegram: a URL button takes an HTTP(S) or tg:// URL only.
                if url is not None and not str(url).lower().startswith(URL_SCHEMES):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
        return [list(row) for row in rows]

    # Bot API methods (token, params) -> result

    async def _m_getMe(self, token: str, params: dict[str, Any]) -> Any:
        return self.bot_user

    async def _m_deleteWebhook(self, token: str, params: dict[str, Any]) -> Any:
        return True

    _m_close = _m_logOut = _m_deleteWebhook

    async def _m_sendChatAction(self, token: str, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        action = str(params.get("action") or "")
        if not action:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        await self._record(Sent(len(self.sent) + 1, "action", chat_id, None, action))
        return True

    async def _m_getUpdates(self, token: str, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        limit = min(int(params.get("limit") or 100), 100)
        timeout = float(params.get("timeout") or 0)
        if offset:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        previous = self._pollers.get(token)
        if previous is not None and not previous.done():
            # Like Telegram: the poll already waiting is terminated by this one.
            previous.set_exception(ApiError(409, "Conflict: terminated by other getUpdates "
                                            "request; make sure that only one bot instance "
                                            "is running"))  # fmt: skip
            self.conflicts += 1
        me: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pollers[token] = me

        async def arrived() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: bool(self.updates))

        try:
            if not self.updates and timeout > 0:
                waiter = asyncio.ensure_future(arrived())
                done, _ = await asyncio.wait({waiter, me}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                waiter.cancel()
                if me in done:
                    me.result()  # raises the 409 set by a newer poller
        finally:
            if self._pollers.get(token) is me:
                del self._pollers[token]
        return self.updates[:limit]

    async def _m_sendMessage(self, token: str, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        text = self._text(params)
        buttons = self._buttons(params)
        message = self._message(chat_id, text, None, self.bot_user)
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        await self._record(
            Sent(len(self.sent) + 1, "message", chat_id, message["message_id"], text, buttons)
        )
        return message

    def _stored(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        message = self.messages.get((chat_id, int(params.get("message_id") or 0)))
        if message is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return message

    async def _m_editMessageText(self, token: str, params: dict[str, Any]) -> Any:
        message = self._stored(params)
        text = self._text(params)
        buttons = self._buttons(params)
        markup = params.get("reply_markup")
        if text == message.get("text") and markup == message.get("reply_markup"):
            raise ApiError(400, "Bad Request: message is not modified")
        message["text"] = text
        message.pop("reply_markup", None)
        if markup:
            message["reply_markup"] = markup
        chat_id = message["chat"]["id"]
        await self._record(
            Sent(len(self.sent) + 1, "edit", chat_id, message["message_id"], text, buttons)
        )
        return message

    async def _m_editMessageReplyMarkup(self, token: str, params: dict[str, Any]) -> Any:
        message = self._stored(params)
        message["reply_markup"] = params.get("reply_markup") or {}
        await self._record(Sent(len(self.sent) + 1, "edit", message["chat"]["id"],
                                message["message_id"], message.get("text", ""),
                                self._buttons(params)))  # fmt: skip
        return message

    async def _m_answerCallbackQuery(self, token: str, params: dict[str, Any]) -> Any:
        if not params.get("callback_query_id"):
            raise ApiError(400, "Bad Request: query is too old or query ID is invalid")
        await self._record(Sent(len(self.sent) + 1, "answer", 0, None,
                                str(params.get("text") or "")))  # fmt: skip
        return True

    async def _m_setMyCommands(self, token: str, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: commands must be a list")
        self.commands[json.dumps(params.get("scope") or {"type": "default"}, sort_keys=True)] = (
            commands
        )
        return True

    async def _m_getMyCommands(self, token: str, params: dict[str, Any]) -> Any:
        key = json.dumps(params.get("scope") or {"type": "default"}, sort_keys=True)
        return self.commands.get(key, [])

    async def _m_sendDocument(self, token: str, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        document = params.get("document")
        if not isinstance(document, web.FileField):
            raise ApiError(400, "Bad Request: there is no document in the request")
        content = document.file.read()
        caption = self._text(params, "caption")
        message = self._message(chat_id, "", None, self.bot_user)
        message.pop("text")
        message["document"] = {
            "file_id": f"doc{len(self.sent)}",
            "file_unique_id": "u",
            "file_name": document.filename,
            "file_size": len(content),
        }
        if caption:
            message["caption"] = caption
        await self._record(Sent(len(self.sent) + 1, "document", chat_id, message["message_id"],
                                caption, [], document.filename, content))  # fmt: skip
        return message

    # -- control API routes ------------------------------------------------------------------

    async def _control_message(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = await self.inject_message(
                int(body["chat_id"]), int(body["user_id"]), str(body["text"]),
                chat_type=body.get("chat_type"), username=body.get("username"),
                first_name=body.get("first_name") or "User",
            )  # fmt: skip
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        return web.json_response(result)

    async def _control_press(self, request: web.Request) -> web.Response:
        body = await request.json()
        try:
            result = await self.press(int(body["chat_id"]), int(body["user_id"]),
                                      int(body["message_id"]), str(body["data"]))  # fmt: skip
        except ApiError as exc:
            return web.json_response({"error": exc.description}, status=400)
        except (KeyError, ValueError, TypeError) as exc:
            return web.json_response({"error": f"bad request: {exc}"}, status=400)
        return web.json_response(result)

    async def _control_sent(self, request: web.Request) -> web.Response:
        after = int(request.query.get("after", "0"))
        timeout = min(float(request.query.get("timeout", "0")), 60.0)
        chat = request.query.get("chat_id")
        actions = request.query.get("actions", "") in ("1", "true")
        items = await self.wait_sent(after, timeout, int(chat) if chat else None, actions=actions)
        last = max([after, *(s.seq for s in self.sent)])
        return web.json_response({"items": [s.as_json() for s in items], "last": last})

    async def _control_fail(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.fail(str(body["method"]), int(body["code"]), int(body.get("count", 1)),
                  retry_after=body.get("retry_after"))  # fmt: skip
        return web.json_response({"ok": True})

    async def _control_state(self, request: web.Request) -> web.Response:
        return web.json_response({"conflicts": self.conflicts, "calls": self.calls,
                                  "commands": self.commands,
                                  "pending_updates": len(self.updates)})  # fmt: skip
