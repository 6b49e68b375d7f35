// Rooms: joining by name, the room list with member counts, switching, unread counts, deep
// links, and loading older history when scrolling to the top.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import {
  cleanupTmp,
  dumpOnFailure,
  launchBrowser,
  messages,
  openChat,
  say,
  sseMember,
  startServer,
  waitForMessage,
} from "./lib/harness.mjs";

const roomItem = (page, room) => page.locator(`#room-list li[data-room="${room}"]`);

describe("rooms", () => {
  let server, alice, bob, pa, pb;
  afterEach(dumpOnFailure);

  before(async () => {
    server = await startServer();
    alice = await launchBrowser();
    bob = await launchBrowser();
    pa = await openChat(alice, server, { name: "alice" });
    pb = await openChat(bob, server, { name: "bob", hash: "#dev" });
  });

  after(async () => {
    await alice?.close();
    await bob?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("a deep link (/#dev) opens that room", async () => {
    assert.equal(await pb.locator("#room-title").textContent(), "#dev");
    await pb.locator('#member-list li[data-name="bob"]').waitFor();
  });

  test("the room list comes from GET /api/rooms with member counts", async () => {
    // alice is in lobby, bob in dev: alice sees dev under "Other rooms" with 1 member.
    const other = pa.locator('#other-rooms li[data-room="dev"]');
    await pa.evaluate(() => window.dispatchEvent(new Event("focus")));
    await other.waitFor({ timeout: 20000 });
    assert.match(await other.textContent(), /#dev\s*1/);
  });

  test("join/create a room by name, then switch with the room list", async () => {
    await pa.getByLabel("Join or create a room").fill("dev");
    await pa.getByRole("button", { name: "Join", exact: true }).click();
    await pa.locator("#room-title", { hasText: "#dev" }).waitFor();
    assert.equal(new URL(pa.url()).hash, "#dev");
    await pb.locator('#member-list li[data-name="alice"]').waitFor();
    await say(pa, "alice in dev");
    await waitForMessage(pb, "alice in dev");
    // Member count of the joined room is live.
    await pa.waitForFunction(() =>
      document.querySelector('#room-list li[data-room="dev"] .room-members')?.textContent.startsWith("2"),
    );
    // Switch back to lobby with the room list button.
    await roomItem(pa, "lobby").getByRole("button").click();
    await pa.locator("#room-title", { hasText: "#lobby" }).waitFor();
    assert.equal(await roomItem(pa, "lobby").getByRole("button").getAttribute("aria-current"), "true");
  });

  test("messages in a room not in view raise its unread count; viewing it clears it", async () => {
    await say(pb, "dev message 1");
    await say(pb, "dev message 2");
    await say(pb, "dev message 3");
    const badge = roomItem(pa, "dev").locator(".unread");
    await pa.waitForFunction(
      () => document.querySelector('#room-list li[data-room="dev"] .unread')?.firstChild?.textContent === "3",
    );
    assert.match(await pa.title(), /^\(3\)/);
    // The lobby log does not show dev's messages.
    assert.ok(!(await messages(pa)).some((m) => m.text.startsWith("dev message")));
    await roomItem(pa, "dev").getByRole("button").click();
    await waitForMessage(pa, "dev message 3");
    assert.equal(await badge.count(), 0);
    assert.doesNotMatch(await pa.title(), /^\(\d+\)/);
    const texts = (await messages(pa)).map((m) => m.text);
    assert.deepEqual(texts.slice(-4), ["alice in dev", "dev message 1", "dev message 2", "dev message 3"]);
  });

  test("keyboard: Alt+ArrowUp/Down switches rooms", async () => {
    await pa.getByLabel("Message", { exact: true }).focus();
    const before = await pa.locator("#room-title").textContent();
    await pa.keyboard.press("Alt+ArrowDown");
    const afterSwitch = await pa.locator("#room-title").textContent();
    assert.notEqual(afterSwitch, before);
    await pa.keyboard.press("Alt+ArrowUp");
    assert.equal(await pa.locator("#room-title").textContent(), before);
  });

  test("keyboard: the skip link moves focus to the message box (and joins no room)", async () => {
    const title = await pa.locator("#room-title").textContent();
    await pa.getByLabel("Your name").focus();
    await pa.keyboard.press("Shift+Tab");
    assert.equal(await pa.evaluate(() => document.activeElement.textContent), "Skip to message box");
    await pa.keyboard.press("Enter");
    assert.equal(await pa.evaluate(() => document.activeElement.id), "message");
    await pa.waitForTimeout(200);
    assert.equal(await pa.locator("#room-title").textContent(), title);
    assert.equal(await roomItem(pa, "message").count(), 0);
  });

  test("keyboard only: Tab to the join field, type a room, Enter, type a message, Enter", async () => {
    await pa.getByLabel("Join or create a room").focus();
    await pa.keyboard.type("kbd-room");
    await pa.keyboard.press("Enter");
    await pa.locator("#room-title", { hasText: "#kbd-room" }).waitFor();
    // Focus moved to the message box: typing goes straight into it.
    await pa.keyboard.type("typed without a mouse");
    await pa.keyboard.press("Enter");
    await waitForMessage(pa, "typed without a mouse", { settled: true });
    const page = await server.history("kbd-room");
    assert.deepEqual(page.messages.map((m) => m.data), ["typed without a mouse"]);
  });

  test("older history loads when scrolling to the top; the log follows new messages unless scrolled up", async () => {
    // 130 messages posted over HTTP; the join replays the newest 50, the rest comes by scrolling.
    for (let i = 1; i <= 130; i++) await server.post("history", "poster", `history message ${i}`);
    const carol = await launchBrowser();
    try {
      const pc = await openChat(carol, server, { name: "carol", hash: "#history" });
      await waitForMessage(pc, "history message 130");
      let ms = await messages(pc);
      assert.equal(ms[0].text, "history message 81");
      assert.equal(ms.length, 50);
      for (let round = 0; round < 10 && ms[0].text !== "history message 1"; round++) {
        await pc.getByRole("log").evaluate((el) => el.scrollTo(0, 0));
        await pc.waitForTimeout(300);
        ms = await messages(pc);
      }
      assert.equal(ms.length, 130);
      assert.deepEqual(
        ms.map((m) => m.text),
        Array.from({ length: 130 }, (_, i) => `history message ${i + 1}`),
      );
      await pc.getByText("This is the beginning of #history.").waitFor();

      // At the bottom, a new message keeps the log scrolled to the bottom...
      const log = pc.getByRole("log");
      const atBottom = () => log.evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight < 48);
      await log.evaluate((el) => el.scrollTo(0, el.scrollHeight));
      await server.post("history", "poster", "new while at the bottom");
      await waitForMessage(pc, "new while at the bottom");
      assert.ok(await atBottom(), "followed the new message");
      // ...but after scrolling up it stays put and offers a way down.
      await log.evaluate((el) => el.scrollTo(0, 600));
      await pc.waitForTimeout(200);
      await server.post("history", "poster", "new while scrolled up");
      await waitForMessage(pc, "new while scrolled up");
      assert.equal(await log.evaluate((el) => Math.round(el.scrollTop)), 600);
      const jump = pc.getByRole("button", { name: "New messages below" });
      await jump.waitFor();
      await jump.click();
      assert.ok(await atBottom(), "the button scrolls to the newest message");
      await jump.waitFor({ state: "hidden" });
      assert.deepEqual(carol.pageErrors, []);
    } finally {
      await carol.close();
    }
  });

  test("phone width: the room list is a drawer, its toggle shows the unread total", async () => {
    const phone = await launchBrowser({ viewport: { width: 390, height: 844 } });
    try {
      const pp = await openChat(phone, server, { name: "pam", hash: "#dev" });
      const toggle = pp.getByRole("button", { name: /^☰?\s*Rooms/ });
      await pp.locator("#sidebar").waitFor({ state: "hidden" });
      await toggle.click();
      assert.equal(await toggle.getAttribute("aria-expanded"), "true");
      await pp.getByLabel("Join or create a room").fill("lobby");
      await pp.keyboard.press("Enter");
      await pp.locator("#room-title", { hasText: "#lobby" }).waitFor();
      await pp.locator("#sidebar").waitFor({ state: "hidden" });
      await say(pb, "for the phone in dev");
      await pp.locator("#drawer-unread:not([hidden])").waitFor();
      assert.equal(await pp.locator("#drawer-unread").evaluate((el) => el.firstChild.textContent), "1");
      await toggle.click();
      await roomItem(pp, "dev").getByRole("button").click();
      await waitForMessage(pp, "for the phone in dev");
      await pp.locator("#drawer-unread").waitFor({ state: "hidden" });
      // Nothing sticks out sideways at phone width.
      assert.ok(await pp.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth));
      assert.deepEqual(phone.pageErrors, []);
    } finally {
      await phone.close();
    }
  });

  test("leaving a room removes it from your rooms", async () => {
    await roomItem(pa, "kbd-room").getByRole("button").click();
    await pa.getByRole("button", { name: "Leave #kbd-room" }).click();
    await roomItem(pa, "kbd-room").waitFor({ state: "detached" });
    assert.notEqual(await pa.locator("#room-title").textContent(), "#kbd-room");
  });

  test("no uncaught errors in either page", () => {
    assert.deepEqual(alice.pageErrors, []);
    assert.deepEqual(bob.pageErrors, []);
  });
});

describe("large rooms (more members than --presence-limit)", () => {
  let server, browser;
  const members = [];
  afterEach(dumpOnFailure);

  before(async () => {
    server = await startServer({ extraArgs: ["--presence-limit", "3", "--presence-tick-ms", "200"] });
    for (const n of ["ann", "ben", "cat", "dan", "eve"]) members.push(await sseMember(server, "big", n));
    browser = await launchBrowser();
  });

  after(async () => {
    for (const m of members) m.close();
    await browser?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("the member list shows the sample and the count, and 'Show all' fetches everyone", async () => {
    const page = await openChat(browser, server, { name: "zed", hash: "#big" });
    await page.locator("#member-count", { hasText: "(6)" }).waitFor();
    await page.locator("#member-list .more-members").waitFor();
    assert.ok((await page.locator("#member-list li[data-name]").count()) <= 3);
    await page.getByRole("button", { name: "Show all" }).click();
    await page.locator('#member-list li[data-name="eve"]').waitFor();
    const names = await page.locator("#member-list li[data-name]").evaluateAll((lis) => lis.map((li) => li.dataset.name));
    assert.deepEqual(names, ["ann", "ben", "cat", "dan", "eve", "zed"]);
    // Arrivals are announced as a head count per tick.
    members.push(await sseMember(server, "big", "fay"));
    await page.locator("#member-count", { hasText: "(7)" }).waitFor();
    await page.waitForFunction(
      () => document.querySelector('#room-list li[data-room="big"] .room-members')?.firstChild?.textContent === "7",
    );
    assert.deepEqual(browser.pageErrors, []);
  });
});
