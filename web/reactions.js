// Reactions (issue 20): the row of emoji counts under a message, who reacted (title on hover,
// shown beside the button on keyboard focus), and the picker of common emoji plus free input.
// Pressing a reaction you have takes it back; pressing someone else's adds yours. The server
// checks that an emoji is one emoji (`bad_emoji`) and that the caller is signed in.

import { state } from "./state.js";
import { announce } from "./ui.js";
import { h } from "./render.js";
import { account } from "./account.js";

/** The picker's choices; anything else can be typed in its field. */
export const COMMON_EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];

/** Whether this page may react (and edit, delete its own): signed in (over WebSocket as frames,
 *  over the SSE fallback through the HTTP API's change routes). */
export function canChange() {
  return !!account.me && typeof state.transport?.change === "function";
}

/** Sends a change frame (`edit`, `delete`, `react`) about message `id` of `room`. */
export function sendChange(type, room, id, fields) {
  const t = state.transport;
  if (!t?.change || !t.change(type, room.name, id, fields, `chg:${type}:${id}`)) {
    announce("Not connected: try again when the connection is back.");
    return false;
  }
  return true;
}

function whoText(by, count) {
  const more = count > by.length ? ` and ${count - by.length} more` : "";
  return `${by.join(", ")}${more}`;
}

/** Draws the reactions of the message `li` from what `room.facts` knows. */
export function renderReactions(room, li) {
  const f = room.facts.get(Number(li.dataset.id));
  let row = li.querySelector(".reactions");
  if (!f || f.deleted || f.reactions.size === 0) {
    row?.remove();
    return;
  }
  if (!row) {
    row = h("div", { className: "reactions", attrs: { role: "group", "aria-label": "Reactions" } });
    const before = li.querySelector(".actions");
    li.insertBefore(row, before);
  }
  const me = account.me?.name;
  row.replaceChildren(
    ...[...f.reactions].map(([emoji, r]) => {
      const who = whoText(r.by, r.count);
      const mine = !!me && r.by.includes(me);
      return h(
        "button",
        {
          type: "button",
          className: mine ? "reaction mine" : "reaction",
          title: who,
          dataset: { emoji, who },
          attrs: { "aria-pressed": String(mine), "aria-label": `${emoji} ${r.count}: ${who}` },
        },
        h("span", { className: "emoji", textContent: emoji }),
        h("span", { className: "count", textContent: String(r.count) }),
      );
    }),
  );
}

/** A reaction button was pressed: take ours back, or add ours. */
export function toggleReaction(room, li, emoji) {
  if (!canChange()) {
    announce("Sign in to react to messages.");
    return;
  }
  const f = room.facts.get(Number(li.dataset.id));
  const mine = !!f?.reactions.get(emoji)?.by.includes(account.me.name);
  sendChange("react", room, Number(li.dataset.id), mine ? { emoji, remove: true } : { emoji });
}

/** Opens the picker under the message `li`; `opener` gets the focus back when it closes. */
export function openPicker(room, li, opener) {
  closePickers();
  const id = Number(li.dataset.id);
  const close = () => {
    picker.remove();
    opener?.focus();
  };
  const choose = (emoji) => {
    if (emoji && sendChange("react", room, id, { emoji })) close();
  };
  const field = h("input", {
    type: "text",
    className: "other-emoji",
    maxLength: 16,
    placeholder: "other",
    attrs: { "aria-label": "Other emoji", autocomplete: "off" },
  });
  const picker = h(
    "div",
    { className: "picker", attrs: { role: "group", "aria-label": "Pick a reaction" } },
    ...COMMON_EMOJI.map((emoji) => {
      const b = h("button", { type: "button", textContent: emoji, attrs: { "aria-label": `React with ${emoji}` } });
      b.addEventListener("click", () => choose(emoji));
      return b;
    }),
    field,
  );
  field.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      choose(field.value.trim());
    }
  });
  picker.addEventListener("keydown", (e) => {
    if (e.key === "Escape") {
      e.stopPropagation();
      close();
    }
  });
  li.append(picker);
  picker.querySelector("button")?.focus();
}

/** Closes every open picker. */
export function closePickers() {
  for (const p of document.querySelectorAll(".picker")) p.remove();
}
