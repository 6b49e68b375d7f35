// Transports for the hubbub web client.
//
// Both transports expose the same small interface to the chat core (app.js):
//
//   start()                      begin connecting (and keep reconnecting until stop())
//   stop()                       close everything, no more reconnects
//   join(room, since)            join a room; since = last message id seen, or 0/undefined
//   leave(room)
//   send(room, text, ref, extra) post a message (extra: {reply_to, attachment}, both optional);
//                                the answer arrives as an `ack` or `error` frame
//   typing(room)
//   history(room, before, limit)
//   nick(name)
//   get connected                true when every part of the transport is up
//   canSend(room)                true when a message for this room can be sent right now
//
// and report through the handlers given to the constructor:
//
//   onFrame(frame)               every protocol frame (see docs/protocol.md)
//   onOpen()                     the transport (re)connected: the core rejoins its rooms
//   onState({state, retryAt})    state is "connecting" | "connected" | "reconnecting" | "offline"
//   onStreamOpen(room)           SSE only: that room's stream (re)opened
//   onStreamDown(room)           SSE only: that room's stream broke; its replay must be awaited
//   onFallback(reason) -> bool   WebSocket could not open but the server is up (WsTransport
//                                only); true when the core switched to another transport
//   onAuthFailed()               the server answers 401 (no token, a bad one, or it expired):
//                                the transport has stopped; retrying would only repeat the 401
//
// With token auth (docs/security.md, "Tokens") the token set by setToken() goes as `token=` on
// the /ws and /events URLs (browsers cannot set headers there) and as `Authorization: Bearer`
// on every fetch() to /api.
//
// WsTransport speaks the WebSocket protocol at /ws. SseTransport receives with one EventSource
// per joined room (/events?room=R&since=ID&name=N) and sends with fetch() to the HTTP API; it
// synthesises `ack`, `error` and `history` frames from the HTTP answers so the core does not
// have to know which transport it is using.

/** Exponential backoff with "full jitter": a random delay in [base/2, base] where base doubles
 *  with each failed attempt, capped. Jitter keeps a crowd of clients from reconnecting in step
 *  after a server restart. */
export class Backoff {
  constructor({ min = 500, max = 15000 } = {}) {
    this.min = min;
    this.max = max;
    this.attempt = 0;
  }
  next() {
    const base = Math.min(this.max, this.min * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(base / 2 + Math.random() * (base / 2));
  }
  reset() {
    this.attempt = 0;
  }
}

let authToken = "";

/** The token to present from now on ("" for none). */
export function setToken(token) {
  authToken = token || "";
}

/** Headers for fetch() calls to /api: the token as a bearer credential, when there is one. */
export function authHeaders(extra = {}) {
  return authToken ? { ...extra, authorization: `Bearer ${authToken}` } : { ...extra };
}

/** Where the SSE transport's POSTs get their CSRF header from (account.js sets it: a
 *  signed-in page's cookie goes with them). None until then. */
let csrfHeaders = async () => ({});

/** Sets the source of the CSRF header for POSTs made with the session cookie. */
export function useCsrfHeaders(source) {
  csrfHeaders = source;
}

/** Adds `token=` to a /ws or /events URL when there is a token. */
function withToken(path) {
  if (!authToken) return path;
  return `${path}${path.includes("?") ? "&" : "?"}token=${encodeURIComponent(authToken)}`;
}

/** Why a connection could not be opened, asked over plain HTTP: "unauthenticated" (401: no
 *  token, a bad or an expired one), "forbidden" (403: the token does not allow `room`), "up"
 *  (the server answers, so something else is in the way) or "down". A WebSocket or an
 *  EventSource never shows the page the status of a refused handshake, hence this probe. */
export async function probe(room) {
  const path = room ? `/api/rooms/${encodeURIComponent(room)}/messages?limit=1` : "/api/rooms";
  try {
    const r = await fetch(path, { cache: "no-store", headers: authHeaders() });
    if (r.status === 401) return "unauthenticated";
    if (r.status === 403) return "forbidden";
    return "up";
  } catch {
    return "down";
  }
}

function wsUrl(path) {
  const u = new URL(path, location.href);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

/** Checks that the server answers plain HTTP (used to tell "WebSocket blocked" from "server down"). */
async function serverReachable() {
  try {
    const r = await fetch("/healthz", { cache: "no-store" });
    return r.ok;
  } catch {
    return false;
  }
}

export class WsTransport {
  constructor(handlers, { getName }) {
    this.kind = "websocket";
    this.h = handlers;
    this.getName = getName;
    this.ws = null;
    this.everOpened = false;
    this.stopped = true;
    this.backoff = new Backoff();
    this.timer = null;
  }

  get connected() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  canSend() {
    return this.connected;
  }

  start() {
    this.stopped = false;
    this.connectNow();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      ws.close(1000);
    }
  }

  /** The browser says the network is gone: drop the socket now rather than wait for it to
   *  time out, and wait for the "online" event (which calls retryNow). */
  goOffline() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = ws.onmessage = ws.onerror = ws.onopen = null;
      ws.close(1000);
    }
    this.h.onState({ state: "offline" });
  }

  /** Skip the rest of the backoff wait (the "Retry now" button, the browser coming online). */
  retryNow() {
    if (this.stopped || this.connected) return;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    clearTimeout(this.timer);
    this.connectNow();
  }

  connectNow() {
    clearTimeout(this.timer);
    if (this.stopped) return;
    const name = this.getName();
    // The name this socket asks for. A name picked while it is still connecting is not in its
    // URL: the core sends `nick` once it opens (see openedName in app.js).
    this.openedName = name;
    const url = wsUrl(withToken(name ? `/ws?name=${encodeURIComponent(name)}` : "/ws"));
    this.h.onState({ state: "connecting" });
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      this.afterClose(false);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.everOpened = true;
      this.backoff.reset();
      this.h.onState({ state: "connected" });
      this.h.onOpen();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== "string") return;
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (frame && typeof frame === "object") this.h.onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 1008 && /token/i.test(ev.reason || "")) {
        // The server closes a connection when its token expires ("token expired").
        this.stop();
        this.h.onAuthFailed?.();
        return;
      }
      this.afterClose(opened);
    };
    ws.onerror = () => {
      /* onclose follows and does the work */
    };
  }

  async afterClose(opened) {
    if (this.stopped) return;
    if (!opened) {
      // Refused before the upgrade? A 401 there looks like any failure to the page: ask.
      const why = await probe();
      if (this.stopped) return;
      if (why === "unauthenticated") {
        this.stop();
        this.h.onAuthFailed?.();
        return;
      }
    }
    if (!opened && !this.everOpened) {
      // The socket never opened in this page's life. If plain HTTP works, something between us
      // and the server (a proxy, a filter) blocks WebSocket: fall back to SSE + HTTP.
      if (await serverReachable()) {
        if (this.stopped) return;
        if (this.h.onFallback?.("websocket could not be opened")) return; // replaced by SSE
      }
    }
    this.schedule();
  }

  schedule() {
    if (this.stopped) return;
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      this.h.onState({ state: "offline" });
      return; // the "online" event calls retryNow()
    }
    const delay = this.backoff.next();
    this.h.onState({ state: "reconnecting", retryAt: Date.now() + delay });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connectNow(), delay);
  }

  sendFrame(frame) {
    if (!this.connected) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  join(room, since) {
    const f = { type: "join", room };
    if (since > 0) f.data = { since };
    return this.sendFrame(f);
  }
  leave(room) {
    return this.sendFrame({ type: "leave", room });
  }
  send(room, text, ref, extra = {}) {
    return this.sendFrame({ type: "msg", room, data: text, ref, ...extra });
  }
  typing(room) {
    return this.sendFrame({ type: "typing", room });
  }
  history(room, before, limit) {
    const data = { limit };
    if (before > 0) data.before = before;
    return this.sendFrame({ type: "history", room, data });
  }
  nick(name) {
    return this.sendFrame({ type: "nick", data: name });
  }
}

/** Receive over EventSource, send over the HTTP API. */
export class SseTransport {
  constructor(handlers, { getName, getSince, getChangesSince = () => null }) {
    this.kind = "sse";
    this.h = handlers;
    this.getName = getName;
    this.getSince = getSince;
    this.getChangesSince = getChangesSince;
    this.rooms = new Map(); // room -> { es, backoff, timer, open }
    this.stopped = true;
  }

  get connected() {
    if (this.stopped) return false;
    for (const r of this.rooms.values()) if (!r.open) return false;
    return true;
  }

  /** Posting to a room needs only that room's stream up (it proves the server is there and
   *  will carry our message back); the other rooms' streams do not matter. */
  canSend(room) {
    return !this.stopped && !!this.rooms.get(room)?.open;
  }

  start() {
    this.stopped = false;
    this.report();
    // No handshake to wait for: the core joins its rooms, each join opens an EventSource.
    queueMicrotask(() => this.h.onOpen());
  }

  stop() {
    this.stopped = true;
    for (const room of [...this.rooms.keys()]) this.closeRoom(room);
  }

  goOffline() {
    if (this.stopped) return;
    for (const [room, r] of this.rooms) {
      if (r.open) this.h.onStreamDown?.(room);
      clearTimeout(r.timer);
      r.open = false;
      r.retryAt = 0;
      if (r.es) {
        r.es.onopen = r.es.onmessage = r.es.onerror = null;
        r.es.close();
      }
    }
    this.report();
  }

  retryNow() {
    for (const [room, r] of this.rooms) {
      if (!r.es || r.es.readyState === EventSource.CLOSED) {
        clearTimeout(r.timer);
        this.open(room, this.getSince(room));
      }
    }
  }

  report() {
    if (this.stopped) return;
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      this.h.onState({ state: "offline" });
      return;
    }
    let retryAt = 0;
    let anyDown = false;
    let anyConnecting = false;
    for (const r of this.rooms.values()) {
      if (!r.open) {
        anyDown = true;
        if (r.retryAt) retryAt = Math.max(retryAt, r.retryAt);
        else anyConnecting = true;
      }
    }
    if (!anyDown) this.h.onState({ state: "connected" });
    else if (retryAt && !anyConnecting) this.h.onState({ state: "reconnecting", retryAt });
    else this.h.onState({ state: this.everOpened ? "reconnecting" : "connecting" });
  }

  open(room, since) {
    const prev = this.rooms.get(room);
    if (prev?.es) {
      prev.es.onopen = prev.es.onmessage = prev.es.onerror = null;
      prev.es.close();
    }
    const r = prev || { backoff: new Backoff(), timer: null, open: false, retryAt: 0 };
    r.open = false;
    r.retryAt = 0;
    this.rooms.set(room, r);
    const q = new URLSearchParams({ room });
    if (since > 0) q.set("since", String(since));
    // The change feed (edits, deletes, reactions) from the client's cursor on; the browser's
    // Last-Event-ID ("id.seq") resumes both after that.
    const changes = this.getChangesSince(room);
    if (changes != null) q.set("changes_since", String(changes));
    const name = this.getName();
    if (name) q.set("name", name);
    const es = new EventSource(withToken(`/events?${q}`));
    r.es = es;
    es.onopen = () => {
      r.open = true;
      r.retryAt = 0;
      r.backoff.reset();
      this.everOpened = true;
      this.report();
      this.h.onStreamOpen?.(room);
    };
    es.onmessage = (ev) => {
      let frame;
      try {
        frame = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (!frame || typeof frame !== "object") return;
      if (frame.type === "msg" && frame.room == null) frame.room = room;
      if (frame.type === "joined" && frame.room == null) frame.room = room;
      this.h.onFrame(frame);
    };
    es.onerror = () => {
      if (r.open) this.h.onStreamDown?.(room);
      r.open = false;
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (e.g. a non-200 answer). 401 or 403 will not go away by
        // retrying: find out which, else reconnect ourselves with backoff, resuming from the
        // last id the core has seen.
        this.afterStreamClosed(room, r);
      }
      // readyState CONNECTING: the browser retries by itself and sends Last-Event-ID.
      this.report();
    };
    this.report();
  }

  async afterStreamClosed(room, r) {
    const why = await probe(room);
    if (this.stopped || this.rooms.get(room) !== r) return;
    if (why === "unauthenticated") {
      this.stop();
      this.h.onAuthFailed?.();
      return;
    }
    if (why === "forbidden") {
      // The token does not allow this room: answer as the WebSocket path would.
      this.closeRoom(room);
      this.report();
      this.h.onFrame({
        type: "error",
        ref: `join:${room}`,
        data: { code: "unauthorized", message: "your token does not allow this room" },
      });
      return;
    }
    const delay = r.backoff.next();
    r.retryAt = Date.now() + delay;
    clearTimeout(r.timer);
    r.timer = setTimeout(() => {
      if (!this.stopped && this.rooms.get(room) === r) this.open(room, this.getSince(room));
    }, delay);
    this.report();
  }

  closeRoom(room) {
    const r = this.rooms.get(room);
    if (!r) return;
    clearTimeout(r.timer);
    if (r.es) {
      r.es.onopen = r.es.onmessage = r.es.onerror = null;
      r.es.close();
    }
    this.rooms.delete(room);
  }

  join(room, since) {
    const r = this.rooms.get(room);
    if (r?.es && r.es.readyState !== EventSource.CLOSED) {
      return true; // already streaming; EventSource resumes by itself
    }
    this.open(room, since);
    return true;
  }

  leave(room) {
    this.closeRoom(room);
    this.report();
    queueMicrotask(() => this.h.onFrame({ type: "left", room }));
    return true;
  }

  /** Re-open every stream under a new display name. */
  nick(name) {
    for (const room of [...this.rooms.keys()]) this.open(room, this.getSince(room));
    queueMicrotask(() =>
      this.h.onFrame({ type: "welcome", data: { name, version: "" }, local: true }),
    );
    return true;
  }

  typing() {
    return false; // the HTTP API has no typing notification
  }

  send(room, text, ref, extra = {}) {
    const from = this.getName();
    // A signed-in page's cookie goes with the POST, so it carries the session's CSRF token.
    csrfHeaders()
      .then((csrf) =>
        fetch(`/api/rooms/${encodeURIComponent(room)}/messages`, {
          method: "POST",
          headers: authHeaders({ "content-type": "application/json", ...csrf }),
          body: JSON.stringify({ from, data: text, ...extra }),
        }),
      )
      .then(
      async (res) => {
        let body = null;
        try {
          body = await res.json();
        } catch {
          /* not JSON */
        }
        if (res.ok && body && typeof body.id === "number") {
          this.h.onFrame({ type: "ack", ref, room: body.room ?? room, id: body.id });
        } else {
          const err = body?.error || { code: `http_${res.status}`, message: res.statusText };
          this.h.onFrame({ type: "error", ref, data: err });
        }
      },
      () => {
        // Network failure: we cannot know whether the server stored it.
        this.h.onFrame({ type: "error", ref, data: { code: "network", message: "not sent" } });
      },
    );
    return true;
  }

  history(room, before, limit) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before > 0) q.set("before", String(before));
    fetch(`/api/rooms/${encodeURIComponent(room)}/messages?${q}`, { cache: "no-store", headers: authHeaders() })
      .then((r) => (r.ok ? r.json() : Promise.reject(new Error(String(r.status)))))
      .then(
        (data) => this.h.onFrame({ type: "history", room, data }),
        () => this.h.onFrame({ type: "history", room, data: null, failed: true }),
      );
    return true;
  }
}
