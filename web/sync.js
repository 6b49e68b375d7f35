// Joining and syncing: `joined`, the replay catching up, a wiped server's history.

import { SYNC_TIMEOUT_MS, state } from "./state.js";
import { sendJoin, refreshDirectorySoon } from "./rooms.js";
import { addNotice, renderTop, maybeFillHistory } from "./log.js";
import { settleEntry, resolveUnconfirmed } from "./sending.js";
import { renderMembers } from "./presence.js";
import { renderRooms } from "./sidebar.js";
import { applyInfo } from "./people.js";
import { renderRoomHead } from "./moderation.js";
import { markRead } from "./marks.js";
import { loadRoomState, forgetChanges } from "./changes.js";
import { continueJump } from "./jump.js";

// ---------------------------------------------------------------------------------------------
// Joining, syncing, presence, typing

export function onJoined(f) {
  const room = state.rooms.get(f.room);
  if (!room) {
    // We left it while the join was in flight.
    state.transport?.leave(f.room);
    return;
  }
  const d = f.data || {};
  if (typeof d.last_id === "number" && d.last_id < room.lastId) {
    // The server's history went backwards (its data was wiped): ids we saw mean nothing now.
    // Our join asked for since=<old id>, which the server also uses to filter live messages,
    // so join again from scratch: leave, then join with no `since`.
    resetRoomHistory(room);
    rejoinFromScratch(room);
    return;
  }
  room.members = Array.isArray(d.members) ? d.members.map(String) : [];
  // Large rooms list only a sample in `members`, with the total in `count`.
  room.count = typeof d.count === "number" ? d.count : room.members.length;
  room.membersStale = room.count > room.members.length;
  applyInfo(room, d, { fromJoined: true });
  room.inServer = true;
  room.syncTarget = typeof d.last_id === "number" ? d.last_id : 0;
  if (room.baseline == null) room.baseline = room.syncTarget;
  if (room.syncTarget === 0 && room.byId.size === 0) room.hasMore = false;
  clearTimeout(room.syncTimer);
  room.syncTimer = setTimeout(() => markSynced(room), SYNC_TIMEOUT_MS);
  if (room === state.current) {
    renderMembers();
    renderRoomHead();
  }
  renderRooms();
  checkSynced(room);
  refreshDirectorySoon();
}

export function resetRoomHistory(room) {
  for (const li of [...room.list.children]) if (!li.classList.contains("unsent")) li.remove();
  room.byId.clear();
  room.lastId = 0;
  room.oldestId = Infinity;
  room.newestPlaced = undefined;
  room.baseline = null;
  room.firstSyncDone = false;
  room.hasMore = true;
  forgetChanges(room);
  for (const e of [...state.outbox]) if (e.room === room.name && e.id != null) settleEntry(e);
  addNotice(room, "The server's history was reset.");
  renderTop(room);
}

export function rejoinFromScratch(room) {
  const t = state.transport;
  if (t.kind === "websocket") t.leave(room.name);
  else t.closeRoom(room.name);
  sendJoin(room);
}

export function markUnsynced(room) {
  clearTimeout(room.syncTimer);
  room.inServer = false;
  room.synced = false;
  room.typing.clear();
}

export function checkSynced(room) {
  if (!room.synced && room.inServer && room.lastId >= room.syncTarget) markSynced(room);
}

export function markSynced(room) {
  clearTimeout(room.syncTimer);
  if (room.synced || !state.rooms.has(room.name)) return;
  room.synced = true;
  // First sync: decide whether there is older history than the replayed page.
  if (room.firstSyncDone !== true) {
    room.firstSyncDone = true;
    room.hasMore = Number.isFinite(room.oldestId) ? room.oldestId > 1 : false;
    renderTop(room);
    maybeFillHistory(room);
  }
  resolveUnconfirmed(room);
  markRead(room);
  // Edit marks and reactions of what the replay showed, and a change cursor, once per room.
  if (!room.stateLoaded) loadRoomState(room);
  continueJump(room);
}
