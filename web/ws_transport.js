// The WebSocket transport (see transport.js for the interface both transports share).

import { Backoff, probe, withToken } from "./transport.js";

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
  change(type, room, id, fields, ref) {
    return this.sendFrame({ type, data: { room, id, ...fields }, ref });
  }
}

/** Receive over EventSource, send over the HTTP API. */
