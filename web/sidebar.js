// The sidebar: your rooms with member and unread counts, other rooms, the tab title, the
// phone drawer.

import { h } from "./render.js";
import { state } from "./state.js";
import { ui } from "./ui.js";
import { joinRoom, showRoom } from "./rooms.js";
import { account } from "./account.js";

/** The list a room of ours belongs in: DMs, private rooms, or the public "Your rooms". */
function listFor(room) {
  if (room.kind === "direct") return "dm";
  if (room.kind === "private") return "private";
  return "public";
}

function countBadge(n, className, what) {
  return n > 0
    ? h("span", { className, textContent: n > 999 ? "999+" : String(n) }, h("span", { className: "visually-hidden", textContent: what }))
    : null;
}

function roomButton(room) {
  const isCurrent = room === state.current;
  const members = room.inServer ? (room.count ?? room.members.length) : state.directory.get(room.name)?.members;
  const btn = h(
    "button",
    { type: "button", className: "room-btn" },
    h("span", { className: "room-name", textContent: room.label || `#${room.name}` }),
    members != null && room.kind !== "direct"
      ? h("span", { className: "room-members", textContent: `${members}`, title: `${members} online` },
          h("span", { className: "visually-hidden", textContent: members === 1 ? " member" : " members" }))
      : null,
    isCurrent ? null : countBadge(room.mentions || 0, "mentions", (room.mentions || 0) === 1 ? " mention" : " mentions"),
    isCurrent ? null : countBadge(room.unread, "unread", " unread"),
  );
  if (isCurrent) btn.setAttribute("aria-current", "true");
  btn.addEventListener("click", () => {
    showRoom(room);
    closeDrawer();
    ui.message.focus();
  });
  return h("li", { dataset: { room: room.name } }, btn);
}

/** Draws the room lists (yours, DMs, private, others) and the tab title. */
export function renderRooms() {
  const lists = { public: [], dm: [], private: [] };
  for (const room of state.rooms.values()) lists[listFor(room)].push(roomButton(room));
  // Re-rendering must not steal keyboard focus from a room button.
  const focused = document.activeElement?.closest?.("#room-list li, #other-rooms li, #dm-list li, #private-list li");
  const focusKey = focused ? `${focused.parentElement.id}:${focused.dataset.room}` : null;
  ui.roomList.replaceChildren(...lists.public);
  ui.dmList.replaceChildren(...lists.dm);
  ui.privateList.replaceChildren(...lists.private);
  // Accounts only (over WebSocket): a guest cannot start a DM or own a private room.
  const people = !!account.me && state.transport?.kind === "websocket";
  ui.dmHead.hidden = ui.dmList.hidden = !(people || lists.dm.length);
  ui.privateHead.hidden = ui.privateList.hidden = !(people || lists.private.length);
  ui.newDm.hidden = ui.newPrivate.hidden = !people;

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

export function updateTitle() {
  let total = 0;
  for (const r of state.rooms.values()) total += r.unread;
  const inTitle = total + state.unseen;
  // On a phone the room list hides in a drawer: its toggle carries the unread total.
  const badge = document.getElementById("drawer-unread");
  if (badge) {
    badge.hidden = total === 0;
    badge.replaceChildren(String(total), h("span", { className: "visually-hidden", textContent: " unread" }));
  }
  const room = state.current ? `${state.current.label || `#${state.current.name}`} · ` : "";
  document.title = `${inTitle ? `(${inTitle}) ` : ""}${room}hubbub`;
}

export function closeDrawer() {
  ui.sidebar.classList.remove("open");
  ui.drawerToggle.setAttribute("aria-expanded", "false");
}
