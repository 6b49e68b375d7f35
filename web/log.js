// The message log view: placing messages in id order, notices, scrolling, older history.

import { h, linkify, timeEl, nameHue } from "./render.js";
import { HISTORY_PAGE, state } from "./state.js";
import { ui } from "./ui.js";
import { settleEntry } from "./sending.js";
import { checkSynced } from "./sync.js";
import { renderTyping } from "./presence.js";
import { renderRooms, updateTitle } from "./sidebar.js";
import { canModerate, tombstone, addDeleteButton } from "./moderation.js";
import { noteMention, markRead } from "./marks.js";
import { replyQuote } from "./replies.js";
import { attachmentEl } from "./upload.js";
import { decorateMessage } from "./message_actions.js";
import { noteMessage, applyHistoryState } from "./changes.js";
import { continueJump } from "./jump.js";


export function isAtBottom() {
  const l = ui.log;
  return l.scrollHeight - l.scrollTop - l.clientHeight < 48;
}

export function scrollToBottom() {
  ui.log.scrollTop = ui.log.scrollHeight;
  ui.jump.hidden = true;
}

/** A message's <li>: sender and time, the quoted message it answers (`reply_to`), the text and
 *  its attachment. Actions and reactions are added once it is stored (message_actions.js). */
export function messageEl({ room, from, ts, data, id, reply_to, attachment }, { mine = false } = {}) {
  const fromEl = h("span", { className: "from", textContent: from });
  fromEl.style.setProperty("--hue", String(nameHue(from)));
  const li = h(
    "li",
    { className: mine ? "msg mine" : "msg" },
    h("div", { className: "meta" }, fromEl, " ", timeEl(ts), h("span", { className: "status" })),
    reply_to ? replyQuote(room, reply_to) : null,
    h("div", { className: "text" }, linkify(data)),
    attachmentEl(attachment),
  );
  if (id != null) li.dataset.id = String(id);
  return li;
}

/** Puts a message <li> into the room's list in id order; unsent local messages stay last. */
export function placeMessage(room, li, id) {
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

export function setStatus(li, text, cls) {
  const s = li.querySelector(".status");
  if (!s) return;
  s.textContent = text;
  li.classList.toggle("pending", cls === "pending");
  li.classList.toggle("failed", cls === "failed");
}

/** Handles a `msg` frame (live, replayed after join, or from history). */
export function addMessage(m, { live }) {
  const room = state.rooms.get(m.room);
  if (!room || typeof m.id !== "number" || typeof m.data !== "string") return;
  const wasNewest = m.id > room.lastId;
  if (m.id > room.lastId) room.lastId = m.id;
  if (m.id < room.oldestId) room.oldestId = m.id;
  if (room.byId.has(m.id)) {
    if (m.deleted === true) tombstone(room.byId.get(m.id)); // a replay or history page says so
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
        (e.attachment?.hash ?? null) === (m.attachment?.hash ?? null) &&
        m.id > e.afterId,
    );
    if (entry) {
      entry.id = m.id;
      li = entry.el;
      li.classList.remove("unsent");
      li.dataset.id = String(m.id);
      li.querySelector("time")?.replaceWith(timeEl(m.ts));
      // The server's attachment has the type and size it read from the file.
      if (m.attachment) li.querySelector(".attachment")?.replaceWith(attachmentEl(m.attachment));
      if (entry.state === "unconfirmed") settleEntry(entry); // stored before we lost the socket
    }
  }
  if (!li) li = messageEl({ ...m, from }, { mine: from === state.name });
  room.byId.set(m.id, li);
  placeMessage(room, li, m.id);
  noteMessage(room, { ...m, from });
  if (m.deleted === true) tombstone(li);
  else if (canModerate(room)) addDeleteButton(li);
  decorateMessage(room, li);
  room.typing.delete(from);

  // Unread: live, newest, someone else's, and not already read on another device of ours.
  const counts = m.id > room.baseline && m.id > (room.readSent || 0);
  if (live && wasNewest && from !== state.name && room.baseline != null && counts) {
    const mention = noteMention(room, { ...m, from });
    if (!inView) {
      room.unread += 1;
      renderRooms();
    } else if (document.hidden) {
      state.unseen += 1; // in view but the tab is in the background: count it in the title
      if (mention) renderRooms();
      else updateTitle();
    }
  }
  if (inView) {
    if (stick || (from === state.name && live && wasNewest)) scrollToBottom();
    else if (live && wasNewest) ui.jump.hidden = false;
    renderTyping();
    if (live && wasNewest) markRead(room);
  }
  checkSynced(room);
}

export function addNotice(room, text) {
  const inView = room === state.current;
  const stick = inView && isAtBottom();
  const li = h("li", { className: "notice", textContent: text });
  room.list.insertBefore(li, room.list.querySelector(":scope > li.unsent"));
  if (stick) scrollToBottom();
}

export function renderTop(room) {
  let content;
  if (!room.firstSyncDone) content = h("span", { textContent: "Loading messages…" });
  else if (room.loadingHistory) content = h("span", { textContent: "Loading older messages…" });
  else if (room.historyFailed)
    content = h("button", { type: "button", className: "older", textContent: "Could not load older messages. Try again" });
  else if (room.hasMore)
    content = h("button", { type: "button", className: "older", textContent: "Load older messages" });
  else content = h("span", { textContent: `This is the beginning of ${room.label || `#${room.name}`}.` });
  if (content.tagName === "BUTTON") content.addEventListener("click", () => loadOlder(room));
  room.top.replaceChildren(content);
}

export function loadOlder(room) {
  if (!room.firstSyncDone || room.loadingHistory || !room.hasMore || !state.transport) return;
  const before = Number.isFinite(room.oldestId) ? room.oldestId : 0;
  if (!state.transport.history(room.name, before, HISTORY_PAGE)) return;
  room.loadingHistory = true;
  room.historyFailed = false;
  renderTop(room);
}

export function onHistory(f) {
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
  applyHistoryState(room, f.data);
  room.hasMore = !!f.data.has_more && msgs.length > 0;
  renderTop(room);
  if (inView) {
    // Keep what the reader was looking at in place while older messages appear above it.
    ui.log.scrollTop = ui.log.scrollHeight - before;
    maybeFillHistory(room);
  }
  continueJump(room); // a jump to a message not loaded yet (a reply's original, a search result)
}

/** Loads older pages until the log can scroll (or there is nothing more). */
export function maybeFillHistory(room) {
  if (room !== state.current || !room.synced || !room.hasMore) return;
  if (ui.log.scrollHeight <= ui.log.clientHeight + 8) loadOlder(room);
}
