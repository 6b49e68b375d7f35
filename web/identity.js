// Your name: `welcome`, the "Your name" field and `nick`.

import { store, normaliseName, state } from "./state.js";
import { auth } from "./auth.js";
import { ui } from "./ui.js";
import { renderMembers } from "./presence.js";
import { setAccount, noAccount } from "./account.js";

export function onWelcome(f) {
  const name = f.data?.name;
  if (typeof name !== "string") return;
  const old = state.name;
  state.name = name;
  state.nickPending = null;
  if (f.data.account) setAccount(f.data.account);
  else if (!f.local && state.transport?.kind === "websocket") noAccount();
  if (document.activeElement !== ui.name) ui.name.value = name;
  ui.nameHint.textContent =
    auth.claims || ui.name.readOnly ? "(from your sign-in)" : state.wantedName ? "" : "(a guest name: type yours)";
  if (old !== name) {
    for (const el of document.querySelectorAll("li.msg.unsent .from")) el.textContent = name;
    // The server tells the *other* members about a nick change; our own lists we fix here.
    if (old) {
      for (const room of state.rooms.values()) {
        const i = room.members.indexOf(old);
        if (i >= 0) room.members[i] = name;
      }
    }
    renderMembers();
  }
}

export function commitName() {
  if (auth.claims || ui.name.readOnly) return; // the token's `sub` is the name; the server refuses any other
  const v = normaliseName(ui.name.value);
  if (!v.ok) {
    ui.name.setCustomValidity(v.why);
    ui.name.reportValidity();
    return;
  }
  ui.name.setCustomValidity("");
  // Both "submit" and "change" land here: ask the server once per new name.
  if (v.name === state.wantedName && (v.name === state.name || v.name === state.nickPending)) return;
  state.wantedName = v.name;
  store.set("name", v.name);
  ui.nameHint.textContent = "";
  const t = state.transport;
  if (t?.kind === "websocket") {
    if (t.connected) {
      state.nickPending = v.name;
      t.sendFrame({ type: "nick", data: v.name, ref: "nick" });
    }
    // Not connected: the next connection carries ?name=; one still connecting sends `nick`
    // when it opens (handlers.onOpen).
  } else if (t) {
    t.nick(v.name);
  }
}

/** Wires the "Your name" field: Enter or leaving the field saves the name. */
export function wireIdentity() {
  ui.nameForm.addEventListener("submit", (e) => {
    e.preventDefault();
    commitName();
    ui.message.focus();
  });
  ui.name.addEventListener("change", commitName);
  ui.name.addEventListener("input", () => ui.name.setCustomValidity(""));
}

/** Fills the name field at start; a sign-in token's name is not editable. */
export function showIdentity() {
  ui.name.value = state.wantedName;
  if (auth.claims) {
    ui.name.readOnly = true;
    ui.name.title = "Your name comes from your sign-in token";
    ui.nameHint.textContent = "(from your sign-in)";
  }
}
