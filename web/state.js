// The client's state: constants, the localStorage helper, the one `state` object (rooms,
// outbox, connection) and the shape of a room. Everything else reads and changes it.

import { PersistentOutbox } from "./outbox.js";
import { h } from "./render.js";
import { auth } from "./auth.js";

export const ROOM_RE = /^[A-Za-z0-9_.-]{1,64}$/;
export const HISTORY_PAGE = 50;
export const TYPING_EVERY_MS = 2000; // send `typing` at most this often
export const TYPING_SHOW_MS = 4000; // show "X is typing" this long after the last notification
export const SYNC_TIMEOUT_MS = 5000;
export const DIRECTORY_EVERY_MS = 15000;
export const MEMBERS_SHOWN = 200; // the member list shows at most this many names

export const store = {
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
export function normaliseName(raw) {
  const name = String(raw ?? "").normalize("NFC").trim();
  if (name.length === 0) return { ok: false, name, why: "Please enter a name." };
  if ([...name].length > 32) return { ok: false, name, why: "Names are at most 32 characters." };
  if (/\p{Cc}/u.test(name)) return { ok: false, name, why: "No control characters." };
  return { ok: true, name };
}

export const state = {
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

export function makeRoom(name) {
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
    facts: new Map(), // message id -> {from, text, editedMs, reactions, seq}: see changes.js
    changeSeq: null, // highest change `seq` applied (null: no cursor yet), for changes_since
  };
}
export const persisted = new PersistentOutbox(auth.claims?.sub || "");
