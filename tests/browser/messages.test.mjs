// Issue 20 in the web client, against the real binary: replies (preview, and a jump to an
// original the page has not loaded), edit, delete and reactions reaching the other member, and
// a page that was offline catching up on an edit and a reaction through `changes_since`, and a
// page on the SSE fallback seeing changes live, and making them through the HTTP API.
// alice and bob are signed in (only accounts change messages); the tests run in order.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, launchBrowser, openChat, say, startServer, waitForMessage } from "./lib/harness.mjs";
import { openGuest, signIn } from "./lib/accounts.mjs";

const PASSWORD = "a long enough password";

/** The <li> of the message with this text (exactly one is expected). */
const line = (page, text) => page.locator("li.msg", { has: page.locator(".text", { hasText: text }) });

/** Presses a button of a message by keyboard: focus, then Enter. */
async function pressIn(locator, name) {
  const button = locator.getByRole("button", { name, exact: true });
  await button.focus();
  await button.press("Enter");
}

/** Posts over the HTTP API, optionally as a reply; answers the stored id. */
async function post(server, room, from, data, replyTo) {
  const body = { from, data };
  if (replyTo) body.reply_to = replyTo;
  const r = await fetch(server.url(`/api/rooms/${room}/messages`), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 201, `POST answered ${r.status}`);
  return (await r.json()).id;
}

describe("replies, edits, deletes, reactions", () => {
  afterEach(dumpOnFailure);
  let server;
  const browsers = [];
  let alice, bob, bobContext;
  const bobJoins = [];

  before(async () => {
    server = await startServer();
    const open = async (label, beforeGoto) => {
      const b = await launchBrowser();
      browsers.push(b);
      if (beforeGoto) b.on("page", beforeGoto);
      for (const p of b.pages()) beforeGoto?.(p);
      return [b, await openGuest(b, server, { label })];
    };
    [, alice] = await open("alice");
    await signIn(alice, "signup", { name: "alice", password: PASSWORD });
    const recordJoins = (p) =>
      p.on("websocket", (ws) =>
        ws.on("framesent", (f) => {
          const frame = JSON.parse(String(f.payload));
          if (frame.type === "join") bobJoins.push(frame);
        }),
      );
    [bobContext, bob] = await open("bob", recordJoins);
    await signIn(bob, "signup", { name: "bob", password: PASSWORD });
    await alice.locator('#member-list li[data-name="bob"]').waitFor();
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await server?.stop();
    cleanupTmp();
  });

  test("a reply made with Reply shows the original's author and first line on the other page", async () => {
    await say(alice, "which port does it listen on?\nsecond line");
    await waitForMessage(bob, "which port does it listen on?\nsecond line");
    await pressIn(line(bob, "which port does it listen on?"), "Reply to alice");
    await bob.locator("#reply-bar", { hasText: "Replying to alice: which port does it listen on?" }).waitFor();
    await say(bob, "8080 by default");
    await waitForMessage(alice, "8080 by default");
    const quote = line(alice, "8080 by default").locator(".reply-quote");
    assert.equal(await quote.locator(".quote-from").textContent(), "alice");
    assert.equal(await quote.locator(".quote-text").textContent(), "which port does it listen on?");
    assert.equal(await bob.locator("#reply-bar").isVisible(), false, "the bar closes once sent");
  });

  test("a reply's preview jumps to an original the page had not loaded, loading history", async () => {
    const original = await post(server, "lobby", "carol", "the very first plan\nwith details");
    for (let i = 1; i <= 120; i++) await post(server, "lobby", "carol", `filler ${i}`);
    await post(server, "lobby", "dave", "as planned long ago", original);
    await bob.reload();
    await waitForMessage(bob, "as planned long ago");
    assert.equal(await line(bob, "the very first plan").count(), 0, "the original is not loaded yet");
    const quote = line(bob, "as planned long ago").locator(".reply-quote");
    // The preview was read from the server: author and first line.
    await quote.locator(".quote-text", { hasText: "the very first plan" }).waitFor();
    assert.equal(await quote.locator(".quote-from").textContent(), "carol");
    await quote.focus();
    await quote.press("Enter");
    const target = bob.locator("li.msg.highlight", { hasText: "the very first plan" });
    await target.waitFor({ timeout: 20000 });
    assert.equal(await target.getAttribute("data-id"), String(original));
    assert.ok(await target.evaluate((li) => {
      const log = document.getElementById("log").getBoundingClientRect();
      const r = li.getBoundingClientRect();
      return r.top >= log.top && r.bottom <= log.bottom;
    }), "the original is scrolled into view");
  });

  test("an edit shows the new text and an (edited) mark with the time on the other page", async () => {
    await say(alice, "teh typo");
    await waitForMessage(alice, "teh typo", { settled: true });
    await waitForMessage(bob, "teh typo");
    await pressIn(line(alice, "teh typo"), "Edit your message");
    const box = alice.getByLabel("Edit message");
    assert.equal(await box.inputValue(), "teh typo");
    await box.fill("the typo, fixed");
    await box.press("Enter");
    const edited = line(bob, "the typo, fixed");
    await edited.waitFor();
    assert.match(await edited.locator(".edited").getAttribute("title"), /^edited /);
    assert.equal(await edited.locator(".edited").textContent(), "(edited)");
    assert.equal(await line(bob, "teh typo").count(), 0);
  });

  test("Escape cancels an edit and sends nothing", async () => {
    const li = line(alice, "the typo, fixed");
    await li.locator(".edited").waitFor();
    await pressIn(li, "Edit your message");
    await alice.getByLabel("Edit message").fill("never sent");
    await alice.getByLabel("Edit message").press("Escape");
    await li.locator(".text", { hasText: "the typo, fixed" }).waitFor();
    assert.equal(await alice.getByLabel("Edit message").count(), 0);
  });

  test("only your own messages offer Edit and Delete", async () => {
    const others = line(bob, "the typo, fixed");
    assert.equal(await others.getByRole("button", { name: "Edit your message" }).count(), 0);
    assert.equal(await others.getByRole("button", { name: "Delete your message" }).count(), 0);
    assert.equal(await others.getByRole("button", { name: "Reply to alice" }).count(), 1);
  });

  test("deleting your own message asks first, then leaves a tombstone on the other page", async () => {
    await say(alice, "regrettable remark");
    await waitForMessage(alice, "regrettable remark", { settled: true });
    await waitForMessage(bob, "regrettable remark");
    const li = line(alice, "regrettable remark");
    await pressIn(li, "Delete your message");
    const confirm = li.getByRole("group", { name: "Delete this message?" });
    await confirm.waitFor();
    await confirm.getByRole("button", { name: "Delete", exact: true }).press("Enter");
    await bob.locator("li.msg.deleted", { hasText: "message deleted" }).waitFor();
    assert.equal(await bob.locator("li.msg", { hasText: "regrettable remark" }).count(), 0);
    await alice.locator("li.msg.deleted", { hasText: "message deleted" }).waitFor();
  });

  test("reactions: counts and who reacted on the other page; pressing your own removes it", async () => {
    await say(alice, "ship it?");
    await waitForMessage(bob, "ship it?");
    const bobs = line(bob, "ship it?");
    await pressIn(bobs, "React to the message from alice");
    await bob.getByRole("group", { name: "Pick a reaction" }).getByRole("button", { name: "React with 👍" }).press("Enter");
    const onAlice = line(alice, "ship it?").locator('.reaction[data-emoji="👍"]');
    await onAlice.locator(".count", { hasText: "1" }).waitFor();
    assert.equal(await onAlice.getAttribute("title"), "bob");
    assert.equal(await onAlice.getAttribute("aria-pressed"), "false");
    // alice adds hers by pressing bob's reaction: two, by both, on bob's page.
    await onAlice.press("Enter");
    const onBob = bobs.locator('.reaction[data-emoji="👍"]');
    await onBob.locator(".count", { hasText: "2" }).waitFor();
    assert.equal(await onBob.getAttribute("title"), "bob, alice");
    assert.equal(await onBob.getAttribute("aria-pressed"), "true");
    // Free input: any single emoji.
    await pressIn(bobs, "React to the message from alice");
    await bob.getByLabel("Other emoji").fill("🦀");
    await bob.getByLabel("Other emoji").press("Enter");
    await line(alice, "ship it?").locator('.reaction[data-emoji="🦀"] .count', { hasText: "1" }).waitFor();
    // bob takes his 👍 back.
    await onBob.press("Enter");
    await onAlice.locator(".count", { hasText: "1" }).waitFor();
    await alice.waitForFunction(() =>
      [...document.querySelectorAll('.reaction[data-emoji="👍"]')].some((b) => b.title === "alice"),
    );
  });

  test("a page that was offline shows the edit and the reaction made meanwhile", async () => {
    await say(alice, "before the outage");
    await waitForMessage(alice, "before the outage", { settled: true });
    await waitForMessage(bob, "before the outage");
    await bobContext.setOffline(true);
    await bob.locator('#conn[data-state="offline"]').waitFor();
    bobJoins.length = 0;

    await pressIn(line(alice, "before the outage"), "Edit your message");
    await alice.getByLabel("Edit message").fill("edited while bob was away");
    await alice.getByLabel("Edit message").press("Enter");
    const mine = line(alice, "edited while bob was away");
    await mine.locator(".edited").waitFor();
    await pressIn(mine, "React to the message from alice");
    await alice.getByRole("button", { name: "React with 🎉" }).press("Enter");
    await mine.locator('.reaction[data-emoji="🎉"]').waitFor();
    assert.ok(await bob.locator("li.msg", { hasText: "before the outage" }).count(), "bob has not seen it yet");

    await bobContext.setOffline(false);
    const caught = line(bob, "edited while bob was away");
    await caught.waitFor({ timeout: 20000 });
    await caught.locator(".edited").waitFor();
    const party = caught.locator('.reaction[data-emoji="🎉"]');
    await party.locator(".count", { hasText: "1" }).waitFor();
    assert.equal(await party.getAttribute("title"), "alice");
    const rejoin = bobJoins.find((j) => j.room === "lobby");
    assert.ok(rejoin?.data?.changes_since >= 1, `rejoined with changes_since: ${JSON.stringify(rejoin)}`);
  });

  test("a page on the SSE fallback sees an edit and a reaction as they happen", async () => {
    const b = await launchBrowser();
    browsers.push(b);
    const carol = await openChat(b, server, { name: "carol", query: "?transport=sse" });
    await say(alice, "said over the socket");
    await waitForMessage(carol, "said over the socket");
    await pressIn(line(alice, "said over the socket"), "Edit your message");
    await alice.getByLabel("Edit message").fill("said, then fixed");
    await alice.getByLabel("Edit message").press("Enter");
    const seen = line(carol, "said, then fixed");
    await seen.locator(".edited").waitFor();
    await pressIn(line(bob, "said, then fixed"), "React to the message from alice");
    await bob.getByRole("button", { name: "React with 👀" }).press("Enter");
    await seen.locator('.reaction[data-emoji="👀"] .count', { hasText: "1" }).waitFor();
    // A guest's page (here on SSE) shows changes but offers no way to make them.
    assert.equal(await seen.getByRole("button", { name: "React to the message from alice" }).count(), 0);
  });

  test("a signed-in page on the SSE fallback edits and reacts through the HTTP API", async () => {
    const b = await launchBrowser();
    browsers.push(b);
    const dora = await openGuest(b, server, { label: "dora" });
    await signIn(dora, "signup", { name: "dora", password: PASSWORD });
    await dora.goto(server.url("/?transport=sse#lobby"));
    await dora.getByText("Signed in as dora").waitFor();
    assert.equal(await dora.evaluate(() => document.documentElement.dataset.transport), "sse");
    await dora.locator('#conn[data-state="connected"]').waitFor();
    await say(dora, "typed over sse");
    await waitForMessage(alice, "typed over sse");
    await pressIn(line(dora, "typed over sse"), "Edit your message");
    await dora.getByLabel("Edit message").fill("typed over sse, fixed");
    await dora.getByLabel("Edit message").press("Enter");
    await line(alice, "typed over sse, fixed").locator(".edited").waitFor();
    await pressIn(line(dora, "typed over sse, fixed"), "React to the message from dora");
    await dora.getByRole("button", { name: "React with 🎉" }).press("Enter");
    const onAlice = line(alice, "typed over sse, fixed");
    await onAlice.locator('.reaction[data-emoji="🎉"] .count', { hasText: "1" }).waitFor();
    await line(dora, "typed over sse, fixed").locator('.reaction[data-emoji="🎉"] .count', { hasText: "1" }).waitFor();
  });

  test("no uncaught errors in any page", () => {
    for (const b of browsers) assert.deepEqual(b.pageErrors, []);
  });
});
