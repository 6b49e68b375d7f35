// Your rooms: join, leave, show, switch; and the room directory (GET /api/rooms).

import { authHeaders } from "./transport.js";
import { ROOM_RE, store, state, makeRoom } from "./state.js";
import { ui, announce } from "./ui.js";
import { isAtBottom, scrollToBottom, renderTop, maybeFillHistory } from "./log.js";
import { dropEntry } from "./sending.js";
import { renderTyping, renderMembers } from "./presence.js";
import { renderRooms, updateTitle } from "./sidebar.js";
import { renderRoomHead } from "./moderation.js";
import { markRead } from "./marks.js";
import { renderReplyBar } from "./replies.js";
import { closePickers } from "./reactions.js";

export function persistRooms() {
  store.set("rooms", [...state.rooms.keys()]);
}

/** Joins (or creates) a room and optionally brings it into view. */
export function joinRoom(name, { show = true } = {}) {
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

export function sendJoin(room) {
  room.inServer = false;
  room.synced = false;
  clearTimeout(room.syncTimer);
  const t = state.transport;
  if (t.kind === "websocket") {
    const f = { type: "join", room: room.name, ref: `join:${room.name}` };
    if (room.lastId > 0) f.data = { since: room.lastId };
    // Edits, deletes and reactions made while we were away, from our change cursor on.
    if (room.lastId > 0 && room.changeSeq != null) f.data.changes_since = room.changeSeq;
    t.sendFrame(f);
  } else {
    t.join(room.name, room.lastId);
  }
}

export function leaveRoom(room, { tellServer = true, notify = true } = {}) {
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

export function showRoom(room) {
  const prev = state.current;
  if (prev && prev !== room) {
    prev.stick = isAtBottom();
    prev.scrollTop = ui.log.scrollTop;
  }
  state.current = room;
  room.unread = 0;
  room.mentions = 0;
  const label = room.label || `#${room.name}`;
  ui.log.replaceChildren(room.container);
  ui.log.setAttribute("aria-label", `Messages in ${label}`);
  renderRoomHead();
  ui.message.placeholder = `Message ${label}`;
  ui.leave.textContent = "Leave";
  ui.leave.setAttribute("aria-label", `Leave ${label}`);
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
  renderReplyBar();
  closePickers();
  updateTitle();
  maybeFillHistory(room);
  markRead(room);
}

export function switchBy(delta) {
  const names = [...state.rooms.keys()];
  if (names.length < 2 || !state.current) return;
  const i = names.indexOf(state.current.name);
  showRoom(state.rooms.get(names[(i + delta + names.length) % names.length]));
}

// ---------------------------------------------------------------------------------------------
// Room directory (GET /api/rooms)

export async function refreshDirectory() {
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
export function refreshDirectorySoon() {
  clearTimeout(dirTimer);
  dirTimer = setTimeout(refreshDirectory, 400);
}
