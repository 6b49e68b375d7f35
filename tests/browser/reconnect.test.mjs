// The server goes away and comes back (same port, same data dir). The page must show that it
// is reconnecting, queue what is typed meanwhile (shown as pending), rejoin with since=<last id
// seen>, show every missed message exactly once and in order, and deliver the queued message.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import {
  cleanupTmp,
  dumpOnFailure,
  HubbubServer,
  freePort,
  launchBrowser,
  messages,
  openChat,
  say,
  tmpDir,
  waitForMessage,
} from "./lib/harness.mjs";

describe("reconnect after the server restarts", () => {
  afterEach(dumpOnFailure);
  let server, browser, page;
  const joinsSent = [];

  before(async () => {
    server = await new HubbubServer({ port: await freePort(), dataDir: tmpDir("hubbub-data-") }).start();
    browser = await launchBrowser();
    const recordJoins = (p) =>
      p.on("websocket", (ws) => {
        ws.on("framesent", (f) => {
          try {
            const frame = JSON.parse(String(f.payload));
            if (frame.type === "join") joinsSent.push(frame);
          } catch {
            /* not JSON */
          }
        });
      });
    page = await openChat(browser, server, { name: "alice", beforeGoto: recordJoins });
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    cleanupTmp();
  });

  for (const signal of ["SIGTERM", "SIGKILL"]) {
    test(`restart with ${signal}: missed messages shown once each, queued message delivered`, async () => {
      const tag = signal.toLowerCase();
      await server.post("lobby", "bob", `${tag}: before 1`);
      await say(page, `${tag}: alice before`);
      // Acked (stored) before bob posts again: two connections' posts have no order of their
      // own, so without this wait "before 2" could get the lower id (seen on a loaded machine:
      // both landed in one group commit, the HTTP post first).
      await waitForMessage(page, `${tag}: alice before`, { settled: true });
      await server.post("lobby", "bob", `${tag}: before 2`);
      await waitForMessage(page, `${tag}: before 2`);
      const lastIdBefore = Math.max(...(await messages(page)).map((m) => m.id));

      await server.stop(signal);
      await page.locator('#conn[data-state="reconnecting"], #conn[data-state="connecting"]').first().waitFor();
      await page.getByText(/Reconnecting/).first().waitFor({ timeout: 10000 });

      // Typed while offline: shown at once, marked as queued/pending.
      await say(page, `${tag}: typed while offline`);
      const queued = (await messages(page)).at(-1);
      assert.equal(queued.text, `${tag}: typed while offline`);
      assert.ok(queued.pending, "the offline message is pending");
      assert.match(queued.status, /queued/);
      await page.waitForTimeout(1500); // stay down a little: the client backs off meanwhile

      joinsSent.length = 0;
      await server.start();
      // Another client posts while the page is still waiting to reconnect.
      const missed = [];
      for (let i = 1; i <= 5; i++) {
        missed.push(`${tag}: missed ${i}`);
        await server.post("lobby", "bob", `${tag}: missed ${i}`);
      }

      await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 30000 });
      await waitForMessage(page, `${tag}: missed 5`, { timeout: 15000 });
      await waitForMessage(page, `${tag}: typed while offline`, { settled: true, timeout: 15000 });
      await server.post("lobby", "bob", `${tag}: live after reconnect`);
      await waitForMessage(page, `${tag}: live after reconnect`);

      // The rejoin asked only for what was missed.
      const rejoin = joinsSent.find((f) => f.room === "lobby");
      assert.ok(rejoin, "the page rejoined lobby");
      assert.equal(rejoin.data?.since, lastIdBefore);

      const ms = await messages(page);
      const mine = ms.filter((m) => m.text.startsWith(`${tag}:`)).map((m) => m.text);
      // The page reconnects on its own schedule, so "typed while offline" may be stored between
      // two of bob's "missed" posts: the page must show exactly what the store holds, in its order.
      const hist = await server.history("lobby", { limit: 200 });
      const storedOrder = hist.messages.map((m) => m.data).filter((t) => t.startsWith(`${tag}:`));
      assert.deepEqual(mine, storedOrder, "the page shows the store's messages in id order");
      assert.deepEqual(mine.slice(0, 3), [`${tag}: before 1`, `${tag}: alice before`, `${tag}: before 2`]);
      assert.deepEqual(
        mine.filter((t) => t.includes(": missed ")),
        missed,
      );
      assert.deepEqual([...mine].sort(), [
        `${tag}: alice before`,
        `${tag}: before 1`,
        `${tag}: before 2`,
        `${tag}: live after reconnect`,
        ...missed,
        `${tag}: typed while offline`,
      ].sort());
      assert.equal(mine.at(-1), `${tag}: live after reconnect`);
      // Every message once, ids strictly increasing, nothing left pending.
      const ids = ms.map((m) => m.id);
      assert.equal(new Set(ids).size, ids.length, "no duplicates");
      assert.deepEqual([...ids].sort((a, b) => a - b), ids, "in id order");
      assert.ok(ms.every((m) => !m.pending), "nothing pending");

      // The queued message was stored exactly once.
      const stored = hist.messages.filter((m) => m.data === `${tag}: typed while offline`);
      assert.equal(stored.length, 1);
      assert.equal(stored[0].from, "alice");
    });
  }

  test("a message sent just as the server dies is stored and shown exactly once", async () => {
    // The kill lands before, during or after the store/broadcast/ack of the message: whichever
    // it is, the client must neither lose it nor send it twice.
    for (const delay of [0, 5, 15, 30, 60]) {
      const text = `racing the kill (${delay} ms)`;
      const box = page.getByLabel("Message", { exact: true });
      await box.fill(text);
      const sent = box.press("Enter");
      await new Promise((r) => setTimeout(r, delay));
      await server.stop("SIGKILL");
      await sent;
      await server.start();
      await waitForMessage(page, text, { settled: true, timeout: 30000 });
      const hist = await server.history("lobby", { limit: 200 });
      assert.equal(hist.messages.filter((m) => m.data === text).length, 1, `${text}: stored once`);
      const ms = await messages(page);
      assert.equal(ms.filter((m) => m.text === text).length, 1, `${text}: shown once`);
      const ids = ms.map((m) => m.id);
      assert.deepEqual([...new Set(ids)].sort((a, b) => a - b), ids, "ids unique and in order");
    }
  });

  test("the browser going offline shows 'Offline', queues, and catches up when back online", async () => {
    await server.post("lobby", "bob", "offline: before");
    await waitForMessage(page, "offline: before");
    await browser.setOffline(true);
    await page.locator('#conn[data-state="offline"]').waitFor();
    await page.getByText("Offline: waiting for the network").waitFor();
    await say(page, "offline: typed with no network");
    assert.ok((await messages(page)).at(-1).pending);
    await server.post("lobby", "bob", "offline: missed");
    await page.waitForTimeout(500);
    assert.ok(!(await messages(page)).some((m) => m.text === "offline: missed"));
    await browser.setOffline(false);
    await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
    await waitForMessage(page, "offline: typed with no network", { settled: true });
    const texts = (await messages(page)).map((m) => m.text).filter((t) => t.startsWith("offline:"));
    assert.deepEqual(texts, ["offline: before", "offline: missed", "offline: typed with no network"]);
  });

  test("a server whose data was wiped (ids start again) does not hide new messages", async () => {
    await server.stop("SIGTERM");
    server.dataDir = tmpDir("hubbub-data-wiped-");
    await server.start();
    await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 30000 });
    await page.locator('[role="log"] li.notice', { hasText: "history was reset" }).waitFor();
    await server.post("lobby", "bob", "first message of the new history");
    await waitForMessage(page, "first message of the new history");
    const ms = await messages(page);
    assert.deepEqual(ms.map((m) => [m.id, m.text]), [[1, "first message of the new history"]]);
  });

  test("no uncaught errors in the page", () => {
    assert.deepEqual(browser.pageErrors, []);
  });
});
