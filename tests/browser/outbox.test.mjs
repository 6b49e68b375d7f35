// The offline queue survives a reload: a message typed while the connection is down is kept in
// localStorage, shown as pending after the page is reloaded, and sent exactly once when the
// connection comes back; a message that was sent but whose ack was lost is looked up after a
// reload, not sent a second time; with two tabs each sends its own, and a closed tab's queue is
// sent by the other.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import {
  cleanupTmp,
  dumpOnFailure,
  launchBrowser,
  messages,
  openChat,
  say,
  startHandshakeHoldingProxy,
  startServer,
  waitForMessage,
} from "./lib/harness.mjs";

/** Counts, per text, the `msg` frames a page sends on any of its sockets (across reloads). */
function countSentMessages(page) {
  const sent = new Map();
  page.on("websocket", (ws) =>
    ws.on("framesent", (f) => {
      try {
        const frame = JSON.parse(String(f.payload));
        if (frame.type === "msg") sent.set(frame.data, (sent.get(frame.data) || 0) + 1);
      } catch {
        /* not JSON */
      }
    }),
  );
  return sent;
}

/** Counts, per text, the `msg` frames a page receives. */
function countReceivedMessages(page) {
  const got = new Map();
  page.on("websocket", (ws) =>
    ws.on("framereceived", (f) => {
      try {
        const frame = JSON.parse(String(f.payload));
        if (frame.type === "msg") got.set(frame.data, (got.get(frame.data) || 0) + 1);
      } catch {
        /* not JSON */
      }
    }),
  );
  return got;
}

const storedOutbox = (page) => page.evaluate(() => JSON.parse(localStorage.getItem("hubbub.outbox") || "[]"));

describe("the offline queue across a reload", () => {
  let server, proxy, alice, bob, pa, pb, sentByAlice, gotByBob;
  afterEach(dumpOnFailure);

  before(async () => {
    server = await startServer();
    // alice reaches the server through a proxy that can hold her WebSocket handshakes: the page
    // then loads but cannot connect, for exactly as long as the test wants.
    proxy = await startHandshakeHoldingProxy(server, { holding: false });
    alice = await launchBrowser();
    bob = await launchBrowser();
    pa = await openChat(alice, proxy, {
      name: "alice",
      beforeGoto: (p) => {
        sentByAlice = countSentMessages(p);
      },
    });
    pb = await openChat(bob, server, {
      name: "bob",
      beforeGoto: (p) => {
        gotByBob = countReceivedMessages(p);
      },
    });
  });

  after(async () => {
    await alice?.close();
    await bob?.close();
    await proxy?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("a message typed offline is pending after a reload and delivered once when back online", async () => {
    const text = "typed offline, kept across a reload";
    await say(pa, "online before");
    await waitForMessage(pb, "online before");
    await waitForMessage(pa, "online before", { settled: true });

    await alice.setOffline(true);
    await pa.locator('#conn[data-state="offline"]').waitFor();
    await say(pa, text);
    const queued = (await messages(pa)).at(-1);
    assert.equal(queued.text, text);
    assert.match(queued.status, /queued/);
    assert.deepEqual((await storedOutbox(pa)).map((e) => [e.text, e.state]), [[text, "queued"]]);

    // Reloading with no network shows the browser's own error page; the queue stays in storage.
    await assert.rejects(pa.reload(), /ERR_INTERNET_DISCONNECTED/);
    // The network is back but the WebSocket is not (held by the proxy): the page loads again and
    // shows the message as pending, not sent.
    proxy.hold();
    await alice.setOffline(false);
    await pa.goto(proxy.url("/#lobby"));
    await proxy.waitHeld();
    await waitForMessage(pa, text);
    const pending = (await messages(pa)).filter((m) => m.text === text);
    assert.equal(pending.length, 1);
    assert.ok(pending[0].pending, "shown as pending after the reload");
    assert.match(pending[0].status, /queued/);
    assert.equal(await pa.locator("#conn").getAttribute("data-state"), "connecting");
    assert.equal(sentByAlice.get(text) ?? 0, 0, "not sent while the connection is down");

    proxy.release();
    await waitForMessage(pa, text, { settled: true, timeout: 20000 });
    await waitForMessage(pb, text);
    await say(pb, "bob after the reconnect"); // everything before this reached both pages
    await waitForMessage(pa, "bob after the reconnect");
    assert.equal(sentByAlice.get(text), 1, "sent once");
    assert.equal(gotByBob.get(text), 1, "bob got it once");
    assert.equal((await messages(pb)).filter((m) => m.text === text).length, 1);
    const shown = (await messages(pa)).filter((m) => m.text === text);
    assert.equal(shown.length, 1, "alice shows it once");
    assert.ok(!shown[0].pending && typeof shown[0].id === "number", "shown as sent");
    const hist = await server.history("lobby", { limit: 200 });
    assert.deepEqual(hist.messages.filter((m) => m.data === text).map((m) => m.from), ["alice"]);
    assert.deepEqual(await storedOutbox(pa), [], "nothing left in storage once acked");
  });

  test("a message sent just before a reload, its ack lost, is not sent again", async () => {
    // From here alice's socket runs through a route that counts what she sends and can drop
    // everything the server sends her: her message is then stored and broadcast, and her page
    // never learns it.
    const text = "sent, then the ack was lost";
    const routed = new Map(); // text -> msg frames alice sent through the route
    let mute = false;
    await pa.routeWebSocket(/\/ws/, (ws) => {
      const upstream = ws.connectToServer();
      ws.onMessage((m) => {
        try {
          const frame = JSON.parse(String(m));
          if (frame.type === "msg") routed.set(frame.data, (routed.get(frame.data) || 0) + 1);
        } catch {
          /* not JSON */
        }
        upstream.send(m);
      });
      upstream.onMessage((m) => {
        if (!mute) ws.send(m);
      });
    });
    await pa.reload();
    await say(pa, "through the route");
    await waitForMessage(pa, "through the route", { settled: true, timeout: 20000 });

    mute = true;
    await say(pa, text);
    await waitForMessage(pb, text); // stored and broadcast
    const unacked = (await messages(pa)).filter((m) => m.text === text);
    assert.equal(unacked.length, 1);
    assert.ok(unacked[0].pending, "no ack came: still pending");
    assert.deepEqual((await storedOutbox(pa)).map((e) => [e.text, e.state]), [[text, "sent"]]);
    assert.equal(routed.get(text), 1);

    // More than the 50 messages a fresh join replays: after the reload the page cannot see its
    // message in the replay and must look it up in the room's history.
    for (let i = 1; i <= 60; i++) await server.post("lobby", "bob", `while alice reloads ${i}`);
    const lookedUp = pa.waitForResponse((r) => r.url().includes("/api/rooms/lobby/messages"), { timeout: 20000 });
    mute = false;
    await pa.reload();
    await pa.locator('#conn[data-state="connected"]').waitFor();
    await lookedUp; // the page looked its message up in the room's history...
    // ...found it there, and dropped its pending copy.
    await pa.locator('[role="log"] li.msg.unsent, [role="log"] li.msg.pending').waitFor({ state: "detached" });
    await say(pb, "bob after alice's reload");
    await waitForMessage(pa, "bob after alice's reload");
    assert.equal(routed.get(text), 1, "not sent a second time");
    assert.equal(gotByBob.get(text), 1, "bob got it once");
    assert.equal((await messages(pa)).filter((m) => m.text === text).length, 0, "older than the replay: not shown twice, not shown at the bottom");
    const hist = await server.history("lobby", { limit: 200 });
    assert.equal(hist.messages.filter((m) => m.data === text).length, 1, "stored once");
    assert.deepEqual(await storedOutbox(pa), []);
    await pa.unrouteAll();
  });

  test("no uncaught errors in either page", () => {
    assert.deepEqual(alice.pageErrors, []);
    assert.deepEqual(bob.pageErrors, []);
  });
});

describe("the offline queue with two tabs", () => {
  let server, browser;
  afterEach(dumpOnFailure);

  before(async () => {
    server = await startServer();
    browser = await launchBrowser(); // one profile: both tabs share localStorage
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("each tab sends its own queued message once; a closed tab's is sent by the other", async () => {
    const t1 = await openChat(browser, server, { name: "carol" });
    const t2 = await openChat(browser, server, { name: "carol" });
    const sent = [countSentMessages(t1), countSentMessages(t2)];
    await browser.setOffline(true);
    await t1.locator('#conn[data-state="offline"]').waitFor();
    await t2.locator('#conn[data-state="offline"]').waitFor();
    await say(t1, "from tab one");
    await say(t2, "from tab two");
    await say(t1, "tab one, closed before it could send");
    const queue = await storedOutbox(t2);
    assert.deepEqual(queue.map((e) => e.text).sort(), ["from tab one", "from tab two", "tab one, closed before it could send"]);
    assert.equal(new Set(queue.map((e) => e.tab)).size, 2, "each entry names the tab that owns it");

    // Tab one goes away with its messages unsent: tab two takes them over.
    await t1.close();
    await waitForMessage(t2, "tab one, closed before it could send");
    await waitForMessage(t2, "from tab one");
    await browser.setOffline(false);
    await t2.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
    for (const text of ["from tab one", "from tab two", "tab one, closed before it could send"]) {
      await waitForMessage(t2, text, { settled: true, timeout: 20000 });
    }
    await t2.locator('[role="log"] li.msg.unsent, [role="log"] li.msg.pending').waitFor({ state: "detached" });
    const hist = await server.history("lobby", { limit: 200 });
    const count = (text) => hist.messages.filter((m) => m.data === text).length;
    for (const text of ["from tab one", "from tab two", "tab one, closed before it could send"]) {
      assert.equal(count(text), 1, `${text}: stored once`);
      assert.equal((await messages(t2)).filter((m) => m.text === text).length, 1, `${text}: shown once`);
      assert.equal((sent[0].get(text) ?? 0) + (sent[1].get(text) ?? 0), 1, `${text}: sent once`);
    }
    assert.deepEqual(await storedOutbox(t2), []);
    assert.deepEqual(browser.pageErrors, []);
  });
});
