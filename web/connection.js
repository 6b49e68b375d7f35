// Connection wiring: which transport, its events (frames dispatched to the views), the
// connection state line, and a refused sign-in.

import { SseTransport } from "./sse_transport.js";
import { WsTransport } from "./ws_transport.js";
import { state } from "./state.js";
import { auth, tokenExpired } from "./auth.js";
import { ui, announce } from "./ui.js";
import { sendJoin, refreshDirectorySoon } from "./rooms.js";
import { addMessage, onHistory } from "./log.js";
import { updateEntryStatus, flush, onAck, onError } from "./sending.js";
import { onJoined, markUnsynced, markSynced } from "./sync.js";
import { onPresence, onMembers, onTyping, renderTyping } from "./presence.js";
import { onWelcome } from "./identity.js";
import { account, loadAccount } from "./account.js";
import { onRooms, onRoom, onTopic } from "./people.js";
import { onRead } from "./marks.js";
import { onDeleted, onKicked, onSlow, onMuted } from "./moderation.js";
import { onChange } from "./changes.js";

// Issue 19's frames, by the module that owns them.
const peopleFrames = {
  rooms: onRooms,
  room: onRoom,
  topic: onTopic,
  read: onRead,
  deleted: onDeleted,
  kicked: onKicked,
  slow: onSlow,
  muted: onMuted,
  change: onChange, // issue 20: edits, deletes, reactions
};

export const params = new URLSearchParams(location.search);
export const forcedTransport = params.get("transport"); // "sse" forces the fallback, "ws" forbids it

let connTimer = null;
export function renderConn() {
  clearTimeout(connTimer);
  const { state: s, retryAt } = state.conn;
  const kind = state.transport?.kind === "sse" ? " (SSE fallback)" : "";
  let text;
  if (s === "unauthenticated") text = state.authFailed === "expired" ? "Session expired" : "Not signed in";
  else if (s === "connected") text = `Connected${kind}`;
  else if (s === "connecting") text = "Connecting…";
  else if (s === "offline") text = "Offline: waiting for the network";
  else if (retryAt) {
    const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    text = secs > 0 ? `Reconnecting in ${secs}s` : "Reconnecting…";
    connTimer = setTimeout(renderConn, 250);
  } else text = "Reconnecting…";
  ui.conn.dataset.state = s;
  if (ui.connText.textContent !== text) ui.connText.textContent = text;
  ui.retry.hidden = !(s === "reconnecting" || s === "offline");
}

/** The server refused our credentials (401): stop for good and say why. A reload (with a new
 *  token in the address, or after signing in again) is the way back. */
export function authFailed(reason) {
  if (state.authFailed) return;
  state.authFailed = reason;
  state.transport?.stop();
  state.conn = { state: "unauthenticated", retryAt: 0 };
  renderConn();
  for (const e of state.outbox) updateEntryStatus(e);
  document.documentElement.dataset.auth = reason;
  const text = {
    expired: "Your session expired. Open hubbub again with a new sign-in link (token) to continue.",
    refused: "Your sign-in token was not accepted. Open hubbub again with a new sign-in link.",
    required: "Cannot connect: this server needs a sign-in token or an account. Sign in, or open hubbub with the link (…/?token=…) you were given.",
  }[reason];
  announce(text, { sticky: true });
}

// ---------------------------------------------------------------------------------------------
// Transport wiring

export const handlers = {
  onFrame(f) {
    switch (f.type) {
      case "welcome":
        onWelcome(f);
        break;
      case "joined":
        onJoined(f);
        break;
      case "left":
        break;
      case "msg":
        addMessage(f, { live: true });
        break;
      case "ack":
        onAck(f);
        break;
      case "presence":
        onPresence(f);
        break;
      case "typing":
        onTyping(f);
        break;
      case "members":
        onMembers(f);
        break;
      case "history":
        onHistory(f);
        break;
      case "error":
        onError(f);
        break;
      default:
        peopleFrames[f.type]?.(f); // anything else: a newer server's frame, ignored
        break;
    }
  },
  onOpen() {
    const t = state.transport;
    if (t?.kind === "websocket" && state.wantedName && t.openedName !== state.wantedName) {
      // The name was picked while this socket was connecting, after its URL was made: ask for
      // it now, before the joins, so the rooms see us under it (not as the guest name).
      state.nickPending = state.wantedName;
      t.sendFrame({ type: "nick", data: state.wantedName, ref: "nick" });
    }
    for (const room of state.rooms.values()) sendJoin(room);
    refreshDirectorySoon();
  },
  onState(s) {
    const wasConnected = state.conn.state === "connected";
    state.conn = s;
    renderConn();
    if (s.state === "connected") {
      // Rooms that caught up while another part of the transport was still connecting.
      for (const room of state.rooms.values()) if (room.synced) flush(room);
    }
    if (wasConnected && s.state !== "connected" && state.transport?.kind === "websocket") {
      // Lost the socket: whatever was in flight is now unconfirmed, every room needs a resync.
      // (Over SSE each room's stream reports for itself: onStreamDown.)
      for (const room of state.rooms.values()) markUnsynced(room);
      for (const e of state.outbox) if (e.state === "sent") e.state = "unconfirmed";
    }
    if (s.state !== "connected") {
      for (const e of state.outbox) updateEntryStatus(e);
      renderTyping();
    }
  },
  onStreamDown(name) {
    const room = state.rooms.get(name);
    if (room) markUnsynced(room);
  },
  onStreamOpen(name) {
    // SSE: a stream (re)opened. Its `joined` normally marks the room in sync; should the
    // server not send one, do not hold the outbox back forever.
    const room = state.rooms.get(name);
    if (room && !room.synced && !room.inServer) {
      clearTimeout(room.syncTimer);
      room.syncTimer = setTimeout(() => markSynced(room), 2000);
    }
  },
  onAuthFailed() {
    authFailed(!auth.claims ? "required" : tokenExpired() ? "expired" : "refused");
  },
  onFallback(reason) {
    if (forcedTransport === "ws") return false;
    console.info(`hubbub: ${reason}; falling back to EventSource + HTTP`);
    useTransport("sse");
    return true;
  },
};

export function guestName() {
  let g = sessionStorage.getItem("hubbub.guest");
  if (!g) {
    g = `guest-${String(Math.floor(1000 + Math.random() * 9000))}`;
    sessionStorage.setItem("hubbub.guest", g);
  }
  return g;
}

export function useTransport(kind) {
  state.transport?.stop();
  if (state.authFailed) return;
  // A signed-in page's name is its account's: the server refuses any other.
  const getName = () => account.me?.name || state.wantedName || (kind === "sse" ? guestName() : "");
  const getSince = (room) => state.rooms.get(room)?.lastId || 0;
  const getChangesSince = (room) => state.rooms.get(room)?.changeSeq ?? null;
  const transport =
    kind === "sse"
      ? new SseTransport(handlers, { getName, getSince, getChangesSince })
      : new WsTransport(handlers, { getName });
  state.transport = transport;
  document.documentElement.dataset.transport = transport.kind;
  for (const room of state.rooms.values()) {
    room.inServer = false;
    room.synced = false;
  }
  if (kind !== "sse") {
    transport.start();
    return;
  }
  // No `welcome` over SSE: ask GET /api/me who we are first (only when this browser signed in
  // before; the WebSocket's `welcome` says it), then take the name as the server would.
  loadAccount().finally(() => {
    if (state.transport !== transport) return;
    onWelcome({ data: { name: getName() } });
    transport.start();
  });
}
