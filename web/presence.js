// Who is here: members (`joined`, `presence`, `members`) and "X is typing".

import { h, nameHue } from "./render.js";
import { TYPING_EVERY_MS, TYPING_SHOW_MS, MEMBERS_SHOWN, state } from "./state.js";
import { ui } from "./ui.js";
import { addNotice } from "./log.js";
import { renderRooms } from "./sidebar.js";
import { memberActions } from "./moderation.js";

export function onPresence(f) {
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
export function onMembers(f) {
  const room = state.rooms.get(f.room);
  if (!room || !f.data || !Array.isArray(f.data.members)) return;
  room.members = f.data.members.map(String);
  room.count = typeof f.data.count === "number" ? f.data.count : room.members.length;
  room.membersStale = room.count > room.members.length;
  if (room === state.current) renderMembers();
  renderRooms();
}

export function onTyping(f) {
  const room = state.rooms.get(f.room);
  if (!room || typeof f.from !== "string" || f.from === state.name) return;
  room.typing.set(f.from, Date.now() + TYPING_SHOW_MS);
  if (room === state.current) renderTyping();
}

let typingTimer = null;
export function renderTyping() {
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

export function noteTyping() {
  const room = state.current;
  const t = state.transport;
  if (!room || !t?.connected || !room.inServer || !ui.message.value) return;
  const now = Date.now();
  if (now - (state.lastTypingSent.get(room.name) || 0) < TYPING_EVERY_MS) return;
  if (t.typing(room.name)) state.lastTypingSent.set(room.name, now);
}

export function renderMembers() {
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
        memberActions(room, n),
      );
    }),
    ...(more ? [more] : []),
  );
}
