// The web chat page: talks to one claw through the sidecar's WebSocket proxy (SPEC 7).
// Protocol: wait for the proxy's own "proxy.ready" event (it carries the sessionKey), then
// OpenClaw protocol 4 requests chat.history / chat.send / chat.abort, and "chat" events with
// state delta / final / error / aborted. Everything from the wire is shown with textContent.
"use strict";

(() => {
  const root = document.getElementById("chat");
  const org = root.dataset.org;
  const claw = root.dataset.claw;
  const log = document.getElementById("log");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const sendButton = document.getElementById("send");
  const stopButton = document.getElementById("stop");
  const statusLine = document.getElementById("status");

  // Close codes of the proxy (the browser <-> proxy contract) and whether to reconnect.
  const CLOSES = {
    1001: ["the node is shutting down", true],
    4400: ["the proxy refused a frame from this page", true],
    4401: ["your session ended; ask the bot for a new link with /web", false],
    4408: ["disconnected after a quiet while", false],
    4502: ["the claw's gateway is unreachable", true],
    4503: ["the claw's gateway refused the connection", true],
    4504: ["the claw's gateway closed the connection", true],
  };
  // Refusals before the upgrade (HTTP statuses) that a retry will not fix.
  const FINAL_REFUSALS = new Set([401, 403, 404]);

  let socket = null;
  let sessionKey = null;
  let nextId = 1;
  const pending = new Map(); // request id -> {resolve, reject}
  const bubbles = new Map(); // runId -> assistant bubble
  let waiting = null; // the bubble of a chat.send whose runId is not known yet
  let running = null; // runId of the reply streaming now
  let attempts = 0;
  let timer = null;

  function setStatus(text, bad = false) {
    statusLine.textContent = text;
    statusLine.classList.toggle("bad", bad);
  }

  function setBusy() {
    const ready = sessionKey !== null;
    sendButton.disabled = !ready;
    stopButton.hidden = running === null;
    stopButton.disabled = !ready;
  }

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  }

  function add(kind, text, extra = "") {
    const follow = atBottom();
    for (const hint of log.querySelectorAll(".hint")) hint.remove();
    const item = document.createElement("li");
    item.className = `msg ${kind} ${extra}`.trim();
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(body);
    log.append(item);
    if (follow) item.scrollIntoView({ block: "end" });
    return item;
  }

  function notice(text, bad = false) {
    return add("notice", text, bad ? "error" : "");
  }

  function setText(bubble, text) {
    const follow = atBottom();
    bubble.querySelector(".text").textContent = text;
    if (follow) bubble.scrollIntoView({ block: "end" });
  }

  function note(bubble, text) {
    const small = document.createElement("small");
    small.className = "note";
    small.textContent = text;
    bubble.append(small);
  }

  // User content is a string; assistant content a list of {type: "text", text}.
  function textOf(content) {
    if (typeof content === "string") return content;
    if (Array.isArray(content)) {
      return content
        .filter((part) => part && part.type === "text" && typeof part.text === "string")
        .map((part) => part.text)
        .join("");
    }
    return "";
  }

  function uuid() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16));
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  function request(method, params) {
    return new Promise((resolve, reject) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) {
        reject(new Error("not connected"));
        return;
      }
      const id = String(nextId++);
      pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ type: "req", id, method, params }));
    });
  }

  // -- connection ---------------------------------------------------------------------------

  function connect() {
    clearTimeout(timer);
    timer = null;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const path = `/api/ws/claws/${encodeURIComponent(org)}/${encodeURIComponent(claw)}`;
    setStatus(attempts ? "reconnecting…" : "connecting…");
    let opened = false;
    const ws = new WebSocket(`${scheme}//${location.host}${path}`);
    socket = ws;
    ws.onopen = () => {
      opened = true;
      setStatus("connecting to the claw…");
    };
    ws.onmessage = (event) => {
      if (ws === socket) receive(event.data);
    };
    ws.onclose = (event) => {
      if (ws === socket) closed(event, opened);
    };
  }

  async function closed(event, opened) {
    socket = null;
    sessionKey = null;
    for (const { reject } of pending.values()) reject(new Error("connection lost"));
    pending.clear();
    if (running !== null) {
      const bubble = bubbles.get(running);
      if (bubble) {
        bubble.classList.remove("streaming");
        note(bubble, "connection lost; the full reply will be in the history");
      }
      running = null;
    }
    setBusy();
    let reason;
    let retry = true;
    if (!opened) {
      // Refused before the upgrade: the browser hides the HTTP answer, so ask for it.
      [reason, retry] = await refusal();
    } else if (CLOSES[event.code]) {
      [reason, retry] = CLOSES[event.code];
      if (event.reason && !reason.includes(event.reason)) reason = `${reason} (${event.reason})`;
    } else {
      reason = event.reason || `connection closed (${event.code})`;
    }
    if (!retry) {
      setStatus(reason, true);
      // Without a session a new attempt cannot succeed: the status says to use /web.
      if (!reason.includes("/web")) offerReconnect();
      return;
    }
    attempts += 1;
    const delay = Math.min(30000, 1000 * 2 ** Math.min(attempts - 1, 5)) * (0.8 + Math.random() * 0.4);
    setStatus(`${reason} · reconnecting in ${Math.round(delay / 1000)} s…`, true);
    timer = setTimeout(connect, delay);
  }

  // Why the upgrade was refused: the page's check route answers as the proxy would.
  async function refusal() {
    const check = `/claws/${encodeURIComponent(org)}/${encodeURIComponent(claw)}/check`;
    try {
      const answer = await fetch(check, { credentials: "same-origin", cache: "no-store" });
      if (answer.ok) return ["could not connect to the claw", true];
      let text = `refused (HTTP ${answer.status})`;
      try {
        const body = await answer.json();
        if (body && typeof body.error === "string") text = body.error;
      } catch (_) {
        // not JSON: keep the status alone
      }
      return [text, !FINAL_REFUSALS.has(answer.status)];
    } catch (_) {
      return ["the node is unreachable", true];
    }
  }

  function offerReconnect() {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Reconnect";
    button.addEventListener("click", () => {
      button.closest("li").remove();
      attempts = 0;
      connect();
    });
    notice("").append(button);
  }

  // -- frames -------------------------------------------------------------------------------

  function receive(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch (_) {
      return;
    }
    if (frame.type === "res") {
      const waiter = pending.get(frame.id);
      if (!waiter) return;
      pending.delete(frame.id);
      if (frame.ok) waiter.resolve(frame.payload || {});
      else waiter.reject(new Error((frame.error && frame.error.message) || "request failed"));
    } else if (frame.type === "event" && frame.event === "proxy.ready") {
      ready(frame.payload || {});
    } else if (frame.type === "event" && frame.event === "chat") {
      chatEvent(frame.payload || {});
    }
  }

  async function ready(payload) {
    sessionKey = payload.sessionKey || "agent:main:main";
    attempts = 0;
    setStatus(`connected · ${payload.claw || `${org}/${claw}`}`);
    setBusy();
    try {
      const history = await request("chat.history", { sessionKey, limit: 200 });
      log.replaceChildren();
      bubbles.clear();
      for (const message of history.messages || []) {
        if (message.role === "user" || message.role === "assistant") {
          add(message.role, textOf(message.content));
        }
      }
      if (!log.children.length) notice("No messages yet. Say hello.").classList.add("hint");
      if (log.lastElementChild) log.lastElementChild.scrollIntoView({ block: "end" });
    } catch (error) {
      notice(`Could not load the history: ${error.message}`, true);
    }
  }

  function bubbleFor(runId) {
    let bubble = bubbles.get(runId);
    if (!bubble) {
      bubble = waiting || add("assistant", "", "streaming");
      waiting = null;
      bubbles.set(runId, bubble);
    }
    return bubble;
  }

  function chatEvent(payload) {
    if (payload.sessionKey && payload.sessionKey !== sessionKey) return;
    if (!payload.runId || payload.state === "status") return;
    const bubble = bubbleFor(payload.runId);
    const state = payload.state;
    if (state === "delta") {
      running = payload.runId;
      const text = payload.message ? textOf(payload.message.content) : "";
      bubble.dataset.text = text || (bubble.dataset.text || "") + (payload.deltaText || "");
      setText(bubble, bubble.dataset.text);
    } else if (state === "final") {
      const text = payload.message ? textOf(payload.message.content) : "";
      if (text) bubble.dataset.text = text;
      setText(bubble, bubble.dataset.text || "");
      finish(payload.runId, bubble);
    } else if (state === "error") {
      bubble.classList.add("error");
      setText(bubble, bubble.dataset.text || "");
      note(bubble, `Error: ${payload.errorMessage || "the reply failed"}`);
      finish(payload.runId, bubble);
    } else if (state === "aborted") {
      setText(bubble, bubble.dataset.text || "");
      note(bubble, "stopped");
      finish(payload.runId, bubble);
    }
    setBusy();
  }

  function finish(runId, bubble) {
    bubble.classList.remove("streaming");
    bubble.dataset.done = "1";
    if (running === runId) running = null;
  }

  // -- sending ------------------------------------------------------------------------------

  async function send(text) {
    add("user", text);
    const bubble = add("assistant", "", "streaming");
    waiting = bubble;
    try {
      const answer = await request("chat.send", {
        sessionKey,
        message: text,
        idempotencyKey: uuid(),
      });
      if (waiting === bubble) waiting = null;
      if (answer.runId) {
        if (!bubbles.has(answer.runId)) bubbles.set(answer.runId, bubble);
        if (!bubble.dataset.done) running = answer.runId;
      }
    } catch (error) {
      if (waiting === bubble) waiting = null;
      bubble.classList.remove("streaming");
      bubble.classList.add("error");
      note(bubble, `Not sent: ${error.message}`);
    }
    setBusy();
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || sessionKey === null) return;
    input.value = "";
    grow();
    send(text);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  function grow() {
    input.style.height = "auto";
    input.style.height = `${input.scrollHeight}px`;
  }
  input.addEventListener("input", grow);

  stopButton.addEventListener("click", () => {
    if (running === null) return;
    request("chat.abort", { sessionKey, runId: running }).catch((error) => {
      notice(`Could not stop the reply: ${error.message}`, true);
    });
  });

  window.addEventListener("online", () => {
    if (timer !== null) connect();
  });

  setBusy();
  connect();
})();
