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
//   change(type, room, id, fields, ref)  edit / delete / react a message (docs/protocol.md
//                                "Changes to messages"); answered by `ack` or `error` like send
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
// This file holds what both share (backoff, the token, the CSRF header, the probe);
// ws_transport.js and sse_transport.js hold one transport each.
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
let csrfSource = async () => ({});

/** The CSRF header for a POST made with the session cookie (empty until account.js sets it). */
export function csrfHeaders() {
  return csrfSource();
}

/** Sets the source of the CSRF header for POSTs made with the session cookie. */
export function useCsrfHeaders(source) {
  csrfSource = source;
}

/** Adds `token=` to a /ws or /events URL when there is a token. */
export function withToken(path) {
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
