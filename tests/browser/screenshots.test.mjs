// Screenshots for the README: a chat with a few messages, at desktop and phone width, light and
// dark. Written to docs/screenshots/ by every run of the browser tests.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, afterEach, describe, test } from "node:test";
import {
  cleanupTmp,
  dumpOnFailure,
  launchBrowser,
  openChat,
  saveScreenshot,
  say,
  screenshotDir,
  startServer,
  waitForMessage,
} from "./lib/harness.mjs";
import { openGuest, signIn } from "./lib/accounts.mjs";

describe("screenshots", () => {
  afterEach(dumpOnFailure);
  const servers = [];
  const browsers = [];

  after(async () => {
    for (const b of browsers) await b.close();
    for (const s of servers) await s.stop();
    cleanupTmp();
  });

  /** A fresh server with a little history, posted by other people over the HTTP API. */
  async function seededServer() {
    const server = await startServer();
    servers.push(server);
    await server.post("lobby", "maria", "Morning all! 0.1.0 is out, notes at https://example.org/hubbub/releases/0.1.0");
    await server.post("lobby", "dev-bot", "build #128 passed: 212 tests, 0 failures");
    await server.post("lobby", "jonas", "Nice. Reconnects now resume with since=<last id>, so no duplicates after a restart");
    await server.post("lobby", "maria", "and <b>markup</b> shows up as plain text, as it should");
    await server.post("rust", "jonas", "anyone up for reviewing the store writer?");
    await server.post("rust", "maria", "after lunch");
    return server;
  }

  async function shoot({ file, viewport, colorScheme }) {
    const server = await seededServer();
    const other = await launchBrowser({ viewport: { width: 1280, height: 800 } });
    const browser = await launchBrowser({ viewport, colorScheme });
    browsers.push(other, browser);
    const page = await openChat(browser, server, { name: "alice", hash: "#rust" });
    // Join lobby too, then look at it; rust stays joined in the list.
    const phone = viewport.width < 600;
    if (phone) await page.getByRole("button", { name: "Rooms" }).click();
    await page.getByLabel("Join or create a room").fill("lobby");
    await page.getByLabel("Join or create a room").press("Enter");
    await page.locator("#room-title", { hasText: "#lobby" }).waitFor();
    const op = await openChat(other, server, { name: "jonas", hash: "#rust" });
    const line = `Hi! Trying the new web client from my ${phone ? "phone" : "laptop"}`;
    await say(page, line);
    await waitForMessage(page, line, { settled: true });
    await say(op, "alice, the store writer review is waiting for you");
    await page.waitForFunction(() => document.querySelector('#room-list li[data-room="rust"] .unread'));
    // jonas comes to the lobby too and starts typing.
    await op.getByLabel("Join or create a room").fill("lobby");
    await op.getByLabel("Join or create a room").press("Enter");
    await page.locator('#member-list li[data-name="jonas"]').waitFor({ state: "attached" });
    await waitForMessage(op, line);
    await say(op, "welcome! Try Shift+Enter for a new line");
    await waitForMessage(page, "welcome! Try Shift+Enter for a new line");
    await op.getByLabel("Message", { exact: true }).pressSequentially("looks good", { delay: 10 });
    await page.getByText("jonas is typing...").waitFor();
    await page.getByLabel("Message", { exact: true }).fill("typing a reply…");
    await page.locator('#conn[data-state="connected"]').waitFor();
    await page.evaluate(() => document.activeElement?.blur());
    await page.mouse.move(viewport.width - 5, viewport.height / 2); // no hover highlight
    await page.waitForTimeout(300);
    await saveScreenshot(page, file);
    const st = fs.statSync(path.join(screenshotDir, file));
    assert.ok(st.size > 10000, `${file} is a real picture`);
    if (phone && colorScheme === "light") {
      await page.getByRole("button", { name: "Rooms" }).click();
      await page.locator("#sidebar.open").waitFor();
      await page.waitForTimeout(200);
      await saveScreenshot(page, "phone-rooms.png");
    }
    await browser.close();
    await other.close();
    await server.stop();
  }

  test("desktop 1280x800", () => shoot({ file: "desktop.png", viewport: { width: 1280, height: 800 }, colorScheme: "light" }));
  test("phone 390x844", () => shoot({ file: "phone.png", viewport: { width: 390, height: 844 }, colorScheme: "light" }));
  test("desktop, dark", () => shoot({ file: "desktop-dark.png", viewport: { width: 1280, height: 800 }, colorScheme: "dark" }));
  test("phone, dark", () => shoot({ file: "phone-dark.png", viewport: { width: 390, height: 844 }, colorScheme: "dark" }));

  test("the sign-up dialog, opened by keyboard from the top bar", async () => {
    const server = await startServer();
    servers.push(server);
    const browser = await launchBrowser({ viewport: { width: 1280, height: 800 } });
    browsers.push(browser);
    const page = await openChat(browser, server, { name: "alice" });
    await page.getByRole("button", { name: "Sign up", exact: true }).focus();
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog", { name: "Sign up" });
    await dialog.waitFor();
    // Focus starts in the name field, filled with the name already in use.
    assert.equal(await page.evaluate(() => document.activeElement?.id), "account-user");
    assert.equal(await dialog.getByLabel("Name").inputValue(), "alice");
    await dialog.getByLabel("Password").fill("a long enough password");
    await page.mouse.move(5, 795);
    await saveScreenshot(page, "sign-up.png");
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
  });

  test("issue 20: a reply, an edited message, reactions, an image and search results", async () => {
    const server = await startServer();
    servers.push(server);
    const open = async (label, colorScheme = "light") => {
      const b = await launchBrowser({ viewport: { width: 1280, height: 800 }, colorScheme });
      browsers.push(b);
      return openGuest(b, server, { label });
    };
    const password = "a long enough password";
    await server.post("lobby", "maria", "Morning! Is the 0.2 release going out today?");
    const alice = await open("alice");
    await signIn(alice, "signup", { name: "alice", password });
    const bob = await open("bob");
    await signIn(bob, "signup", { name: "bob", password });
    const line = (page, text) => page.locator("li.msg", { has: page.locator(".text", { hasText: text }) });
    const press = async (locator, name) => {
      const b = locator.getByRole("button", { name, exact: true });
      await b.focus();
      await b.press("Enter");
    };
    await say(bob, "Release 0.2 is tagged, notes at https://example.org/hubbub/0.2");
    await waitForMessage(alice, "Release 0.2 is tagged, notes at https://example.org/hubbub/0.2");
    await press(line(alice, "Release 0.2 is tagged"), "Reply to bob");
    await say(alice, "Great, I am updating the deploy docs now");
    await say(alice, "teh new dashbaord looks like this:");
    await waitForMessage(alice, "teh new dashbaord looks like this:", { settled: true });
    await press(line(alice, "teh new dashbaord"), "Edit your message");
    await alice.getByLabel("Edit message").fill("the new dashboard looks like this:");
    await alice.getByLabel("Edit message").press("Enter");
    await line(bob, "the new dashboard looks like this:").locator(".edited").waitFor();
    // An image pasted into the message box: a small chart drawn on a canvas.
    await alice.evaluate(async () => {
      const c = document.createElement("canvas");
      c.width = 360;
      c.height = 180;
      const g = c.getContext("2d");
      g.fillStyle = "#eef2ff";
      g.fillRect(0, 0, 360, 180);
      const bars = [40, 90, 65, 120, 150, 110, 160];
      bars.forEach((v, i) => {
        g.fillStyle = i === bars.length - 1 ? "#4f46e5" : "#818cf8";
        g.fillRect(20 + i * 48, 170 - v, 32, v);
      });
      const blob = await new Promise((r) => c.toBlob(r, "image/png"));
      const data = new DataTransfer();
      data.items.add(new File([blob], "dashboard.png", { type: "image/png" }));
      document.getElementById("message").dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
    });
    await bob.waitForFunction(() => document.querySelector('img[alt="dashboard.png"]')?.naturalWidth === 360);
    for (const [page, emoji] of [[bob, "👍"], [bob, "🎉"], [alice, "🎉"]]) {
      const tagged = line(page, "Release 0.2 is tagged");
      await press(tagged, `React to the message from bob`);
      await page.getByRole("button", { name: `React with ${emoji}` }).press("Enter");
      await tagged.locator(`.reaction[data-emoji="${emoji}"]`).waitFor();
    }
    await line(alice, "Release 0.2 is tagged").locator('.reaction[data-emoji="🎉"] .count', { hasText: "2" }).waitFor();
    await say(bob, "Looks great 👀");
    await waitForMessage(alice, "Looks great 👀");
    await alice.waitForFunction(() => document.querySelector('img[alt="dashboard.png"]')?.naturalWidth === 360);
    await alice.getByLabel("Message", { exact: true }).fill("");
    await alice.evaluate(() => document.activeElement?.blur());
    await line(alice, "Looks great").hover(); // its actions: Reply, React
    await alice.waitForTimeout(300);
    await saveScreenshot(alice, "messages.png");

    // Search, in the dark theme, on a second browser of alice's.
    const dark = await open("alice-dark", "dark");
    await signIn(dark, "signin", { name: "alice", password });
    await dark.locator("#log").focus();
    await dark.keyboard.press("/");
    await dark.keyboard.type("release");
    await dark.keyboard.press("Enter");
    await dark.locator("#search-status", { hasText: "2 results" }).waitFor();
    await dark.mouse.move(5, 795);
    await dark.waitForTimeout(300);
    await saveScreenshot(dark, "search-dark.png");
    for (const file of ["messages.png", "search-dark.png"]) {
      assert.ok(fs.statSync(path.join(screenshotDir, file)).size > 10000, `${file} is a real picture`);
    }
  });
});
