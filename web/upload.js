// Files and images (issue 20; docs/protocol.md "Files"): upload by the Attach button, by
// pasting (an image from the clipboard) or by dropping files on the log or the message box.
// Each file is POSTed raw to /api/files (with the CSRF header for a cookie session), then sent
// as a message with `"attachment": {"hash", "name"}` and no text. A message's attachment shows
// an image (PNG, JPEG, GIF, WebP) inline, opening it full size when pressed, and any other file
// as a download link with its name and size. Refusals (413 too large, 415 refused type, ...) are
// said in plain words.

import { state } from "./state.js";
import { ui, announce } from "./ui.js";
import { h } from "./render.js";
import { authHeaders } from "./transport.js";
import { csrfHeaders } from "./account.js";
import { sendMessage } from "./sending.js";

const $ = (id) => document.getElementById(id);
const HASH_RE = /^[0-9a-f]{64}$/;
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** "12 KB", "3.4 MB". */
export function humanSize(bytes) {
  if (!(bytes >= 0)) return "";
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KB", "MB", "GB"];
  let n = bytes / 1024;
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return `${n < 10 ? n.toFixed(1) : Math.round(n)} ${units[u]}`;
}

/** A message's attachment: an inline image or a download link (null without one). */
export function attachmentEl(att) {
  if (!att || typeof att !== "object" || !HASH_RE.test(String(att.hash))) return null;
  const name = typeof att.name === "string" && att.name ? att.name : "file";
  const href = `/api/files/${att.hash}`;
  if (IMAGE_TYPES.has(att.type)) {
    return h(
      "a",
      { className: "attachment image", href, target: "_blank", rel: "noopener noreferrer", title: `${name} (opens full size)` },
      h("img", { src: href, alt: name, loading: "lazy", decoding: "async" }),
    );
  }
  const size = typeof att.size === "number" ? ` (${humanSize(att.size)})` : "";
  return h(
    "a",
    { className: "attachment file", href, download: name, rel: "noopener noreferrer" },
    h("span", { className: "file-icon", textContent: "↓", attrs: { "aria-hidden": "true" } }),
    h("span", { className: "file-name", textContent: name }),
    h("span", { className: "file-size", textContent: size }),
  );
}

/** Why an upload was refused, in plain words. */
async function refusal(res, name) {
  const body = await res.json().catch(() => null);
  const detail = body?.error?.message ? ` (${body.error.message})` : "";
  switch (res.status) {
    case 413:
      return `“${name}” is too large to upload${detail}.`;
    case 415:
      return `“${name}” is a type of file this server does not accept${detail}.`;
    case 401:
    case 403:
      return `You may not upload files here${detail}.`;
    case 429:
      return `Too many uploads: try “${name}” again in a moment.`;
    default:
      return `Could not upload “${name}”${detail || `: the server said ${res.status}`}.`;
  }
}

/** Uploads each file, then sends it as a message to the room in view. */
export async function uploadFiles(files) {
  const room = state.current;
  if (!room) return;
  for (const file of files) {
    const name = file.name || `pasted-image.${(file.type.split("/")[1] || "png").replace(/[^a-z0-9]/g, "")}`;
    setStatus(`Uploading “${name}”…`);
    try {
      const res = await fetch("/api/files", {
        method: "POST",
        headers: authHeaders({ "content-type": file.type || "application/octet-stream", ...(await csrfHeaders()) }),
        body: file,
      });
      if (!res.ok) {
        const why = await refusal(res, name);
        setStatus(why, true);
        announce(why, { sticky: true });
        continue;
      }
      const info = await res.json();
      if (!HASH_RE.test(String(info?.hash))) throw new Error("no hash");
      sendMessage("", { room, attachment: { hash: info.hash, name, type: info.type, size: info.size } });
      setStatus("");
    } catch {
      const why = `Could not upload “${name}”: the server cannot be reached.`;
      setStatus(why, true);
      announce(why, { sticky: true });
    }
  }
}

function setStatus(text, failed = false) {
  const el = $("upload-status");
  el.textContent = text;
  el.classList.toggle("failed", failed);
}

function filesOf(dataTransfer) {
  return [...(dataTransfer?.files || [])];
}

function wireDrop(target) {
  target.addEventListener("dragover", (e) => {
    if (![...(e.dataTransfer?.types || [])].includes("Files")) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = "copy";
    target.classList.add("drag-over");
  });
  target.addEventListener("dragleave", () => target.classList.remove("drag-over"));
  target.addEventListener("drop", (e) => {
    target.classList.remove("drag-over");
    const files = filesOf(e.dataTransfer);
    if (!files.length) return;
    e.preventDefault();
    uploadFiles(files);
  });
}

/** Wires the Attach button, pasting into the message box and dropping on the log or composer. */
export function wireUpload() {
  const input = $("file-input");
  $("attach").addEventListener("click", () => input.click());
  input.addEventListener("change", () => {
    const files = [...input.files];
    input.value = "";
    if (files.length) uploadFiles(files);
  });
  ui.message.addEventListener("paste", (e) => {
    const files = filesOf(e.clipboardData);
    if (!files.length) return; // plain text pastes as usual
    e.preventDefault();
    uploadFiles(files);
  });
  wireDrop(ui.log);
  wireDrop(ui.composer);
}
