// Replies (issue 20; docs/protocol.md "Replies"): the composer's "Replying to …" bar (Esc or ×
// cancels), and the quoted preview a reply shows of the message it answers: its author and
// first line, from what the page has, else read with the HTTP API (one message, not added to
// the log). Pressing the preview jumps to the original (jump.js loads history as needed).

import { state } from "./state.js";
import { ui } from "./ui.js";
import { h } from "./render.js";
import { authHeaders } from "./transport.js";

const $ = (id) => document.getElementById(id);
let replying = null; // {room, id, from, text} while the composer answers a message

/** What the page knows of message `id` of `room` for a quote: {from, text, deleted} or null. */
function known(room, id) {
  const f = room.facts.get(id);
  if (f && room.byId.has(id)) return f;
  return room.quotes?.get(id) || null;
}

function firstLine(text) {
  const line = String(text ?? "").split("\n", 1)[0];
  return line.length > 120 ? `${line.slice(0, 119)}…` : line;
}

/** The quoted preview of message `id` for a reply in room `roomName`. */
export function replyQuote(roomName, id) {
  const button = h("button", { type: "button", className: "reply-quote", dataset: { replyTo: String(id) } });
  const room = state.rooms.get(roomName);
  fillQuote(button, room ? known(room, id) : null);
  if (room && !known(room, id)) fetchQuoted(room, id);
  return button;
}

function fillQuote(button, q) {
  const who = q ? q.from : "";
  const what = !q ? "an earlier message" : q.deleted ? "message deleted" : firstLine(q.text) || "(attachment)";
  button.replaceChildren(
    h("span", { className: "quote-mark", textContent: "↪", attrs: { "aria-hidden": "true" } }),
    who ? h("span", { className: "quote-from", textContent: who }) : null,
    h("span", { className: "quote-text", textContent: what }),
  );
  button.setAttribute("aria-label", `In reply to ${who ? `${who}: ` : ""}${what}. Go to the original`);
}

/** Message `id` of `room` is shown, changed or was read: redraw the quotes of it. */
export function refreshQuotes(room, id) {
  const q = known(room, id);
  if (!q) return;
  for (const b of room.list.querySelectorAll(`.reply-quote[data-reply-to="${id}"]`)) fillQuote(b, q);
}

/** Reads message `id` with the HTTP API (the page scrolled past it or never had it). */
async function fetchQuoted(room, id) {
  room.quotes ??= new Map();
  room.quoting ??= new Set();
  if (room.quoting.has(id)) return;
  room.quoting.add(id);
  try {
    const q = new URLSearchParams({ before: String(id + 1), limit: "1" });
    const r = await fetch(`/api/rooms/${encodeURIComponent(room.name)}/messages?${q}`, { cache: "no-store", headers: authHeaders() });
    const m = r.ok ? (await r.json())?.messages?.at(-1) : null;
    if (m?.id === id) {
      room.quotes.set(id, { from: String(m.from ?? ""), text: String(m.data ?? ""), deleted: m.deleted === true });
      refreshQuotes(room, id);
    }
  } catch {
    /* offline: the quote says "an earlier message"; it still jumps */
  } finally {
    room.quoting.delete(id);
  }
}

/** The composer answers message `li` of `room`. */
export function startReply(room, li) {
  const id = Number(li.dataset.id);
  const f = room.facts.get(id);
  replying = { room: room.name, id };
  $("reply-text").textContent = `Replying to ${f?.from || "a message"}: ${firstLine(f?.text) || "(attachment)"}`;
  $("reply-bar").hidden = false;
  ui.message.focus();
}

/** Stops answering (× or Esc in the message box). */
export function cancelReply() {
  replying = null;
  $("reply-bar").hidden = true;
}

/** Whether the composer is answering a message (Esc cancels that first). */
export function isReplying() {
  return replying != null && replying.room === state.current?.name;
}

/** The id the message being sent answers (and the composer stops answering), or null. */
export function takeReply() {
  const id = isReplying() ? replying.id : null;
  cancelReply();
  return id;
}

/** Wires the reply bar's cancel button; switching rooms drops a reply to another room. */
export function wireReplies() {
  $("reply-cancel").addEventListener("click", () => {
    cancelReply();
    ui.message.focus();
  });
}

/** The room in view changed: the bar shows only while answering a message of that room. */
export function renderReplyBar() {
  $("reply-bar").hidden = !isReplying();
}
