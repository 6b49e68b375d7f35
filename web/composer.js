// The message box.

import { state } from "./state.js";
import { ui } from "./ui.js";
import { scrollToBottom } from "./log.js";
import { sendMessage } from "./sending.js";
import { noteTyping } from "./presence.js";
import { takeReply, isReplying, cancelReply } from "./replies.js";

/** Wires the message box: Enter sends (as a reply when one is being written), Shift+Enter is a
 *  new line, Esc cancels the reply or else jumps to the newest message. */
export function wireComposer() {
  ui.composer.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.message.value.replace(/\s+$/, "");
    if (!text.trim()) return;
    ui.message.value = "";
    autoGrow();
    sendMessage(text, { replyTo: takeReply() });
    // Receivers clear "X is typing" when X's message arrives: the next keystroke may say so again.
    if (state.current) state.lastTypingSent.delete(state.current.name);
    ui.message.focus();
  });

  ui.message.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && !e.altKey && !e.ctrlKey && !e.metaKey) {
      e.preventDefault();
      ui.composer.requestSubmit();
    } else if (e.key === "Escape") {
      if (isReplying()) cancelReply();
      else scrollToBottom();
    }
  });
  ui.message.addEventListener("input", () => {
    autoGrow();
    noteTyping();
  });
}

export function autoGrow() {
  ui.message.style.height = "auto";
  ui.message.style.height = `${Math.min(ui.message.scrollHeight, 180)}px`;
}
