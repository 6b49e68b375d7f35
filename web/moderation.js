// Moderation (issue 19; docs/web-client.md, "Moderation"). Owners and moderators of a room, and
// admins everywhere, see Delete on each message, Kick / Ban / Mute on each member and the slow
// mode setting; nobody else gets the controls (the server checks the rights anyway).

import { state } from "./state.js";
import { ui, announce } from "./ui.js";
import { h } from "./render.js";
import { account } from "./account.js";
import { leaveRoom } from "./rooms.js";
import { addNotice } from "./log.js";
import { ask, roomLabel } from "./people.js";

/** Whether we may moderate `room`: its owner or a moderator, or an admin. */
export function canModerate(room) {
  if (!room || state.transport?.kind !== "websocket") return false;
  return room.role === "owner" || room.role === "moderator" || account.me?.admin === true;
}

/** The room head: title, topic, and the owner/moderator controls (Invite, slow mode). */
export function renderRoomHead() {
  const room = state.current;
  if (!room) return;
  room.label = roomLabel(room);
  ui.roomTitle.textContent = room.label;
  ui.roomTopic.textContent = room.topic || "";
  const mod = canModerate(room);
  room.container.classList.toggle("can-moderate", mod);
  for (const li of room.list.querySelectorAll(":scope > li.msg")) {
    if (mod) addDeleteButton(li);
    else li.querySelector(".mod-delete")?.remove();
  }
  ui.invite.hidden = !(mod && room.kind === "private");
  ui.setTopic.hidden = !mod || room.kind === "direct";
  ui.slowLabel.hidden = !mod;
  ui.slowMode.value = String(room.slow || 0);
  if (ui.slowMode.value === "") ui.slowMode.value = "0";
}

/** Shows a message as deleted: its text is gone on the server, so it is gone here too. */
export function tombstone(li) {
  li.classList.add("deleted");
  li.querySelector(".text")?.replaceChildren(h("em", { textContent: "message deleted" }));
  li.querySelector(".mod-delete")?.remove();
}

/** Gives a stored message (one with an id) its Delete button, once. */
export function addDeleteButton(li) {
  if (li.dataset.id === undefined || li.classList.contains("deleted") || li.querySelector(".mod-delete")) return;
  const from = li.querySelector(".from")?.textContent || "";
  const button = h("button", {
    type: "button",
    className: "mod-delete link-btn",
    textContent: "Delete",
    attrs: { "aria-label": `Delete message from ${from}` },
  });
  li.querySelector(".meta")?.append(button);
}

/** `deleted`: a moderator removed a message. */
export function onDeleted(f) {
  const room = state.rooms.get(f.data?.room ?? f.room);
  const li = room?.byId.get(f.data?.id);
  if (li) tombstone(li);
}

/** `kicked`: we were removed from a room (kicked or banned). */
export function onKicked(f) {
  const room = state.rooms.get(f.data?.room ?? f.room);
  if (!room) return;
  const how = f.data?.reason === "banned" ? "banned from" : "removed from";
  const by = typeof f.data?.by === "string" ? ` by ${f.data.by}` : "";
  leaveRoom(room, { tellServer: false, notify: false });
  announce(`You were ${how} ${roomLabel(room)}${by}.`, { sticky: true });
}

/** `slow`: the room's slow mode changed. */
export function onSlow(f) {
  const room = state.rooms.get(f.data?.room ?? f.room);
  const seconds = f.data?.seconds;
  if (!room || typeof seconds !== "number") return;
  room.slow = seconds;
  addNotice(room, seconds > 0 ? `Slow mode: one message every ${seconds} s.` : "Slow mode is off.");
  if (room === state.current) renderRoomHead();
}

/** `muted`: we may read this room but not post in it, until `until` (ms) or for good. */
export function onMuted(f) {
  const room = state.rooms.get(f.data?.room ?? f.room);
  if (!room) return;
  const until = typeof f.data?.until === "number" ? ` until ${new Date(f.data.until).toLocaleTimeString()}` : "";
  announce(`You are muted in ${roomLabel(room)}${until}: you can read but not post.`, { sticky: true });
}

function act(type, room, data) {
  const t = state.transport;
  if (t?.kind !== "websocket" || !t.sendFrame({ type, data: { room: room.name, ...data }, ref: `mod:${type}` })) {
    announce("Not connected: try again when the connection is back.");
    return false;
  }
  return true;
}

/** After a ban, the moderator's log says so with an Unban button: a banned person leaves the
 *  member list, so this is where their ban can be lifted again. */
function noteBan(room, name) {
  const unban = h("button", { type: "button", className: "link-btn", textContent: "Unban", attrs: { "aria-label": `Unban ${name}` } });
  const li = h("li", { className: "notice ban-notice" }, h("span", { textContent: `You banned ${name}. ` }), unban);
  unban.addEventListener("click", () => {
    if (!act("unban", room, { name })) return;
    li.replaceChildren(`You lifted the ban of ${name}.`);
  });
  const inView = room === state.current;
  room.list.insertBefore(li, room.list.querySelector(":scope > li.unsent"));
  if (inView) li.scrollIntoView({ block: "nearest" });
}

async function timed(type, room, name) {
  const answer = await ask({ title: `${type === "ban" ? "Ban" : "Mute"} ${name}`, label: "For how many minutes? (empty: until lifted)" });
  if (answer === null) return;
  const minutes = Number(answer);
  const data = { name };
  if (answer !== "" && Number.isFinite(minutes) && minutes > 0) data.seconds = Math.round(minutes * 60);
  if (act(type, room, data) && type === "ban") noteBan(room, name);
}

/** The actions on one member of `room`, for moderators: Kick, Ban, Mute, Unmute, Unban. */
export function memberActions(room, name) {
  if (!canModerate(room) || name === state.name) return null;
  const button = (text, onClick) => {
    const b = h("button", { type: "button", className: "link-btn", textContent: text, attrs: { "aria-label": `${text} ${name}` } });
    b.addEventListener("click", onClick);
    return b;
  };
  return h(
    "details",
    { className: "member-actions" },
    h("summary", { textContent: "⋯", attrs: { "aria-label": `Moderate ${name}` } }),
    button("Kick", () => act("kick", room, { name })),
    button("Ban", () => timed("ban", room, name)),
    button("Mute", () => timed("mute", room, name)),
    button("Unmute", () => act("unmute", room, { name })),
    button("Unban", () => act("unban", room, { name })),
  );
}

/** Wires Delete (one listener for the whole log) and the slow mode setting. */
export function wireModeration() {
  ui.log.addEventListener("click", (e) => {
    const button = e.target.closest?.(".mod-delete");
    const li = button?.closest("li.msg");
    const room = state.current;
    if (!li || !room || li.dataset.id === undefined) return;
    act("delete", room, { id: Number(li.dataset.id) });
  });
  ui.setTopic.addEventListener("click", async () => {
    const room = state.current;
    if (!room) return;
    const topic = await ask({ title: `Topic of ${roomLabel(room)}`, label: "Topic (up to 300 characters)", value: room.topic || "" });
    if (topic !== null && state.current === room) act("topic", room, { topic });
  });
  ui.slowMode.addEventListener("change", () => {
    const room = state.current;
    if (room) act("slow", room, { seconds: Number(ui.slowMode.value) || 0 });
  });
}
