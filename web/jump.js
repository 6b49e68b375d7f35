// Jumping to a message (a reply's original, a search result): when the log does not have it
// yet, older history is loaded, 200 at a time, until it does (the log stays one unbroken run
// of messages); then it is scrolled into the middle of the view, highlighted and focused.

import { state } from "./state.js";
import { ui, announce } from "./ui.js";
import { renderTop } from "./log.js";

const JUMP_PAGE = 200; // the server's largest history page
const HIGHLIGHT_MS = 8000;

/** Shows message `id` of `room` (in view or not), loading history as needed. */
export function jumpTo(room, id) {
  if (!room || !(id > 0)) return;
  room.jumpTarget = id;
  continueJump(room);
}

/** Takes a pending jump one step further: called after each history page and each sync. */
export function continueJump(room) {
  const id = room.jumpTarget;
  if (id == null) return;
  const li = room.byId.get(id);
  if (li) {
    room.jumpTarget = null;
    highlight(room, li);
    return;
  }
  if (!room.firstSyncDone || room.loadingHistory) return; // the sync or the page in flight calls again
  const oldest = Number.isFinite(room.oldestId) ? room.oldestId : 0;
  if (!room.hasMore || (oldest > 0 && oldest <= id) || !state.transport) {
    room.jumpTarget = null;
    announce("That message is not available any more.");
    return;
  }
  if (!state.transport.history(room.name, oldest, JUMP_PAGE)) return;
  room.loadingHistory = true;
  room.historyFailed = false;
  renderTop(room);
}

/** Scrolls `li` into the middle of the log, highlights and focuses it. */
export function highlight(room, li) {
  for (const old of room.list.querySelectorAll("li.highlight")) old.classList.remove("highlight");
  li.classList.add("highlight");
  li.tabIndex = -1;
  room.stick = false;
  li.scrollIntoView({ block: "center" });
  li.focus({ preventScroll: true });
  ui.jump.hidden = true;
  clearTimeout(li.highlightTimer);
  li.highlightTimer = setTimeout(() => li.classList.remove("highlight"), HIGHLIGHT_MS);
}
