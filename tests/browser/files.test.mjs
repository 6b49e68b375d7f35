// Files in the web client (issue 20), against the real binary: an image pasted into the
// message box (a synthetic ClipboardEvent carrying a small PNG) is uploaded and shown inline on
// the other member's page; a file chosen with the Attach button shows as a download link with
// its name and size, and so does one dropped on the log (a synthetic DragEvent); a file over
// --max-upload-bytes, or a non-image with --upload-types images, is refused with a clear notice.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, launchBrowser, openChat, startServer } from "./lib/harness.mjs";

// A 2x2 red PNG.
const PNG_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg==";

/** Pastes a PNG into the message box the way a browser does: a `paste` event whose
 *  clipboardData holds the file. */
function pastePng(page, name) {
  return page.evaluate(
    ({ b64, name }) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], name, { type: "image/png" }));
      const box = document.getElementById("message");
      box.focus();
      box.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
    },
    { b64: PNG_BASE64, name },
  );
}

describe("files", () => {
  afterEach(dumpOnFailure);
  let server;
  const browsers = [];
  let alice, bob;

  before(async () => {
    server = await startServer({ extraArgs: ["--max-upload-bytes", "4096"] });
    for (const name of ["alice", "bob"]) {
      const b = await launchBrowser();
      browsers.push(b);
      const page = await openChat(b, server, { name });
      if (name === "alice") alice = page;
      else bob = page;
    }
    await alice.locator('#member-list li[data-name="bob"]').waitFor();
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await server?.stop();
    cleanupTmp();
  });

  test("a pasted image is shown inline on the other page", async () => {
    await pastePng(alice, "red-dot.png");
    const img = bob.locator('li.msg .attachment.image img[alt="red-dot.png"]');
    await img.waitFor();
    assert.match(await img.getAttribute("src"), /^\/api\/files\/[0-9a-f]{64}$/);
    await bob.waitForFunction(() => document.querySelector('img[alt="red-dot.png"]')?.naturalWidth === 2);
    const link = bob.locator("li.msg a.attachment.image");
    assert.equal(await link.getAttribute("target"), "_blank");
    // The sender's own copy is stored too (not left pending).
    await alice.locator('li.msg:not(.pending):not(.unsent) img[alt="red-dot.png"]').waitFor();
  });

  test("a file chosen with Attach shows as a download link with name and size", async () => {
    const chooser = alice.waitForEvent("filechooser");
    await alice.getByRole("button", { name: "Attach a file" }).press("Enter");
    await (await chooser).setFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("x".repeat(2048)) });
    const link = bob.locator("li.msg a.attachment.file");
    await link.waitFor();
    assert.equal(await link.locator(".file-name").textContent(), "notes.txt");
    assert.equal(await link.locator(".file-size").textContent(), " (2.0 KB)");
    assert.equal(await link.getAttribute("download"), "notes.txt");
  });

  test("a file dropped on the log is uploaded and sent", async () => {
    await alice.evaluate(() => {
      const data = new DataTransfer();
      data.items.add(new File(["dropped text"], "dropped.txt", { type: "text/plain" }));
      const log = document.getElementById("log");
      for (const type of ["dragenter", "dragover", "drop"]) {
        log.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
      }
    });
    const link = bob.locator("li.msg a.attachment.file", { hasText: "dropped.txt" });
    await link.waitFor();
    assert.equal(await link.locator(".file-size").textContent(), " (12 B)");
  });

  test("a file over the size limit is refused with a clear notice and nothing is sent", async () => {
    const before = await bob.locator("li.msg").count();
    const chooser = alice.waitForEvent("filechooser");
    await alice.getByRole("button", { name: "Attach a file" }).click();
    await (await chooser).setFiles({ name: "big.bin", mimeType: "application/octet-stream", buffer: Buffer.alloc(8192, 1) });
    await alice.locator("#upload-status.failed", { hasText: "“big.bin” is too large to upload" }).waitFor();
    await alice.getByRole("alert").filter({ hasText: "too large" }).waitFor();
    assert.equal(await alice.locator("li.msg", { hasText: "big.bin" }).count(), 0);
    assert.equal(await bob.locator("li.msg").count(), before);
  });

  test("with --upload-types images, a non-image is refused as a type the server does not accept", async () => {
    const strict = await startServer({ extraArgs: ["--upload-types", "images"] });
    const b = await launchBrowser();
    browsers.push(b);
    try {
      const page = await openChat(b, strict, { name: "carol" });
      const chooser = page.waitForEvent("filechooser");
      await page.getByRole("button", { name: "Attach a file" }).press("Enter");
      await (await chooser).setFiles({ name: "script.sh", mimeType: "text/plain", buffer: Buffer.from("echo hi\n") });
      await page.locator("#upload-status.failed", { hasText: "“script.sh” is a type of file this server does not accept" }).waitFor();
      assert.equal(await page.locator("li.msg").count(), 0);
    } finally {
      await strict.stop();
    }
  });

  test("no uncaught errors in any page", () => {
    for (const b of browsers) assert.deepEqual(b.pageErrors, []);
  });
});
