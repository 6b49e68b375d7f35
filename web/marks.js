// Read markers, mentions and notifications (issue 19; docs/web-client.md, "Unread and
// mentions"). The server keeps each account's last read id per room and counts unread messages
// and @mentions; the page shows its counts, tells it what was read, and counts live messages
// on top until the next `joined` or `rooms` brings fresh numbers.

import { state } from "./state.js";
import { ui } from "./ui.js";
import { account } from "./account.js";
import { renderRooms } from "./sidebar.js";

const READ_EVERY_MS = 1000; // at most one `read` frame per room this often

/** Whether `text` mentions `name`: `@name`, case-insensitive, not inside a longer word. */
export function mentions(text, name) {
  if (!name) return false;
  const escaped = name.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])@${escaped}(?![\\p{L}\\p{N}_])`, "iu").test(text);
}

/** Takes the server's counts for a room (from `rooms`, `room` or `joined`). */
export function takeCounts(room, d) {
  if (typeof d.unread === "number") room.unread = room === state.current && !document.hidden ? 0 : d.unread;
  if (typeof d.mentions === "number") room.mentions = room === state.current && !document.hidden ? 0 : d.mentions;
  if (typeof d.last_read === "number") room.readSent = Math.max(room.readSent || 0, d.last_read);
  // Messages up to the server's last id are in its counts already: the replay adds nothing.
  if (typeof d.unread === "number" && typeof d.last_id === "number") room.baseline = d.last_id;
}

/** A live message from someone else arrived: count a mention and notify when the page is
 *  hidden. Returns true when it mentions us. */
export function noteMention(room, m) {
  if (!mentions(m.data, state.name)) return false;
  const inView = room === state.current && !document.hidden;
  if (!inView) room.mentions = (room.mentions || 0) + 1;
  if (document.hidden) notify(room, m);
  return true;
}

function notify(room, m) {
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  try {
    const where = room.kind === "direct" ? "" : ` in ${room.label || `#${room.name}`}`;
    const n = new Notification(`${m.from} mentioned you${where}`, {
      body: m.data.slice(0, 200),
      tag: `hubbub:${room.name}`,
    });
    n.onclick = () => {
      window.focus();
      location.hash = room.name;
      n.close();
    };
  } catch {
    /* some browsers allow notifications only from a service worker */
  }
}

/** Tells the server the room in view is read up to its newest message (signed-in, WebSocket,
 *  page visible), at most once a second per room. Other devices clear their badges. */
export function markRead(room = state.current) {
  const t = state.transport;
  if (!room || room !== state.current || document.hidden || !account.me) return;
  room.unread = 0;
  room.mentions = 0;
  if (!t?.connected || t.kind !== "websocket" || !room.inServer || room.lastId <= (room.readSent || 0)) return;
  if (room.readTimer) return;
  const send = () => {
    room.readTimer = null;
    if (room.lastId <= (room.readSent || 0) || !state.transport?.connected) return;
    if (state.transport.sendFrame({ type: "read", data: { room: room.name, id: room.lastId } }) !== false) {
      room.readSent = room.lastId;
    }
  };
  const wait = READ_EVERY_MS - (Date.now() - (room.readAt || 0));
  room.readAt = Date.now() + Math.max(0, wait);
  if (wait <= 0) send();
  else room.readTimer = setTimeout(send, wait);
}

/** `read` from another connection of this account: what it read is read here too. */
export function onRead(f) {
  const room = state.rooms.get(f.data?.room);
  const id = f.data?.id;
  if (!room || typeof id !== "number") return;
  room.readSent = Math.max(room.readSent || 0, id);
  if (id >= room.lastId) {
    room.unread = 0;
    room.mentions = 0;
  }
  renderRooms();
}

/** The "Notify me of mentions" button: shown to a signed-in person while the browser has not
 *  been asked yet; permission is asked only from this click (a user gesture). */
export function renderNotifyButton() {
  const can = typeof Notification !== "undefined" && Notification.permission === "default";
  ui.notifyOn.hidden = !(can && account.me);
}

/** Wires the notification button. */
export function wireMarks() {
  ui.notifyOn.addEventListener("click", async () => {
    try {
      await Notification.requestPermission();
    } catch {
      /* refused or unsupported */
    }
    renderNotifyButton();
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) markRead();
  });
}
