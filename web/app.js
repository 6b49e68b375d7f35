// hubbub web client: speaks protocol v1 (docs/protocol.md) over WebSocket, or over
// EventSource + HTTP when WebSocket is unavailable (or forced with ?transport=sse).
//
// Rules this file keeps:
// - user data reaches the DOM only through textContent / DOM properties (see render.js);
// - per room we keep the highest message id seen (lastId) and de-duplicate by id, so a rejoin
//   with since=lastId shows every missed message exactly once, in order;
// - messages typed while offline wait in the outbox, shown as pending, and are sent once the
//   room is back in sync; "pending" clears when the server's ack arrives. The outbox is kept in
//   localStorage (outbox.js), so a reload shows and sends what was not acked yet.

import { WsTransport, SseTransport, setToken, authHeaders } from "./transport.js";
import { PersistentOutbox, messagesAfter } from "./outbox.js";
import { h, linkify, timeEl, nameHue } from "./render.js";

const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const HISTORY_PAGE = 50;
const TYPING_EVERY_MS = 2000; // send `typing` at most this often
const TYPING_SHOW_MS = 4000; // show "X is typing" this long after the last notification
const SYNC_TIMEOUT_MS = 5000;
const DIRECTORY_EVERY_MS = 15000;
const MEMBERS_SHOWN = 200; // the member list shows at most this many names

const store = {
  get(key, fallback) {
    try {
      const v = localStorage.getItem(`hubbub.${key}`);
      return v == null ? fallback : JSON.parse(v);
    } catch {
      return fallback;
    }
  },
  set(key, value) {
    try {
      localStorage.setItem(`hubbub.${key}`, JSON.stringify(value));
    } catch {
      /* private mode, quota: the client still works, it just forgets */
    }
  },
};

/** Client-side check of the server's display-name rule (the server has the last word). */
function normaliseName(raw) {
  const name = String(raw ?? "").normalize("NFC").trim();
  if (name.length === 0) return { ok: false, name, why: "Please enter a name." };
  if ([...name].length > 32) return { ok: false, name, why: "Names are at most 32 characters." };
  if (/\p{Cc}/u.test(name)) return { ok: false, name, why: "No control characters." };
  return { ok: true, name };
}

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"),
  connText: $("conn-text"),
  retry: $("retry-now"),
  nameForm: $("name-form"),
  name: $("name"),
  nameHint: $("name-hint"),
  drawerToggle: $("drawer-toggle"),
  sidebar: $("sidebar"),
  roomList: $("room-list"),
  otherRooms: $("other-rooms"),
  otherRoomsHeading: $("other-rooms-h"),
  joinForm: $("join-form"),
  joinRoom: $("join-room"),
  memberList: $("member-list"),
  memberCount: $("member-count"),
  roomTitle: $("room-title"),
  leave: $("leave-room"),
  log: $("log"),
  jump: $("jump"),
  typing: $("typing"),
  composer: $("composer"),
  message: $("message"),
  alert: $("alert"),
};

const params = new URLSearchParams(location.search);
const forcedTransport = params.get("transport"); // "sse" forces the fallback, "ws" forbids it

// ---------------------------------------------------------------------------------------------
// Token auth (docs/security.md, "Tokens"; docs/web-client.md, "Token auth")
//
// A token arrives in the address, as `/?token=JWT` or in the fragment (`/#token=JWT`, or with a
// room: `/#room-name&token=JWT`; a fragment never reaches the server or its logs). It is kept in
// sessionStorage (this tab only, gone when the tab closes) and taken out of the address bar at
// once, so copying the address does not share it. Its payload is only read, not verified (the
// server does that): `sub` is our display name, `rooms` the rooms we may join, `exp` its end.

const TOKEN_KEY = "hubbub.token";

/** The claims of a JWT, or null when it is not one. */
function decodeToken(token) {
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== "object" || typeof claims.sub !== "string") return null;
    return claims;
  } catch {
    return null;
  }
}

function takeToken() {
  let fromUrl = null;
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    fromUrl = url.searchParams.get("token");
    url.searchParams.delete("token");
  }
  const frag = url.hash.slice(1);
  if (/(^|&)token=/.test(frag)) {
    const keep = [];
    for (const part of frag.split("&")) {
      if (part.startsWith("token=")) fromUrl = decodeURIComponent(part.slice(6));
      else if (part) keep.push(part);
    }
    url.hash = keep.join("&");
  }
  if (fromUrl !== null) {
    // Out of the address bar (and the history entry) before anything else happens.
    history.replaceState(history.state, "", url.search || url.hash ? url.href : url.pathname);
    if (decodeToken(fromUrl)) {
      try {
        sessionStorage.setItem(TOKEN_KEY, fromUrl);
      } catch {
        /* storage off: the token lives as long as this page */
      }
      return { token: fromUrl, claims: decodeToken(fromUrl), badUrlToken: false };
    }
    // Garbage in the address: do not keep it, fall back to what this tab had.
  }
  let saved = null;
  try {
    saved = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    /* storage off */
  }
  const claims = saved ? decodeToken(saved) : null;
  return { token: claims ? saved : "", claims, badUrlToken: fromUrl !== null };
}

const auth = takeToken();
setToken(auth.token);
const persisted = new PersistentOutbox(auth.claims?.sub || "");

function tokenExpired() {
  return !!auth.claims && typeof auth.claims.exp === "number" && auth.claims.exp * 1000 <= Date.now();
}

/** Whether the token's `rooms` claim allows `room` (no claim: every room). The server checks
 *  for itself; this only lets the page choose a room it may enter and explain a refusal. */
function tokenAllows(room) {
  const rooms = auth.claims?.rooms;
  if (!Array.isArray(rooms)) return true;
  return rooms.some((p) => {
    if (typeof p !== "string") return false;
    const re = new RegExp(`^${p.split("*").map((x) => x.replace(/[.]/g, "\\.")).join("[A-Za-z0-9_.-]*")}$`);
    return re.test(room);
  });
}

const state = {
  name: "", // the name the server knows us by (from `welcome`)
  wantedName: auth.claims ? auth.claims.sub : ((v) => (v.ok ? v.name : ""))(normaliseName(store.get("name", ""))),
  authFailed: null, // "expired" | "refused" | "required": the server answered 401, we stopped
  rooms: new Map(), // room name -> Room, for rooms we are in (or want to be in)
  current: null, // Room in view
  directory: new Map(), // room name -> {members, last_id}, from GET /api/rooms
  outbox: [], // {ref, room, text, from, ts, afterId, state, el, id, tries, restored}
  refSeq: 0,
  transport: null,
  conn: { state: "connecting", retryAt: 0 },
  lastTypingSent: new Map(),
  unseen: 0, // messages that arrived in the room in view while the tab was hidden
};

// ---------------------------------------------------------------------------------------------
// Rooms

function makeRoom(name) {
  const list = h("ol", { className: "messages" });
  const top = h("div", { className: "log-top" });
  const container = h("div", { className: "room-log", dataset: { room: name } }, top, list);
  return {
    name,
    list,
    top,
    container,
    lastId: 0, // highest message id seen in this room
    oldestId: Infinity, // lowest message id shown (for history before=)
    baseline: null, // last_id at our first join: older messages never count as unread
    syncTarget: 0, // last_id of the latest `joined`: the replay is complete once lastId reaches it
    inServer: false, // a `joined` arrived on the current connection
    synced: false, // joined and replay complete: queued messages may go out
    syncTimer: null,
    hasMore: true,
    loadingHistory: false,
    members: [],
    typing: new Map(), // name -> expiry time
    unread: 0,
    byId: new Map(), // message id -> <li>
    stick: true, // stay scrolled to the bottom when new messages arrive
    scrollTop: 0,
  };
}

function persistRooms() {
  store.set("rooms", [...state.rooms.keys()]);
}

/** Joins (or creates) a room and optionally brings it into view. */
function joinRoom(name, { show = true } = {}) {
  if (!ROOM_RE.test(name)) {
    announce(`"${name}" is not a valid room name: use 1-64 letters, digits, "_", "." or "-".`);
    return null;
  }
  let room = state.rooms.get(name);
  if (!room) {
    room = makeRoom(name);
    state.rooms.set(name, room);
    persistRooms();
    renderTop(room);
    if (state.transport?.connected || state.transport?.kind === "sse") sendJoin(room);
  }
  if (show) showRoom(room);
  renderRooms();
  return room;
}

function sendJoin(room) {
  room.inServer = false;
  room.synced = false;
  clearTimeout(room.syncTimer);
  const t = state.transport;
  if (t.kind === "websocket") {
    const f = { type: "join", room: room.name, ref: `join:${room.name}` };
    if (room.lastId > 0) f.data = { since: room.lastId };
    t.sendFrame(f);
  } else {
    t.join(room.name, room.lastId);
  }
}

function leaveRoom(room, { tellServer = true, notify = true } = {}) {
  if (tellServer) state.transport?.leave(room.name);
  state.rooms.delete(room.name);
  clearTimeout(room.syncTimer);
  for (const e of state.outbox.filter((e) => e.room === room.name)) dropEntry(e);
  persistRooms();
  if (state.current === room) {
    const next = state.rooms.values().next().value || joinRoom("lobby", { show: false });
    showRoom(next);
  }
  renderRooms();
  if (notify) announce(`You left #${room.name}.`);
  refreshDirectorySoon();
}

function showRoom(room) {
  const prev = state.current;
  if (prev && prev !== room) {
    prev.stick = isAtBottom();
    prev.scrollTop = ui.log.scrollTop;
  }
  state.current = room;
  room.unread = 0;
  ui.log.replaceChildren(room.container);
  ui.log.setAttribute("aria-label", `Messages in #${room.name}`);
  ui.roomTitle.textContent = `#${room.name}`;
  ui.message.placeholder = `Message #${room.name}`;
  ui.leave.textContent = "Leave";
  ui.leave.setAttribute("aria-label", `Leave #${room.name}`);
  if (room.stick) scrollToBottom();
  else ui.log.scrollTop = room.scrollTop;
  ui.jump.hidden = true;
  store.set("current", room.name);
  if (decodeURIComponent(location.hash.slice(1)) !== room.name) {
    history.replaceState(null, "", `#${room.name}`);
  }
  renderRooms();
  renderMembers();
  renderTyping();
  updateTitle();
  maybeFillHistory(room);
}

function switchBy(delta) {
  const names = [...state.rooms.keys()];
  if (names.length < 2 || !state.current) return;
  const i = names.indexOf(state.current.name);
  showRoom(state.rooms.get(names[(i + delta + names.length) % names.length]));
}

// ---------------------------------------------------------------------------------------------
// Messages

function isAtBottom() {
  const l = ui.log;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 48;
}

function scrollToBottom() {
  ui.log.scrollTop = ui.log.scrollHeight;
  ui.jump.hidden = true;
}

function messageEl({ from, ts, data, id }, { mine = false } = {}) {
  const fromEl = h("span", { className: "from", textContent: from });
  fromEl.style.setProperty("--hue", String(nameHue(from)));
  const li = h(
    "li",
    { className: mine ? "msg mine" : "msg" },
    h("div", { className: "meta" }, fromEl, " ", timeEl(ts), h("span", { className: "status" })),
    h("div", { className: "text" }, linkify(data)),
  );
  if (id != null) li.dataset.id = String(id);
  return li;
}

/** Puts a message <li> into the room's list in id order; unsent local messages stay last. */
function placeMessage(room, li, id) {
  const list = room.list;
  const newest = id > room.newestPlaced;
  if (newest || room.newestPlaced === undefined) {
    const firstUnsent = list.querySelector(":scope > li.unsent");
    list.insertBefore(li, firstUnsent);
    room.newestPlaced = Math.max(room.newestPlaced ?? 0, id);
    return;
  }
  // An older message (history, or a replay that raced): walk back to its place.
  for (let n = list.lastElementChild; n; n = n.previousElementSibling) {
    if (n.classList.contains("unsent") || n.dataset.id === undefined) continue;
    if (Number(n.dataset.id) < id) {
      n.after(li);
      return;
    }
  }
  list.prepend(li);
}

function setStatus(li, text, cls) {
  const s = li.querySelector(".status");
  if (!s) return;
  s.textContent = text;
  li.classList.toggle("pending", cls === "pending");
  li.classList.toggle("failed", cls === "failed");
}

/** Handles a `msg` frame (live, replayed after join, or from history). */
function addMessage(m, { live }) {
  const room = state.rooms.get(m.room);
  if (!room || typeof m.id !== "number" || typeof m.data !== "string") return;
  const wasNewest = m.id > room.lastId;
  if (m.id > room.lastId) room.lastId = m.id;
  if (m.id < room.oldestId) room.oldestId = m.id;
  if (room.byId.has(m.id)) {
    checkSynced(room);
    return; // seen already: replay overlap, SSE resume, or our own message acked first
  }
  const from = String(m.from ?? "");
  const inView = room === state.current;
  const stick = inView && isAtBottom();

  let li = null;
  if (from === state.name) {
    // Our own message coming back: turn the matching pending entry into the real message.
    const entry = state.outbox.find(
      (e) =>
        e.room === room.name &&
        e.id == null &&
        (e.state === "sent" || e.state === "unconfirmed") &&
        e.text === m.data &&
        m.id > e.afterId,
    );
    if (entry) {
      entry.id = m.id;
      li = entry.el;
      li.classList.remove("unsent");
      li.dataset.id = String(m.id);
      li.querySelector("time")?.replaceWith(timeEl(m.ts));
      if (entry.state === "unconfirmed") settleEntry(entry); // stored before we lost the socket
    }
  }
  if (!li) li = messageEl({ ...m, from }, { mine: from === state.name });
  room.byId.set(m.id, li);
  placeMessage(room, li, m.id);
  room.typing.delete(from);

  if (live && wasNewest && from !== state.name && room.baseline != null && m.id > room.baseline) {
    if (!inView) {
      room.unread += 1;
      renderRooms();
    } else if (document.hidden) {
      state.unseen += 1; // in view but the tab is in the background: count it in the title
      updateTitle();
    }
  }
  if (inView) {
    if (stick || (from === state.name && live && wasNewest)) scrollToBottom();
    else if (live && wasNewest) ui.jump.hidden = false;
    renderTyping();
  }
  checkSynced(room);
}

function addNotice(room, text) {
  const inView = room === state.current;
  const stick = inView && isAtBottom();
  const li = h("li", { className: "notice", textContent: text });
  room.list.insertBefore(li, room.list.querySelector(":scope > li.unsent"));
  if (stick) scrollToBottom();
}

function renderTop(room) {
  let content;
  if (!room.firstSyncDone) content = h("span", { textContent: "Loading messages…" });
  else if (room.loadingHistory) content = h("span", { textContent: "Loading older messages…" });
  else if (room.historyFailed)
    content = h("button", { type: "button", className: "older", textContent: "Could not load older messages. Try again" });
  else if (room.hasMore)
    content = h("button", { type: "button", className: "older", textContent: "Load older messages" });
  else content = h("span", { textContent: `This is the beginning of #${room.name}.` });
  if (content.tagName === "BUTTON") content.addEventListener("click", () => loadOlder(room));
  room.top.replaceChildren(content);
}

function loadOlder(room) {
  if (!room.firstSyncDone || room.loadingHistory || !room.hasMore || !state.transport) return;
  const before = Number.isFinite(room.oldestId) ? room.oldestId : 0;
  if (!state.transport.history(room.name, before, HISTORY_PAGE)) return;
  room.loadingHistory = true;
  room.historyFailed = false;
  renderTop(room);
}

function onHistory(f) {
  const room = state.rooms.get(f.room);
  if (!room) return;
  room.loadingHistory = false;
  if (f.failed || !f.data) {
    room.historyFailed = true;
    renderTop(room);
    return;
  }
  const inView = room === state.current;
  const before = ui.log.scrollHeight - ui.log.scrollTop;
  const msgs = Array.isArray(f.data.messages) ? f.data.messages : [];
  for (const m of msgs) addMessage({ ...m, room: room.name }, { live: false });
  room.hasMore = !!f.data.has_more && msgs.length > 0;
  renderTop(room);
  if (inView) {
    // Keep what the reader was looking at in place while older messages appear above it.
    ui.log.scrollTop = ui.log.scrollHeight - before;
    maybeFillHistory(room);
  }
}

/** Loads older pages until the log can scroll (or there is nothing more). */
function maybeFillHistory(room) {
  if (room !== state.current || !room.synced || !room.hasMore) return;
  if (ui.log.scrollHeight <= ui.log.clientHeight + 8) loadOlder(room);
}

// ---------------------------------------------------------------------------------------------
// Sending and the outbox

function sendMessage(text) {
  const room = state.current;
  if (!room) return;
  const ref = `m${Date.now().toString(36)}-${++state.refSeq}`;
  const from = state.name || state.wantedName || "you";
  const entry = addEntry({ ref, room: room.name, text, from, ts: Date.now(), afterId: room.lastId, state: "queued" });
  scrollToBottom();
  updateEntryStatus(entry);
  flush(room);
}

/** Shows an outbox entry as a pending message of its room and adds it to the outbox. */
function addEntry(fields) {
  const room = state.rooms.get(fields.room);
  const el = messageEl({ from: fields.from, ts: fields.ts, data: fields.text }, { mine: true });
  el.classList.add("unsent");
  const entry = { ...fields, el, id: null, tries: 0 };
  state.outbox.push(entry);
  room.list.append(el);
  return entry;
}

function saveOutbox() {
  persisted.save(state.outbox);
}

/** Entries this page now owns from before a reload (or from a tab that closed): shown as
 *  pending again. Never-sent ones are sent when their room is in sync; ones that were sent but
 *  not acked are first looked up in the room's history (resolveUnconfirmed). */
function adoptEntries(list) {
  const touched = new Set();
  for (const e of list) {
    if (typeof e.room !== "string" || typeof e.text !== "string" || state.outbox.some((x) => x.ref === e.ref)) continue;
    const room = state.rooms.get(e.room) || joinRoom(e.room, { show: false });
    if (!room) continue;
    const restored = e.state === "failed" ? "failed" : e.state === "queued" ? "queued" : "unconfirmed";
    const entry = addEntry({
      ref: e.ref,
      room: e.room,
      text: e.text,
      from: typeof e.from === "string" ? e.from : state.wantedName,
      ts: Number(e.ts) || Date.now(),
      afterId: Number(e.afterId) || 0,
      state: restored,
      error: e.error,
      restored: true,
    });
    updateEntryStatus(entry);
    touched.add(room);
  }
  for (const room of touched) if (room.synced) resolveUnconfirmed(room);
  if (state.current?.stick) scrollToBottom();
}

function updateEntryStatus(entry) {
  const text = {
    queued: state.transport?.canSend(entry.room) ? "sending…" : "queued, will send when reconnected",
    sent: "sending…",
    unconfirmed: "checking…",
    failed: `not sent: ${entry.error || "error"}`,
  }[entry.state];
  saveOutbox();
  setStatus(entry.el, text, entry.state === "failed" ? "failed" : "pending");
  entry.el.querySelector(".retry")?.remove();
  if (entry.state === "failed") {
    const retry = h("button", { type: "button", className: "retry", textContent: "Retry" });
    retry.addEventListener("click", () => {
      entry.state = "queued";
      entry.tries = 0;
      updateEntryStatus(entry);
      const room = state.rooms.get(entry.room);
      if (room) flush(room);
    });
    const discard = h("button", { type: "button", className: "retry", textContent: "Discard" });
    discard.addEventListener("click", () => dropEntry(entry));
    entry.el.querySelector(".meta").append(retry, discard);
  }
}

/** Sends the room's queued messages, oldest first, once the room is in sync. */
function flush(room) {
  const t = state.transport;
  if (!t || !t.canSend(room.name) || !room.synced || room.checking) {
    for (const e of state.outbox) if (e.room === room.name && e.state === "queued") updateEntryStatus(e);
    return;
  }
  for (const e of state.outbox) {
    if (e.room !== room.name || e.state !== "queued") continue;
    // Kept as "sent" before it goes: a reload from here on looks it up before sending again.
    e.state = "sent";
    e.afterId = room.lastId;
    saveOutbox();
    if (!t.send(room.name, e.text, e.ref)) {
      e.state = "queued";
      updateEntryStatus(e);
      break;
    }
    e.tries += 1;
    updateEntryStatus(e);
  }
}

/** The message is stored: no longer pending. */
function settleEntry(entry) {
  entry.el.classList.remove("pending", "unsent", "failed");
  entry.el.querySelector(".status").textContent = "";
  entry.el.querySelectorAll(".retry").forEach((b) => b.remove());
  state.outbox = state.outbox.filter((e) => e !== entry);
  saveOutbox();
}

function dropEntry(entry) {
  if (entry.id == null) entry.el.remove();
  state.outbox = state.outbox.filter((e) => e !== entry);
  saveOutbox();
}

function onAck(f) {
  const entry = state.outbox.find((e) => e.ref === f.ref);
  if (!entry) return;
  const room = state.rooms.get(entry.room);
  if (!room || typeof f.id !== "number") return settleEntry(entry);
  const shown = room.byId.get(f.id);
  if (shown && shown !== entry.el) {
    shown.classList.remove("pending");
    const s = shown.querySelector(".status");
    if (s) s.textContent = "";
    if (entry.id == null) entry.el.remove();
  } else if (!shown) {
    // The ack beat the broadcast (possible over SSE): place it now, the broadcast is a dup.
    entry.id = f.id;
    entry.el.classList.remove("unsent");
    entry.el.dataset.id = String(f.id);
    room.byId.set(f.id, entry.el);
    if (f.id < room.oldestId) room.oldestId = f.id;
    placeMessage(room, entry.el, f.id);
  }
  settleEntry(entry);
}

function onError(f) {
  const code = f.data?.code || "error";
  const message = f.data?.message || code;
  const ref = f.ref == null ? null : String(f.ref);
  if (ref?.startsWith("join:")) {
    const room = state.rooms.get(ref.slice(5));
    // Keep the last room even so (no endless leave/rejoin of lobby); drop any other.
    if (room && state.rooms.size > 1) leaveRoom(room, { tellServer: false, notify: false });
    if (code === "unauthorized") {
      const rooms = Array.isArray(auth.claims?.rooms) ? auth.claims.rooms.filter((r) => typeof r === "string") : [];
      const allowed = rooms.length ? ` Your sign-in allows: ${rooms.map((r) => `#${r}`).join(", ")}.` : "";
      announce(`You don't have access to #${ref.slice(5)}.${allowed}`, { sticky: true });
    } else {
      announce(`Could not join #${ref.slice(5)}: ${message}`);
    }
    return;
  }
  if (code === "unauthorized" && !ref) {
    announce(`Not allowed: ${message}`, { sticky: true });
    return;
  }
  if (ref === "nick") {
    state.nickPending = null;
    announce(`Could not change your name: ${message}`);
    ui.name.value = state.name;
    return;
  }
  const entry = ref && state.outbox.find((e) => e.ref === ref);
  if (!entry) {
    announce(`Server: ${message}`);
    return;
  }
  const room = state.rooms.get(entry.room);
  switch (code) {
    case "network": // SSE transport: the POST failed, it may or may not be stored
      entry.state = "unconfirmed";
      if (room) room.synced = false;
      updateEntryStatus(entry);
      setTimeout(() => {
        if (entry.state === "unconfirmed" && room && state.transport?.canSend(room.name)) {
          entry.state = "queued";
          room.synced = true;
          flush(room);
        }
      }, 3000);
      return;
    case "rate_limited":
    case "store_unavailable":
      entry.state = "queued";
      updateEntryStatus(entry);
      setTimeout(() => room && flush(room), Math.min(10000, 1000 * 2 ** Math.min(entry.tries, 4)));
      return;
    case "not_member":
      entry.state = "queued";
      if (room) sendJoin(room);
      return;
    default:
      entry.state = "failed";
      entry.error = message;
      updateEntryStatus(entry);
  }
}

// ---------------------------------------------------------------------------------------------
// Joining, syncing, presence, typing

function onJoined(f) {
  const room = state.rooms.get(f.room);
  if (!room) {
    // We left it while the join was in flight.
    state.transport?.leave(f.room);
    return;
  }
  const d = f.data || {};
  if (typeof d.last_id === "number" && d.last_id < room.lastId) {
    // The server's history went backwards (its data was wiped): ids we saw mean nothing now.
    // Our join asked for since=<old id>, which the server also uses to filter live messages,
    // so join again from scratch: leave, then join with no `since`.
    resetRoomHistory(room);
    rejoinFromScratch(room);
    return;
  }
  room.members = Array.isArray(d.members) ? d.members.map(String) : [];
  // Large rooms list only a sample in `members`, with the total in `count`.
  room.count = typeof d.count === "number" ? d.count : room.members.length;
  room.membersStale = room.count > room.members.length;
  room.inServer = true;
  room.syncTarget = typeof d.last_id === "number" ? d.last_id : 0;
  if (room.baseline == null) room.baseline = room.syncTarget;
  if (room.syncTarget === 0 && room.byId.size === 0) room.hasMore = false;
  clearTimeout(room.syncTimer);
  room.syncTimer = setTimeout(() => markSynced(room), SYNC_TIMEOUT_MS);
  if (room === state.current) renderMembers();
  renderRooms();
  checkSynced(room);
  refreshDirectorySoon();
}

function resetRoomHistory(room) {
  for (const li of [...room.list.children]) if (!li.classList.contains("unsent")) li.remove();
  room.byId.clear();
  room.lastId = 0;
  room.oldestId = Infinity;
  room.newestPlaced = undefined;
  room.baseline = null;
  room.firstSyncDone = false;
  room.hasMore = true;
  for (const e of [...state.outbox]) if (e.room === room.name && e.id != null) settleEntry(e);
  addNotice(room, "The server's history was reset.");
  renderTop(room);
}

function rejoinFromScratch(room) {
  const t = state.transport;
  if (t.kind === "websocket") t.leave(room.name);
  else t.closeRoom(room.name);
  sendJoin(room);
}

function markUnsynced(room) {
  clearTimeout(room.syncTimer);
  room.inServer = false;
  room.synced = false;
  room.typing.clear();
}

function checkSynced(room) {
  if (!room.synced && room.inServer && room.lastId >= room.syncTarget) markSynced(room);
}

function markSynced(room) {
  clearTimeout(room.syncTimer);
  if (room.synced || !state.rooms.has(room.name)) return;
  room.synced = true;
  // First sync: decide whether there is older history than the replayed page.
  if (room.firstSyncDone !== true) {
    room.firstSyncDone = true;
    room.hasMore = Number.isFinite(room.oldestId) ? room.oldestId > 1 : false;
    renderTop(room);
    maybeFillHistory(room);
  }
  resolveUnconfirmed(room);
}

/** Messages sent before the connection dropped whose ack was lost. If its broadcast came back
 *  (it has an id) it is stored; if neither that nor the replay since the room's last id showed
 *  it, it never got stored: send it again. After a reload the page has no such replay (it
 *  joined afresh), so it asks the room's history for it first: there is no idempotency key in
 *  the protocol, so only "not in the history" makes a second send safe. */
function resolveUnconfirmed(room) {
  const lookUp = [];
  for (const e of [...state.outbox]) {
    if (e.room !== room.name || e.state !== "unconfirmed") continue;
    if (e.id != null) settleEntry(e);
    else if (e.restored) lookUp.push(e);
    else e.state = "queued";
  }
  if (lookUp.length && !room.checking) lookUpStored(room, lookUp);
  flush(room);
}

async function lookUpStored(room, entries) {
  room.checking = true;
  let stored = null;
  try {
    stored = await messagesAfter(room.name, Math.min(...entries.map((e) => e.afterId)), authHeaders());
  } catch {
    /* the server cannot say now: ask again shortly */
  }
  room.checking = false;
  if (!stored) {
    setTimeout(() => room.synced && resolveUnconfirmed(room), 3000);
    return;
  }
  const taken = new Set(state.outbox.map((e) => e.id).filter((id) => id != null));
  for (const e of entries) {
    if (e.state !== "unconfirmed" || e.id != null || !state.outbox.includes(e)) continue;
    const hit = stored.find((m) => m.id > e.afterId && !taken.has(m.id) && m.from === state.name && m.data === e.text);
    e.restored = false;
    if (!hit) {
      e.state = "queued";
      continue;
    }
    // Stored before the reload: the replay or the history shows it; the copy here goes.
    taken.add(hit.id);
    e.id = hit.id;
    if (room.byId.get(hit.id) !== e.el) e.el.remove();
    settleEntry(e);
  }
  if (room.synced) resolveUnconfirmed(room);
}

function onPresence(f) {
  const room = state.rooms.get(f.room);
  if (!room || !f.data) return;
  if (typeof f.data.joined === "string") {
    room.members.push(f.data.joined);
    room.count = (room.count ?? room.members.length - 1) + 1;
    addNotice(room, `${f.data.joined} joined`);
  } else if (typeof f.data.left === "string") {
    const i = room.members.indexOf(f.data.left);
    if (i >= 0) room.members.splice(i, 1);
    room.count = Math.max(room.members.length, (room.count ?? room.members.length + 1) - 1);
    room.typing.delete(f.data.left);
    addNotice(room, `${f.data.left} left`);
  } else if (typeof f.data.count === "number") {
    // A large room: one head count per tick instead of every arrival and departure.
    room.count = f.data.count;
    room.membersStale = true;
  }
  if (room === state.current) {
    renderMembers();
    renderTyping();
  }
  renderRooms();
}

/** `members`: the full list, asked for with the "Show all" button in large rooms. */
function onMembers(f) {
  const room = state.rooms.get(f.room);
  if (!room || !f.data || !Array.isArray(f.data.members)) return;
  room.members = f.data.members.map(String);
  room.count = typeof f.data.count === "number" ? f.data.count : room.members.length;
  room.membersStale = room.count > room.members.length;
  if (room === state.current) renderMembers();
  renderRooms();
}

function onTyping(f) {
  const room = state.rooms.get(f.room);
  if (!room || typeof f.from !== "string" || f.from === state.name) return;
  room.typing.set(f.from, Date.now() + TYPING_SHOW_MS);
  if (room === state.current) renderTyping();
}

let typingTimer = null;
function renderTyping() {
  const room = state.current;
  clearTimeout(typingTimer);
  if (!room) return;
  const now = Date.now();
  for (const [n, exp] of room.typing) if (exp <= now) room.typing.delete(n);
  const names = [...room.typing.keys()];
  let text = "";
  if (names.length === 1) text = `${names[0]} is typing...`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing...`;
  else if (names.length > 2) text = "Several people are typing...";
  if (ui.typing.textContent !== text) ui.typing.textContent = text;
  if (names.length) typingTimer = setTimeout(renderTyping, 1000);
}

function noteTyping() {
  const room = state.current;
  const t = state.transport;
  if (!room || !t?.connected || !room.inServer || !ui.message.value) return;
  const now = Date.now();
  if (now - (state.lastTypingSent.get(room.name) || 0) < TYPING_EVERY_MS) return;
  if (t.typing(room.name)) state.lastTypingSent.set(room.name, now);
}

// ---------------------------------------------------------------------------------------------
// Rendering: rooms, members, connection state

function renderRooms() {
  const items = [];
  for (const room of state.rooms.values()) {
    const isCurrent = room === state.current;
    const members = room.inServer ? (room.count ?? room.members.length) : state.directory.get(room.name)?.members;
    const btn = h(
      "button",
      { type: "button", className: "room-btn" },
      h("span", { className: "room-name", textContent: `#${room.name}` }),
      members != null
        ? h("span", { className: "room-members", textContent: `${members}`, title: `${members} online` },
            h("span", { className: "visually-hidden", textContent: members === 1 ? " member" : " members" }))
        : null,
      room.unread > 0 && !isCurrent
        ? h("span", { className: "unread", textContent: String(room.unread) },
            h("span", { className: "visually-hidden", textContent: " unread" }))
        : null,
    );
    if (isCurrent) btn.setAttribute("aria-current", "true");
    btn.addEventListener("click", () => {
      showRoom(room);
      closeDrawer();
      ui.message.focus();
    });
    items.push(h("li", { dataset: { room: room.name } }, btn));
  }
  // Re-rendering must not steal keyboard focus from a room button.
  const focused = document.activeElement?.closest?.("#room-list li, #other-rooms li");
  const focusKey = focused ? `${focused.parentElement.id}:${focused.dataset.room}` : null;
  ui.roomList.replaceChildren(...items);

  const others = [];
  for (const [name, info] of [...state.directory].sort((a, b) => b[1].members - a[1].members || a[0].localeCompare(b[0]))) {
    if (state.rooms.has(name)) continue;
    const btn = h(
      "button",
      { type: "button", className: "room-btn other", attrs: { "aria-label": `Join #${name} (${info.members} online)` } },
      h("span", { className: "room-name", textContent: `#${name}` }),
      h("span", { className: "room-members", textContent: String(info.members) }),
    );
    btn.addEventListener("click", () => {
      joinRoom(name);
      closeDrawer();
      ui.message.focus();
    });
    others.push(h("li", { dataset: { room: name } }, btn));
  }
  ui.otherRooms.replaceChildren(...others);
  ui.leave.hidden = state.rooms.size < 2; // always keep one room to talk in
  ui.otherRooms.hidden = ui.otherRoomsHeading.hidden = others.length === 0;
  if (focusKey) {
    const [list, name] = focusKey.split(":");
    const target = [...document.querySelectorAll(`#${list} li`)].find((li) => li.dataset.room === name)
      || (list === "other-rooms" ? [...ui.roomList.children].find((li) => li.dataset.room === name) : null);
    target?.querySelector("button")?.focus();
  }
  updateTitle();
}

function renderMembers() {
  const room = state.current;
  if (!room) return;
  const counts = new Map();
  for (const m of room.members) counts.set(m, (counts.get(m) || 0) + 1);
  const all = [...counts.keys()].sort((a, b) => a.localeCompare(b));
  const names = all.slice(0, MEMBERS_SHOWN);
  const large = room.membersStale || all.length > names.length;
  ui.memberCount.textContent = `(${large ? room.count ?? all.length : all.length})`;
  let more = null;
  if (large) {
    const hidden = Math.max(0, (room.count ?? all.length) - names.length);
    const canAsk = state.transport?.kind === "websocket";
    const btn = canAsk
      ? h("button", { type: "button", className: "link-btn", textContent: room.membersStale ? "Show all" : "Refresh" })
      : null;
    btn?.addEventListener("click", () => state.transport?.sendFrame({ type: "members", room: room.name }));
    more = h(
      "li",
      { className: "more-members" },
      h("span", { textContent: hidden > 0 ? `and ${hidden} more ` : "list may be out of date " }),
      btn,
    );
  }
  ui.memberList.replaceChildren(
    ...names.map((n) => {
      const dot = h("span", { className: "avatar", attrs: { "aria-hidden": "true" }, textContent: [...n][0]?.toUpperCase() || "?" });
      dot.style.setProperty("--hue", String(nameHue(n)));
      return h(
        "li",
        { dataset: { name: n } },
        dot,
        h("span", { className: "member-name", textContent: n }),
        n === state.name ? h("span", { className: "you", textContent: " (you)" }) : null,
        counts.get(n) > 1 ? h("span", { className: "tabs", textContent: ` ×${counts.get(n)}` }) : null,
      );
    }),
    ...(more ? [more] : []),
  );
}

function updateTitle() {
  let total = 0;
  for (const r of state.rooms.values()) total += r.unread;
  const inTitle = total + state.unseen;
  // On a phone the room list hides in a drawer: its toggle carries the unread total.
  const badge = document.getElementById("drawer-unread");
  if (badge) {
    badge.hidden = total === 0;
    badge.replaceChildren(String(total), h("span", { className: "visually-hidden", textContent: " unread" }));
  }
  const room = state.current ? `#${state.current.name} · ` : "";
  document.title = `${inTitle ? `(${inTitle}) ` : ""}${room}hubbub`;
}

let connTimer = null;
function renderConn() {
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

/** Shows a notice; a sticky one stays until the next notice replaces it. */
function announce(text, { sticky = false } = {}) {
  ui.alert.textContent = text;
  clearTimeout(announce.timer);
  if (!sticky) announce.timer = setTimeout(() => (ui.alert.textContent = ""), 8000);
}

/** The server refused our credentials (401): stop for good and say why. A reload (with a new
 *  token in the address, or after signing in again) is the way back. */
function authFailed(reason) {
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
    required: "Cannot connect: this server needs a sign-in token. Open hubbub with the link (…/?token=…) you were given.",
  }[reason];
  announce(text, { sticky: true });
}

// ---------------------------------------------------------------------------------------------
// Room directory (GET /api/rooms)

async function refreshDirectory() {
  try {
    if (state.authFailed) return;
    const r = await fetch("/api/rooms", { cache: "no-store", headers: authHeaders() });
    if (!r.ok) return;
    const list = await r.json();
    if (!Array.isArray(list)) return;
    state.directory = new Map(
      list
        .filter((x) => x && typeof x.room === "string")
        .map((x) => [x.room, { members: Number(x.members) || 0, last_id: Number(x.last_id) || 0 }]),
    );
    renderRooms();
  } catch {
    /* offline: keep the last list */
  }
}
let dirTimer = null;
function refreshDirectorySoon() {
  clearTimeout(dirTimer);
  dirTimer = setTimeout(refreshDirectory, 400);
}

// ---------------------------------------------------------------------------------------------
// Transport wiring

const handlers = {
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
        break; // newer server, newer frame types: ignore
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

function onWelcome(f) {
  const name = f.data?.name;
  if (typeof name !== "string") return;
  const old = state.name;
  state.name = name;
  state.nickPending = null;
  if (document.activeElement !== ui.name) ui.name.value = name;
  ui.nameHint.textContent = auth.claims ? "(from your sign-in)" : state.wantedName ? "" : "(a guest name: type yours)";
  if (old !== name) {
    for (const el of document.querySelectorAll("li.msg.unsent .from")) el.textContent = name;
    // The server tells the *other* members about a nick change; our own lists we fix here.
    if (old) {
      for (const room of state.rooms.values()) {
        const i = room.members.indexOf(old);
        if (i >= 0) room.members[i] = name;
      }
    }
    renderMembers();
  }
}

function guestName() {
  let g = sessionStorage.getItem("hubbub.guest");
  if (!g) {
    g = `guest-${String(Math.floor(1000 + Math.random() * 9000))}`;
    sessionStorage.setItem("hubbub.guest", g);
  }
  return g;
}

function useTransport(kind) {
  state.transport?.stop();
  if (state.authFailed) return;
  const getName = () => state.wantedName || (kind === "sse" ? guestName() : "");
  const getSince = (room) => state.rooms.get(room)?.lastId || 0;
  state.transport =
    kind === "sse" ? new SseTransport(handlers, { getName, getSince }) : new WsTransport(handlers, { getName });
  document.documentElement.dataset.transport = state.transport.kind;
  if (kind === "sse") {
    // No `welcome` over SSE (the name is ours to pick): take it as the server would.
    onWelcome({ data: { name: getName() } });
  }
  for (const room of state.rooms.values()) {
    room.inServer = false;
    room.synced = false;
  }
  state.transport.start();
}

// ---------------------------------------------------------------------------------------------
// UI events

function closeDrawer() {
  ui.sidebar.classList.remove("open");
  ui.drawerToggle.setAttribute("aria-expanded", "false");
}

// The skip link must not touch location.hash: "#message" would read as a room deep link.
document.querySelector(".skip-link")?.addEventListener("click", (e) => {
  e.preventDefault();
  ui.message.focus();
});

ui.drawerToggle.addEventListener("click", () => {
  const open = !ui.sidebar.classList.contains("open");
  ui.sidebar.classList.toggle("open", open);
  ui.drawerToggle.setAttribute("aria-expanded", String(open));
  if (open) ui.sidebar.querySelector("button, input")?.focus();
});

ui.nameForm.addEventListener("submit", (e) => {
  e.preventDefault();
  commitName();
  ui.message.focus();
});
ui.name.addEventListener("change", commitName);
ui.name.addEventListener("input", () => ui.name.setCustomValidity(""));

function commitName() {
  if (auth.claims) return; // the token's `sub` is the name; the server refuses any other
  const v = normaliseName(ui.name.value);
  if (!v.ok) {
    ui.name.setCustomValidity(v.why);
    ui.name.reportValidity();
    return;
  }
  ui.name.setCustomValidity("");
  // Both "submit" and "change" land here: ask the server once per new name.
  if (v.name === state.wantedName && (v.name === state.name || v.name === state.nickPending)) return;
  state.wantedName = v.name;
  store.set("name", v.name);
  ui.nameHint.textContent = "";
  const t = state.transport;
  if (t?.kind === "websocket") {
    if (t.connected) {
      state.nickPending = v.name;
      t.sendFrame({ type: "nick", data: v.name, ref: "nick" });
    }
    // Not connected: the next connection carries ?name=; one still connecting sends `nick`
    // when it opens (handlers.onOpen).
  } else if (t) {
    t.nick(v.name);
  }
}

ui.joinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const name = ui.joinRoom.value.trim().replace(/^#/, "");
  if (!ROOM_RE.test(name)) {
    ui.joinRoom.setCustomValidity('1-64 letters, digits, "_", "." or "-"');
    ui.joinRoom.reportValidity();
    return;
  }
  ui.joinRoom.value = "";
  joinRoom(name);
  closeDrawer();
  ui.message.focus();
});
ui.joinRoom.addEventListener("input", () => ui.joinRoom.setCustomValidity(""));

ui.leave.addEventListener("click", () => state.current && leaveRoom(state.current));

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.message.value.replace(/\s+$/, "");
  if (!text.trim()) return;
  ui.message.value = "";
  autoGrow();
  sendMessage(text);
  // Receivers clear "X is typing" when X's message arrives: the next keystroke may say so again.
  if (state.current) state.lastTypingSent.delete(state.current.name);
  ui.message.focus();
});

ui.message.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
    e.preventDefault();
    ui.composer.requestSubmit();
  } else if (e.key === "Escape") {
    scrollToBottom();
  }
});
ui.message.addEventListener("input", () => {
  autoGrow();
  noteTyping();
});

function autoGrow() {
  ui.message.style.height = "auto";
  ui.message.style.height = `${Math.min(ui.message.scrollHeight, 180)}px`;
}

document.addEventListener("keydown", (e) => {
  if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    e.preventDefault();
    switchBy(e.key === "ArrowUp" ? -1 : 1);
  } else if (e.key === "Escape" && ui.sidebar.classList.contains("open")) {
    closeDrawer();
    ui.drawerToggle.focus();
  }
});

ui.log.addEventListener("scroll", () => {
  const room = state.current;
  if (!room) return;
  room.stick = isAtBottom();
  if (room.stick) ui.jump.hidden = true;
  if (ui.log.scrollTop < 80) loadOlder(room);
});
// A phone's on-screen keyboard, a rotation or a window resize changes the log's height: keep
// the newest message in sight if the reader was at the bottom.
new ResizeObserver(() => {
  if (state.current?.stick) ui.log.scrollTop = ui.log.scrollHeight;
}).observe(ui.log);
ui.jump.addEventListener("click", () => {
  scrollToBottom();
  ui.message.focus();
});
ui.retry.addEventListener("click", () => state.transport?.retryNow());

window.addEventListener("hashchange", () => {
  const name = decodeURIComponent(location.hash.slice(1));
  if (name && name !== state.current?.name && ROOM_RE.test(name)) joinRoom(name);
});
window.addEventListener("online", () => state.transport?.retryNow());
window.addEventListener("focus", () => refreshDirectory());
window.addEventListener("offline", () => state.transport?.goOffline());
document.addEventListener("visibilitychange", () => {
  if (!document.hidden) {
    state.unseen = 0;
    state.transport?.retryNow();
    updateTitle();
  }
});
setInterval(() => {
  if (!document.hidden) refreshDirectory();
}, DIRECTORY_EVERY_MS);

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  ui.name.value = state.wantedName;
  if (auth.claims) {
    ui.name.readOnly = true;
    ui.name.title = "Your name comes from your sign-in token";
    ui.nameHint.textContent = "(from your sign-in)";
  }
  const hashRoom = decodeURIComponent(location.hash.slice(1));
  const saved = store.get("rooms", []);
  const names = (Array.isArray(saved) ? saved : []).filter(
    (n) => typeof n === "string" && ROOM_RE.test(n) && tokenAllows(n),
  );
  let first = ROOM_RE.test(hashRoom) ? hashRoom : store.get("current", "lobby");
  if (!ROOM_RE.test(first)) first = "lobby";
  if (!tokenAllows(first) && first !== hashRoom) {
    // Land in a room the token allows: one already saved, else one it names outright.
    const literal = (auth.claims?.rooms || []).find((r) => typeof r === "string" && ROOM_RE.test(r));
    first = names[0] || literal || first;
  }
  if (!names.includes(first)) names.push(first);
  for (const n of names) state.rooms.set(n, makeRoom(n));
  for (const room of state.rooms.values()) renderTop(room);
  persistRooms();
  showRoom(state.rooms.get(first));
  persisted.start(adoptEntries).catch((e) => console.warn("hubbub: the outbox is not kept across reloads:", e));
  renderConn();
  if (auth.badUrlToken) announce("The sign-in token in the address is not a valid token; it was ignored.", { sticky: true });
  if (tokenExpired()) {
    authFailed("expired");
    return;
  }
  const wsMissing = typeof WebSocket === "undefined";
  useTransport(forcedTransport === "sse" || wsMissing ? "sse" : "websocket");
  refreshDirectory();
}

start();
