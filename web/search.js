// Search (issue 20; docs/protocol.md "Search"): the search box in the top bar ("/" or Ctrl+K
// focuses it, Enter searches, Esc closes the results), GET /api/search, the results with their
// matches in <mark> (built from text nodes: the snippet is message text and never HTML), paging
// with `next`, and choosing a result: its room comes into view at the message, highlighted.

import { state } from "./state.js";
import { ui } from "./ui.js";
import { h, timeEl } from "./render.js";
import { authHeaders } from "./transport.js";
import { joinRoom } from "./rooms.js";
import { jumpTo } from "./jump.js";

const $ = (id) => document.getElementById(id);
const MARK_OPEN = "\uE000";
const MARK_CLOSE = "\uE001";
let current = null; // {q, room, next} of the results shown

/** The snippet as text nodes, each match (between U+E000 and U+E001) in a <mark>. */
export function snippetNodes(snippet) {
  const out = [];
  let marked = false;
  for (const part of String(snippet ?? "").split(/([\uE000\uE001])/)) {
    if (part === MARK_OPEN) marked = true;
    else if (part === MARK_CLOSE) marked = false;
    else if (part) out.push(marked ? h("mark", { textContent: part }) : document.createTextNode(part));
  }
  return out;
}

function resultEl(r) {
  const button = h(
    "button",
    { type: "button", className: "result", dataset: { room: r.room, id: String(r.id) } },
    h("span", { className: "result-meta" }, h("span", { className: "result-room", textContent: state.rooms.get(r.room)?.label || `#${r.room}` }), " ",
      h("span", { className: "from", textContent: r.from }), " ", timeEl(r.ts)),
    h("span", { className: "snippet" }, ...snippetNodes(r.snippet)),
  );
  button.addEventListener("click", () => choose(r));
  return h("li", {}, button);
}

async function runSearch({ more = false } = {}) {
  const q = more ? current.q : $("search").value.trim();
  if (!q) return;
  const room = more ? current.room : $("search-here").checked ? state.current?.name : null;
  const params = new URLSearchParams({ q });
  if (room) params.set("room", room);
  if (more && current.next != null) params.set("before", String(current.next));
  openPanel();
  const status = $("search-status");
  status.textContent = "Searching…";
  $("search-more").hidden = true;
  if (!more) $("search-results").replaceChildren();
  try {
    const r = await fetch(`/api/search?${params}`, { cache: "no-store", headers: authHeaders() });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      status.textContent = `Search failed: ${body?.error?.message || r.statusText}`;
      return;
    }
    const results = Array.isArray(body?.results) ? body.results : [];
    current = { q, room, next: typeof body.next === "number" ? body.next : null };
    $("search-results").append(...results.filter((x) => typeof x?.room === "string" && typeof x.id === "number").map(resultEl));
    const n = $("search-results").children.length;
    status.textContent = n ? `${n} result${n === 1 ? "" : "s"} for “${q}”${room ? ` in #${room}` : ""}` : `Nothing found for “${q}”.`;
    $("search-more").hidden = current.next == null;
  } catch {
    status.textContent = "Search failed: the server cannot be reached.";
  }
}

function openPanel() {
  $("search-panel").hidden = false;
}

/** Closes the results; focus goes back to `to` (the search box or the message box). */
export function closeSearch(to = ui.message) {
  $("search-panel").hidden = true;
  to?.focus();
}

function choose(r) {
  $("search-panel").hidden = true;
  const room = joinRoom(r.room); // joins it if need be, and shows it
  if (room) jumpTo(room, r.id);
}

function typingInAField(e) {
  const t = e.target;
  return t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
}

/** Wires the search box, the results panel and the shortcuts ("/" and Ctrl+K). */
export function wireSearch() {
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    runSearch();
  });
  $("search-more").addEventListener("click", () => runSearch({ more: true }));
  $("search-close").addEventListener("click", () => closeSearch($("search")));
  $("search-here").addEventListener("change", () => $("search").value.trim() && runSearch());
  document.addEventListener("keydown", (e) => {
    const ctrlK = (e.ctrlKey || e.metaKey) && !e.altKey && e.key.toLowerCase() === "k";
    if (ctrlK || (e.key === "/" && !e.ctrlKey && !e.metaKey && !e.altKey && !typingInAField(e))) {
      e.preventDefault();
      $("search").focus();
      $("search").select();
    } else if (e.key === "Escape" && !$("search-panel").hidden && ($("search-panel").contains(e.target) || e.target === $("search"))) {
      e.preventDefault();
      closeSearch(e.target === $("search") ? $("search") : ui.message);
    }
  });
}
