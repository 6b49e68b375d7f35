// Sending and the outbox: pending messages, acks, errors, and the look-up of messages whose
// ack was lost (docs/web-client.md, "The offline queue").

import { authHeaders } from "./transport.js";
import { messagesAfter } from "./outbox.js";
import { h } from "./render.js";
import { state, persisted } from "./state.js";
import { auth } from "./auth.js";
import { ui, announce } from "./ui.js";
import { joinRoom, sendJoin, leaveRoom } from "./rooms.js";
import { scrollToBottom, messageEl, placeMessage, setStatus } from "./log.js";
import { noteMessage } from "./changes.js";
import { decorateMessage } from "./message_actions.js";

// ---------------------------------------------------------------------------------------------
// Sending and the outbox

/** Sends `text` to the room in view; `replyTo` (a message id) and `attachment` (`{hash, name,
 *  type, size}` of an uploaded file) are optional. */
export function sendMessage(text, { replyTo = null, attachment = null, room = state.current } = {}) {
  if (!room) return;
  const ref = `m${Date.now().toString(36)}-${++state.refSeq}`;
  const from = state.name || state.wantedName || "you";
  const fields = { ref, room: room.name, text, from, ts: Date.now(), afterId: room.lastId, state: "queued" };
  if (replyTo) fields.replyTo = replyTo;
  if (attachment) fields.attachment = attachment;
  const entry = addEntry(fields);
  scrollToBottom();
  updateEntryStatus(entry);
  flush(room);
}

/** Shows an outbox entry as a pending message of its room and adds it to the outbox. */
export function addEntry(fields) {
  const room = state.rooms.get(fields.room);
  const el = messageEl(
    { room: fields.room, from: fields.from, ts: fields.ts, data: fields.text, reply_to: fields.replyTo, attachment: fields.attachment },
    { mine: true },
  );
  el.classList.add("unsent");
  const entry = { ...fields, el, id: null, tries: 0 };
  state.outbox.push(entry);
  room.list.append(el);
  return entry;
}

export function saveOutbox() {
  persisted.save(state.outbox);
}

/** Entries this page now owns from before a reload (or from a tab that closed): shown as
 *  pending again. Never-sent ones are sent when their room is in sync; ones that were sent but
 *  not acked are first looked up in the room's history (resolveUnconfirmed). */
export function adoptEntries(list) {
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
      replyTo: Number(e.replyTo) > 0 ? Number(e.replyTo) : undefined,
      attachment: e.attachment && typeof e.attachment.hash === "string" ? e.attachment : undefined,
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

export function updateEntryStatus(entry) {
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
export function flush(room) {
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
    if (!t.send(room.name, e.text, e.ref, wireExtras(e))) {
      e.state = "queued";
      updateEntryStatus(e);
      break;
    }
    e.tries += 1;
    updateEntryStatus(e);
  }
}

/** A message's optional fields as the protocol names them: `reply_to` and `attachment`
 *  (`{hash, name}`: the server reads the type and size from the stored file). */
function wireExtras(e) {
  const extra = {};
  if (e.replyTo) extra.reply_to = e.replyTo;
  if (e.attachment) extra.attachment = { hash: e.attachment.hash, name: e.attachment.name };
  return extra;
}

/** The message is stored: no longer pending. */
export function settleEntry(entry) {
  entry.el.classList.remove("pending", "unsent", "failed");
  entry.el.querySelector(".status").textContent = "";
  entry.el.querySelectorAll(".retry").forEach((b) => b.remove());
  state.outbox = state.outbox.filter((e) => e !== entry);
  saveOutbox();
}

export function dropEntry(entry) {
  if (entry.id == null) entry.el.remove();
  state.outbox = state.outbox.filter((e) => e !== entry);
  saveOutbox();
}

export function onAck(f) {
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
    noteMessage(room, { id: f.id, from: entry.from, data: entry.text });
    decorateMessage(room, entry.el);
  }
  settleEntry(entry);
}

export function onError(f) {
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

/** Messages sent before the connection dropped whose ack was lost. If its broadcast came back
 *  (it has an id) it is stored; if neither that nor the replay since the room's last id showed
 *  it, it never got stored: send it again. After a reload the page has no such replay (it
 *  joined afresh), so it asks the room's history for it first: there is no idempotency key in
 *  the protocol, so only "not in the history" makes a second send safe. */
export function resolveUnconfirmed(room) {
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

export async function lookUpStored(room, entries) {
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
