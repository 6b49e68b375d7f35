// The actions on a stored message (issue 20): Reply (everyone), React (signed in), and on
// your own messages when signed in, Edit (inline: Enter saves, Shift+Enter new line, Esc
// cancels) and Delete (asks first, then a tombstone for everyone). The buttons are in the
// message, so Tab reaches them; they show on hover and on keyboard focus. One listener on the
// log handles every message's buttons. The server has the last word on who may change what.

import { state } from "./state.js";
import { ui } from "./ui.js";
import { h, linkify } from "./render.js";
import { account } from "./account.js";
import { canModerate } from "./moderation.js";
import { canChange, sendChange, openPicker, toggleReaction, renderReactions } from "./reactions.js";
import { startReply } from "./replies.js";
import { jumpTo } from "./jump.js";

const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Whether `li` is a message of ours that we may edit and delete: signed in, our account's. */
function isOwn(room, li) {
  const f = room.facts.get(Number(li.dataset.id));
  return canChange() && !!f && f.from === account.me.name;
}

function actionButton(action, text, label) {
  return h("button", { type: "button", className: "link-btn", textContent: text, dataset: { action }, attrs: { "aria-label": label } });
}

/** Gives a stored message its actions (again: who we are may have changed), its edit mark and
 *  its reactions. A pending or deleted message has none. */
export function decorateMessage(room, li) {
  li.querySelector(".actions")?.remove();
  if (li.dataset.id === undefined || li.classList.contains("deleted")) return;
  const from = li.querySelector(".from")?.textContent || "";
  const buttons = [actionButton("reply", "Reply", `Reply to ${from}`)];
  if (canChange()) buttons.push(actionButton("react", "React", `React to the message from ${from}`));
  if (isOwn(room, li)) {
    buttons.push(actionButton("edit", "Edit", "Edit your message"));
    // A moderator's own Delete button (moderation.js) sends the same frame.
    if (!canModerate(room)) buttons.push(actionButton("delete", "Delete", "Delete your message"));
  }
  li.append(h("div", { className: "actions" }, ...buttons));
  renderEdited(room, li);
  renderReactions(room, li);
}

/** Redraws every message's actions in every room (after sign-in state is known). */
export function redecorateAll() {
  for (const room of state.rooms.values()) for (const li of room.byId.values()) decorateMessage(room, li);
}

/** The "(edited)" mark with the time of the edit in its title. */
export function renderEdited(room, li) {
  const f = room.facts.get(Number(li.dataset.id));
  let mark = li.querySelector(".edited");
  if (!f?.editedMs || f.deleted) {
    mark?.remove();
    return;
  }
  if (!mark) {
    mark = h("span", { className: "edited", textContent: "(edited)" });
    li.querySelector(".meta time")?.after(" ", mark);
  }
  mark.title = `edited ${fullFmt.format(new Date(f.editedMs))}`;
}

/** Inline edit of our message `li`. */
function startEdit(room, li, opener) {
  const f = room.facts.get(Number(li.dataset.id));
  const textEl = li.querySelector(".text");
  if (!f || !textEl || li.classList.contains("editing")) return;
  li.classList.add("editing");
  const box = h("textarea", { className: "edit-box", value: f.text, rows: 2, attrs: { "aria-label": "Edit message" } });
  const hint = h("span", { className: "hint", textContent: "Enter saves · Esc cancels" });
  textEl.replaceChildren(box, hint);
  const finish = () => {
    li.classList.remove("editing");
    textEl.replaceChildren(linkify(room.facts.get(Number(li.dataset.id))?.text ?? f.text));
    opener?.isConnected ? opener.focus() : li.querySelector('[data-action="edit"]')?.focus();
  };
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      e.stopPropagation();
      finish();
    } else if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      const text = box.value.replace(/\s+$/, "");
      if (text.trim() && text !== f.text) sendChange("edit", room, Number(li.dataset.id), { text });
      finish(); // the new text shows when the server's `change` comes back
    }
  });
  box.focus();
  box.setSelectionRange(box.value.length, box.value.length);
}

/** Asks, in the message, whether to delete it for everyone. */
function confirmDelete(room, li, opener) {
  if (li.querySelector(".confirm")) return;
  const yes = h("button", { type: "button", className: "danger", textContent: "Delete" });
  const no = h("button", { type: "button", textContent: "Cancel" });
  const box = h(
    "div",
    { className: "confirm", attrs: { role: "group", "aria-label": "Delete this message?" } },
    h("span", { textContent: "Delete this message for everyone? " }),
    yes,
    " ",
    no,
  );
  const close = () => {
    box.remove();
    opener?.focus();
  };
  yes.addEventListener("click", () => {
    box.remove();
    sendChange("delete", room, Number(li.dataset.id), {});
    ui.message.focus(); // the message's buttons go with it
  });
  no.addEventListener("click", close);
  box.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.stopPropagation();
      close();
    }
  });
  li.append(box);
  yes.focus();
}

/** Wires the message actions, the reaction buttons and the reply quotes (one listener). */
export function wireMessageActions() {
  ui.log.addEventListener("click", (e) => {
    const room = state.current;
    const target = e.target.closest?.("button");
    const li = target?.closest("li.msg");
    if (!room || !li) return;
    if (target.classList.contains("reply-quote")) return jumpTo(room, Number(target.dataset.replyTo));
    if (li.dataset.id === undefined) return;
    if (target.classList.contains("reaction")) return toggleReaction(room, li, target.dataset.emoji);
    switch (target.dataset.action) {
      case "reply":
        return startReply(room, li);
      case "react":
        return openPicker(room, li, target);
      case "edit":
        return startEdit(room, li, target);
      case "delete":
        return confirmDelete(room, li, target);
    }
  });
}
