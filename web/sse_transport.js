// The Server-Sent Events transport, the fallback when WebSocket cannot open (see transport.js
// for the interface both transports share).

import { Backoff, authHeaders, csrfHeaders, probe, withToken } from "./transport.js";

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

  /** An edit, delete or reaction over the HTTP API's change routes; the stored change comes
   *  back on the room's stream like any other, the answer as a made-up `ack` or `error`. */
  change(type, room, id, fields, ref) {
    const base = `/api/rooms/${encodeURIComponent(room)}/messages/${id}`;
    const [method, path, body] =
      type === "edit"
        ? ["PATCH", base, { text: fields.text }]
        : type === "delete"
          ? ["DELETE", base, null]
          : [fields.remove ? "DELETE" : "POST", `${base}/reactions`, { emoji: fields.emoji }];
    const json = body ? { "content-type": "application/json" } : {};
    csrfHeaders()
      .then((csrf) =>
        fetch(path, {
          method,
          headers: authHeaders({ ...json, ...csrf }),
          body: body ? JSON.stringify(body) : undefined,
        }),
      )
      .then(
        async (res) => {
          if (res.ok) {
            this.h.onFrame({ type: "ack", ref, room });
            return;
          }
          let answer = null;
          try {
            answer = await res.json();
          } catch {
            /* not JSON */
          }
          const err = answer?.error || { code: `http_${res.status}`, message: res.statusText };
          this.h.onFrame({ type: "error", ref, data: err });
        },
        () => this.h.onFrame({ type: "error", ref, data: { code: "network", message: "not sent" } }),
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
