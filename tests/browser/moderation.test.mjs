// Moderation in the web client (issue 19), against the real binary: alice owns a private room
// and bob is invited into it. The owner's controls (Delete, slow mode, the member menu) work by
// keyboard and reach bob's page; bob, a plain member, gets none of them. The tests run in order.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, launchBrowser, saveScreenshot, say, startServer, waitForMessage } from "./lib/harness.mjs";
import { answer, openGuest, press, signIn, waitForSidebar } from "./lib/accounts.mjs";

const PASSWORD = "a long enough password";

/** Opens the moderator menu (⋯) beside a member by keyboard, unless it is open already. */
async function openMemberMenu(page, name) {
  const menu = page.locator(`#member-list li[data-name="${name}"] details`);
  if (await menu.evaluate((d) => d.open)) return;
  await menu.locator("summary").focus();
  await page.keyboard.press("Enter");
}

describe("moderation: delete, slow mode, ban", () => {
  afterEach(dumpOnFailure);
  let server;
  const browsers = [];
  let alice, bob, design;

  before(async () => {
    server = await startServer();
    const open = async (label) => {
      const b = await launchBrowser();
      browsers.push(b);
      // The page's current WebSocket, to wait for the server's answer to a moderator action.
      b.on("page", (page) => page.on("websocket", (ws) => (page.socket = ws)));
      for (const page of b.pages()) page.on("websocket", (ws) => (page.socket = ws));
      return openGuest(b, server, { label });
    };
    alice = await open("alice");
    await signIn(alice, "signup", { name: "alice", password: PASSWORD });
    bob = await open("bob");
    await signIn(bob, "signup", { name: "bob", password: PASSWORD });
    await press(alice, "New private room");
    await answer(alice, "Design");
    design = await waitForSidebar(alice, "private-list", "Design");
    await alice.locator("#room-title", { hasText: "Design" }).waitFor();
    await press(alice, "Invite");
    await answer(alice, "bob");
    await waitForSidebar(bob, "private-list", "Design");
    await bob.locator(`#private-list li[data-room="${design.room}"] button`).click();
    await alice.locator('#member-list li[data-name="bob"]').waitFor();
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await server?.stop();
    cleanupTmp();
  });

  test("the owner's Delete replaces the message with a tombstone on the member's page", async () => {
    await say(bob, "buy cheap watches");
    await waitForMessage(alice, "buy cheap watches");
    const line = alice.locator("li.msg", { hasText: "buy cheap watches" });
    await line.getByRole("button", { name: "Delete message from bob" }).focus();
    await alice.keyboard.press("Enter");
    await bob.locator("li.msg.deleted", { hasText: "message deleted" }).waitFor();
    assert.equal(await bob.locator("li.msg", { hasText: "buy cheap watches" }).count(), 0);
    await saveScreenshot(alice, "moderation.png");
  });

  test("a deleted message stays a tombstone after a reload (history)", async () => {
    await bob.reload();
    await bob.locator("li.msg.deleted", { hasText: "message deleted" }).waitFor();
    assert.equal(await bob.locator("li.msg", { hasText: "buy cheap watches" }).count(), 0);
  });

  test("slow mode set by the owner is announced in the member's log", async () => {
    await alice.getByLabel("Slow mode").selectOption("10");
    await bob.locator("li.notice", { hasText: "Slow mode: one message every 10 s." }).waitFor();
    await alice.getByLabel("Slow mode").selectOption("0");
    await bob.locator("li.notice", { hasText: "Slow mode is off." }).waitFor();
  });

  test("a member does not get the moderator controls", async () => {
    assert.equal(await bob.locator(".mod-delete").count(), 0);
    assert.equal(await bob.locator(".member-actions").count(), 0);
    assert.equal(await bob.locator("#slow-label").isVisible(), false);
    assert.equal(await bob.getByRole("button", { name: "Topic", exact: true }).isVisible(), false);
  });

  test("a kick by the owner takes the member out with a notice, and the member may join again", async () => {
    await openMemberMenu(alice, "bob");
    await alice.getByRole("button", { name: "Kick bob", exact: true }).focus();
    await alice.keyboard.press("Enter");
    await bob.getByText("You were removed from Design").waitFor();
    await alice.locator('#member-list li[data-name="bob"]').waitFor({ state: "detached" });
    // A kick stores nothing: bob is still a member, and the room is back after a reload.
    await bob.reload();
    await waitForSidebar(bob, "private-list", "Design");
    await bob.locator(`#private-list li[data-room="${design.room}"] button`).click();
    await alice.locator('#member-list li[data-name="bob"]').waitFor();
  });

  test("a muted member is told so and a post is marked not sent; unmuted, it goes through", async () => {
    await openMemberMenu(alice, "bob");
    await alice.getByRole("button", { name: "Mute bob", exact: true }).focus();
    await alice.keyboard.press("Enter");
    await answer(alice, "5");
    await bob.getByText("You are muted in Design").waitFor();
    await say(bob, "can anyone hear me");
    await bob.locator("li.msg.failed", { hasText: "can anyone hear me" }).waitFor();
    const unmuted = alice.socket.waitForEvent("framereceived", {
      predicate: (f) => /"type":"ack"/.test(f.payload) && /"ref":"mod:unmute"/.test(f.payload),
    });
    await alice.getByRole("button", { name: "Unmute bob", exact: true }).focus();
    await alice.keyboard.press("Enter");
    await unmuted;
    await bob.locator("li.msg.failed").getByRole("button", { name: "Retry" }).click();
    await waitForMessage(alice, "can anyone hear me");
    await waitForMessage(bob, "can anyone hear me", { settled: true });
  });

  test("a ban by the owner removes the room from the banned member's page with a notice", async () => {
    await openMemberMenu(alice, "bob");
    await alice.getByRole("button", { name: "Ban bob", exact: true }).focus();
    await alice.keyboard.press("Enter");
    await answer(alice, "");
    await bob.getByText("You were banned from Design").waitFor();
    await bob.locator(`#private-list li[data-room="${design.room}"]`).waitFor({ state: "detached" });
  });

  test("the owner's Unban in the log lets the banned member back in", async () => {
    const unbanned = alice.socket.waitForEvent("framereceived", {
      predicate: (f) => /"type":"ack"/.test(f.payload) && /"ref":"mod:unban"/.test(f.payload),
    });
    const unban = alice.locator("li.ban-notice").getByRole("button", { name: "Unban bob", exact: true });
    await unban.focus();
    await alice.keyboard.press("Enter");
    await unbanned;
    await alice.locator("li.ban-notice", { hasText: "You lifted the ban of bob." }).waitFor();
    await bob.reload();
    await waitForSidebar(bob, "private-list", "Design");
    await bob.locator(`#private-list li[data-room="${design.room}"] button`).click();
    await alice.locator('#member-list li[data-name="bob"]').waitFor();
  });

  test("no uncaught errors in any page", () => {
    for (const b of browsers) assert.deepEqual(b.pageErrors, []);
  });
});
