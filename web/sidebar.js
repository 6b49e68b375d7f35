// The sidebar: your rooms with member and unread counts, other rooms, the tab title, the
// phone drawer.

import { h } from "./render.js";
import { state } from "./state.js";
import { ui } from "./ui.js";
import { joinRoom, showRoom } from "./rooms.js";

// Rendering: rooms, members, connection state

export function renderRooms() {
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
  const room = state.current ? `#${state.current.name} · ` : "";
  document.title = `${inTitle ? `(${inTitle}) ` : ""}${room}hubbub`;
}

export function closeDrawer() {
  ui.sidebar.classList.remove("open");
  ui.drawerToggle.setAttribute("aria-expanded", "false");
}
