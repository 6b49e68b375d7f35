// Changes to stored messages (issue 20; docs/protocol.md "Changes to messages"): `change`
// frames (edit, delete, react), the `state` of history pages, and the room's change cursor that
// a rejoin sends as `changes_since`.
//
// Per room, `room.facts` keeps what the client knows of each shown message: its sender and
// text, when it was edited, its reactions (emoji -> {count, by}) and `seq`, the number of the
// newest change applied to it. A change, or a history page's state, older than what a message
// already shows is not applied again, so a late answer never undoes a newer change.

import { state } from "./state.js";
import { authHeaders } from "./transport.js";
import { linkify } from "./render.js";
import { tombstone } from "./moderation.js";
import { renderReactions } from "./reactions.js";
import { renderEdited } from "./message_actions.js";
import { refreshQuotes } from "./replies.js";

/** The facts of message `id` of `room`, made on first use. */
export function factsOf(room, id) {
  let f = room.facts.get(id);
  if (!f) {
    f = { from: "", text: "", editedMs: null, reactions: new Map(), seq: 0, deleted: false };
    room.facts.set(id, f);
  }
  return f;
}

/** A message was shown (live, replayed or from history): remember who wrote what. */
export function noteMessage(room, m) {
  const f = factsOf(room, m.id);
  f.from = String(m.from ?? "");
  f.text = m.data;
  f.deleted = m.deleted === true;
  refreshQuotes(room, m.id);
}

/** Moves the room's change cursor forward to `seq`. */
function advance(room, seq) {
  if (typeof seq === "number" && seq > (room.changeSeq ?? 0)) room.changeSeq = seq;
}

/** `change`: a message was edited, deleted or reacted to. */
export function onChange(frame) {
  const room = state.rooms.get(frame.room);
  const d = frame.data;
  if (!room || !d || typeof d.seq !== "number" || typeof d.id !== "number") return;
  advance(room, d.seq);
  const li = room.byId.get(d.id);
  if (!li) return; // a message we do not show (the catch-up sends those too)
  const f = factsOf(room, d.id);
  if (f.seq >= d.seq) return; // already reflected
  f.seq = d.seq;
  if (d.kind === "edit" && typeof d.text === "string") {
    f.text = d.text;
    f.editedMs = typeof d.edited_ms === "number" ? d.edited_ms : Date.now();
    if (!f.deleted) showText(li, d.text);
    renderEdited(room, li);
  } else if (d.kind === "delete") {
    f.deleted = true;
    f.text = "";
    f.reactions.clear();
    removeMessage(li);
  } else if (d.kind === "react" && typeof d.emoji === "string") {
    applyReaction(f, d);
    renderReactions(room, li);
  }
  refreshQuotes(room, d.id);
}

function showText(li, text) {
  const el = li.querySelector(".text");
  if (el && !li.classList.contains("editing")) el.replaceChildren(linkify(text));
}

/** A deleted message: a tombstone, without its attachment, reactions or actions. */
export function removeMessage(li) {
  tombstone(li);
  for (const sel of [".attachment", ".reactions", ".actions", ".edited", ".confirm"]) li.querySelector(sel)?.remove();
  li.classList.remove("editing");
}

function applyReaction(f, d) {
  const name = typeof d.name === "string" ? d.name : "";
  const r = f.reactions.get(d.emoji) || { count: 0, by: [] };
  if (d.on === true && name && !r.by.includes(name)) r.by.push(name);
  if (d.on === false) r.by = r.by.filter((n) => n !== name);
  r.count = typeof d.count === "number" ? d.count : r.by.length;
  if (r.count > 0) f.reactions.set(d.emoji, r);
  else f.reactions.delete(d.emoji);
}

/** A history page's `state` (edit marks and reactions of its messages) as of its `changes`. */
export function applyHistoryState(room, data) {
  if (!data || !Array.isArray(data.messages)) return;
  const cursor = typeof data.changes === "number" ? data.changes : null;
  if (cursor == null) return; // a server without the change feed
  const states = new Map();
  for (const s of Array.isArray(data.state) ? data.state : []) if (typeof s?.id === "number") states.set(s.id, s);
  for (const m of data.messages) {
    const li = room.byId.get(m?.id);
    const f = room.facts.get(m?.id);
    if (!li || !f || f.seq > cursor) continue; // a newer change already shows
    const s = states.get(m.id);
    if (typeof s?.edited_ms === "number") f.editedMs = s.edited_ms;
    f.reactions = new Map();
    for (const r of Array.isArray(s?.reactions) ? s.reactions : []) {
      if (typeof r?.emoji !== "string" || !(r.count > 0)) continue;
      f.reactions.set(r.emoji, { count: r.count, by: Array.isArray(r.by) ? r.by.map(String) : [] });
    }
    if (f.deleted) continue;
    renderEdited(room, li);
    renderReactions(room, li);
  }
}

/** After a room's first sync: reads the history page covering the messages shown (the replay
 *  carries current text, not edit marks or reactions) over the HTTP API, and takes its
 *  `changes` as the change cursor. Later changes arrive live, then by `changes_since`. */
export async function loadRoomState(room) {
  if (room.stateLoading) return;
  room.stateLoading = true;
  const newest = room.lastId;
  const oldest = Number.isFinite(room.oldestId) ? room.oldestId : newest;
  const q = new URLSearchParams({ limit: String(Math.max(1, Math.min(200, newest - oldest + 1))) });
  if (newest > 0) q.set("before", String(newest + 1));
  try {
    const r = await fetch(`/api/rooms/${encodeURIComponent(room.name)}/messages?${q}`, {
      cache: "no-store",
      headers: authHeaders(),
    });
    if (!r.ok) return;
    const data = await r.json();
    if (state.rooms.get(room.name) !== room) return;
    applyHistoryState(room, data);
    advance(room, data?.changes);
    if (typeof data?.changes === "number" && room.changeSeq == null) room.changeSeq = data.changes;
    room.stateLoaded = true;
  } catch {
    /* offline: the next sync asks again */
  } finally {
    room.stateLoading = false;
  }
}

/** The server's history was wiped: what we knew of its messages and changes means nothing. */
export function forgetChanges(room) {
  room.facts.clear();
  room.changeSeq = null;
  room.stateLoaded = false;
}
