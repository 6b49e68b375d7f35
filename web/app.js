// hubbub web client: speaks protocol v1 (docs/protocol.md) over WebSocket, or over
// EventSource + HTTP when WebSocket is unavailable (or forced with ?transport=sse).
//
// Rules the client keeps (every module under web/; the module map is in docs/web-client.md):
// - user data reaches the DOM only through textContent / DOM properties (see render.js);
// - per room we keep the highest message id seen (lastId) and de-duplicate by id, so a rejoin
//   with since=lastId shows every missed message exactly once, in order;
// - messages typed while offline wait in the outbox, shown as pending, and are sent once the
//   room is back in sync; "pending" clears when the server's ack arrives. The outbox is kept in
//   localStorage (outbox.js), so a reload shows and sends what was not acked yet.

import { ROOM_RE, store, state, makeRoom, persisted } from "./state.js";
import { auth, tokenExpired, tokenAllows } from "./auth.js";
import { announce } from "./ui.js";
import { persistRooms, showRoom, refreshDirectory } from "./rooms.js";
import { renderTop } from "./log.js";
import { adoptEntries } from "./sending.js";
import { forcedTransport, renderConn, authFailed, useTransport } from "./connection.js";
import { wireIdentity, showIdentity } from "./identity.js";
import { wireControls } from "./controls.js";
import { wireComposer } from "./composer.js";
import { wireAccount } from "./account.js";
import { wirePeople } from "./people.js";
import { wireModeration } from "./moderation.js";
import { wireMarks } from "./marks.js";
import { wireMessageActions } from "./message_actions.js";
import { wireReplies } from "./replies.js";
import { wireSearch } from "./search.js";
import { wireUpload } from "./upload.js";

function start() {
  wireControls();
  wireIdentity();
  wireComposer();
  wireAccount();
  wirePeople();
  wireModeration();
  wireMarks();
  wireMessageActions();
  wireReplies();
  wireSearch();
  wireUpload();
  showIdentity();
  const hashRoom = decodeURIComponent(location.hash.slice(1));
  const saved = store.get("rooms", []);
  const names = (Array.isArray(saved) ? saved : []).filter(
    (n) => typeof n === "string" && ROOM_RE.test(n) && tokenAllows(n),
  );
  let first = ROOM_RE.test(hashRoom) ? hashRoom : store.get("current", "lobby");
  if (!ROOM_RE.test(first)) first = "lobby";
  if (!tokenAllows(first) && first !== hashRoom) {
    // Land in a room the token allows: one already saved, else one it names outright.
    const literal = (auth.claims?.rooms || []).find((r) => typeof r === "string" && ROOM_RE.test(r));
    first = names[0] || literal || first;
  }
  if (!names.includes(first)) names.push(first);
  for (const n of names) state.rooms.set(n, makeRoom(n));
  for (const room of state.rooms.values()) renderTop(room);
  persistRooms();
  showRoom(state.rooms.get(first));
  persisted.start(adoptEntries).catch((e) => console.warn("hubbub: the outbox is not kept across reloads:", e));
  renderConn();
  if (auth.badUrlToken) announce("The sign-in token in the address is not a valid token; it was ignored.", { sticky: true });
  if (tokenExpired()) {
    authFailed("expired");
    return;
  }
  const wsMissing = typeof WebSocket === "undefined";
  useTransport(forcedTransport === "sse" || wsMissing ? "sse" : "websocket");
  refreshDirectory();
}

start();
