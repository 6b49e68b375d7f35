// Direct messages and private rooms (issue 19; docs/web-client.md, "Direct messages and
// private rooms"). The server names them (`dm-…`, `p-…`); the page shows a DM as the other
// people's names and a private room by its title. They are joined like any room, so messages,
// history, unread counts and the outbox work the same.

import { state } from "./state.js";
import { ui, announce } from "./ui.js";
import { h } from "./render.js";
import { joinRoom, showRoom } from "./rooms.js";
import { takeCounts } from "./marks.js";
import { renderRooms } from "./sidebar.js";
import { renderRoomHead } from "./moderation.js";

const $ = (id) => document.getElementById(id);
let wantShown = null; // "dm" | "create": show the next `room` frame's room (we asked for it)

/** What the sidebar and the title call a room: a DM by its other members, a private room by its
 *  title, a public one as `#name`. */
export function roomLabel(room) {
  if (room.kind === "direct") {
    const others = (room.people || []).filter((n) => n !== state.name);
    return others.length ? others.join(", ") : room.title || "Direct message";
  }
  if (room.kind === "private") return room.title || `#${room.name}`;
  return `#${room.name}`;
}

/** Records what the server says about a room we belong to and joins it. */
function adopt(d) {
  if (!d || typeof d.room !== "string") return null;
  const room = state.rooms.get(d.room) || joinRoom(d.room, { show: false });
  if (!room) return null;
  applyInfo(room, d);
  return room;
}

/** Kind, title, topic, role and people from `rooms`, `room` or `joined`. */
export function applyInfo(room, d, { fromJoined = false } = {}) {
  if (typeof d.kind === "string") room.kind = d.kind;
  if (typeof d.title === "string") room.title = d.title;
  if (typeof d.topic === "string" || d.topic === null) room.topic = d.topic || "";
  if (typeof d.role === "string") room.role = d.role;
  // `joined` lists who is online; `rooms` and `room` list a DM's people.
  if (Array.isArray(d.members) && room.kind === "direct" && !(fromJoined && room.people?.length)) {
    room.people = d.members.map((m) => (typeof m === "string" ? m : m?.name)).filter((n) => typeof n === "string");
  }
  room.label = roomLabel(room);
  takeCounts(room, d);
}

/** `rooms`: the sidebar of a signed-in connection, right after `welcome`. */
export function onRooms(f) {
  if (!Array.isArray(f.data)) return;
  for (const d of f.data) adopt(d);
  renderRooms();
  renderRoomHead();
}

/** `room`: a DM or private room was made (by us or someone who invited us). */
export function onRoom(f) {
  const room = adopt(f.data);
  if (!room) return;
  if (wantShown && (f.ref === wantShown || f.ref == null)) {
    wantShown = null;
    showRoom(room);
    ui.message.focus();
  } else {
    announce(`You were added to ${room.label}.`);
  }
  renderRooms();
  renderRoomHead();
}

/** `topic`: the room's topic changed. */
export function onTopic(f) {
  const room = state.rooms.get(f.data?.room ?? f.room);
  if (!room || typeof f.data?.topic !== "string") return;
  room.topic = f.data.topic;
  if (room === state.current) renderRoomHead();
}

/** Asks a question in the page's dialog; resolves to the trimmed answer, or null if cancelled. */
export function ask({ title, label, value = "", people = false }) {
  const dialog = $("ask-dialog");
  const input = $("ask-input");
  $("ask-h").textContent = title;
  $("ask-label").textContent = label;
  input.value = value;
  if (people) fillPeople();
  input.setAttribute("list", people ? "people" : "");
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? input.value.trim() : null), { once: true });
  });
}

/** The names the "person" fields suggest: everyone in the rooms we are in, but us. */
function fillPeople() {
  const names = new Set();
  for (const room of state.rooms.values()) for (const n of room.members) if (n !== state.name) names.add(n);
  $("people").replaceChildren(...[...names].sort().map((n) => h("option", { value: n })));
}

function sendPeopleFrame(frame, what) {
  const t = state.transport;
  if (t?.kind !== "websocket" || !t.sendFrame(frame)) {
    announce(`Cannot ${what} right now: not connected.`);
    return false;
  }
  return true;
}

async function newDm() {
  const answer = await ask({ title: "New direct message", label: "To (names, separated by commas)", people: true });
  if (!answer) return;
  const names = [...new Set(answer.split(",").map((n) => n.trim().replace(/^@/, "")).filter(Boolean))];
  if (!names.length) return;
  if (sendPeopleFrame({ type: "dm", data: { with: names }, ref: "dm" }, "start a conversation")) wantShown = "dm";
}

async function newPrivate() {
  const title = await ask({ title: "New private room", label: "Title" });
  if (!title) return;
  const frame = { type: "create", data: { title, private: true }, ref: "create" };
  if (sendPeopleFrame(frame, "create a room")) wantShown = "create";
}

async function invite() {
  const room = state.current;
  if (!room) return;
  const name = await ask({ title: `Invite to ${room.label || `#${room.name}`}`, label: "Name", people: true });
  if (!name) return;
  const frame = { type: "invite", data: { room: room.name, name: name.replace(/^@/, "") }, ref: `invite:${name}` };
  if (sendPeopleFrame(frame, "invite")) announce(`Inviting ${name}…`);
}

/** Wires the "New" buttons of the DM and private room sections, Invite, and the dialog. */
export function wirePeople() {
  ui.newDm.addEventListener("click", newDm);
  ui.newPrivate.addEventListener("click", newPrivate);
  ui.invite.addEventListener("click", invite);
  $("ask-cancel").addEventListener("click", () => $("ask-dialog").close(""));
  $("ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("ask-dialog").close("ok");
  });
}
