// Keyboard and page controls: skip link, drawer, join form, Leave, Alt+arrows, log scrolling,
// window events.

import { ROOM_RE, DIRECTORY_EVERY_MS, state } from "./state.js";
import { ui } from "./ui.js";
import { joinRoom, leaveRoom, switchBy, refreshDirectory } from "./rooms.js";
import { isAtBottom, scrollToBottom, loadOlder } from "./log.js";
import { updateTitle, closeDrawer } from "./sidebar.js";

/** Wires the page's other controls and the window's events (see "Keyboard" in
 *  docs/web-client.md). Called once, before the first connection. */
export function wireControls() {
  wireNavigation();
  wireLog();
  wireWindow();
}

export function wireNavigation() {
  // The skip link must not touch location.hash: "#message" would read as a room deep link.
  document.querySelector(".skip-link")?.addEventListener("click", (e) => {
    e.preventDefault();
    ui.message.focus();
  });

  ui.drawerToggle.addEventListener("click", () => {
    const open = !ui.sidebar.classList.contains("open");
    ui.sidebar.classList.toggle("open", open);
    ui.drawerToggle.setAttribute("aria-expanded", String(open));
    if (open) ui.sidebar.querySelector("button, input")?.focus();
  });

  ui.joinForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const name = ui.joinRoom.value.trim().replace(/^#/, "");
    if (!ROOM_RE.test(name)) {
      ui.joinRoom.setCustomValidity('1-64 letters, digits, "_", "." or "-"');
      ui.joinRoom.reportValidity();
      return;
    }
    ui.joinRoom.value = "";
    joinRoom(name);
    closeDrawer();
    ui.message.focus();
  });
  ui.joinRoom.addEventListener("input", () => ui.joinRoom.setCustomValidity(""));

  ui.leave.addEventListener("click", () => state.current && leaveRoom(state.current));

  document.addEventListener("keydown", (e) => {
    if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      e.preventDefault();
      switchBy(e.key === "ArrowUp" ? -1 : 1);
    } else if (e.key === "Escape" && ui.sidebar.classList.contains("open")) {
      closeDrawer();
      ui.drawerToggle.focus();
    }
  });
}

export function wireLog() {
  ui.log.addEventListener("scroll", () => {
    const room = state.current;
    if (!room) return;
    room.stick = isAtBottom();
    if (room.stick) ui.jump.hidden = true;
    if (ui.log.scrollTop < 80) loadOlder(room);
  });
  // A phone's on-screen keyboard, a rotation or a window resize changes the log's height: keep
  // the newest message in sight if the reader was at the bottom.
  new ResizeObserver(() => {
    if (state.current?.stick) ui.log.scrollTop = ui.log.scrollHeight;
  }).observe(ui.log);
  ui.jump.addEventListener("click", () => {
    scrollToBottom();
    ui.message.focus();
  });
}

export function wireWindow() {
  ui.retry.addEventListener("click", () => state.transport?.retryNow());
  window.addEventListener("hashchange", () => {
    const name = decodeURIComponent(location.hash.slice(1));
    if (name && name !== state.current?.name && ROOM_RE.test(name)) joinRoom(name);
  });
  window.addEventListener("online", () => state.transport?.retryNow());
  window.addEventListener("focus", () => refreshDirectory());
  window.addEventListener("offline", () => state.transport?.goOffline());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      state.unseen = 0;
      state.transport?.retryNow();
      updateTitle();
    }
  });
  setInterval(() => {
    if (!document.hidden) refreshDirectory();
  }, DIRECTORY_EVERY_MS);
}
