// The fallback path: EventSource on /events for receiving, POST /api/rooms/{room}/messages for
// sending. Forced with ?transport=sse, and chosen by itself when the WebSocket cannot open.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import {
  cleanupTmp,
  dumpOnFailure,
  launchBrowser,
  messages,
  openChat,
  say,
  startNoWebSocketProxy,
  startServer,
  tmpDir,
  waitForMessage,
} from "./lib/harness.mjs";

describe("SSE fallback (?transport=sse)", () => {
  afterEach(dumpOnFailure);
  let server, sseBrowser, wsBrowser, ps, pw;
  const sockets = [];
  const requests = [];

  before(async () => {
    server = await startServer();
    sseBrowser = await launchBrowser();
    wsBrowser = await launchBrowser();
    ps = await openChat(sseBrowser, server, {
      name: "sse-sam",
      query: "?transport=sse",
      beforeGoto: (p) => {
        p.on("websocket", (ws) => sockets.push(ws.url()));
        p.on("request", (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
      },
    });
    pw = await openChat(wsBrowser, server, { name: "ws-wendy" });
  });

  after(async () => {
    await sseBrowser?.close();
    await wsBrowser?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("the SSE page uses EventSource and HTTP, never a WebSocket", async () => {
    assert.equal(await ps.evaluate(() => document.documentElement.dataset.transport), "sse");
    await ps.getByText("Connected (SSE fallback)").waitFor();
    assert.ok(requests.some((r) => r === "GET /events"), `an EventSource request: ${requests}`);
    assert.deepEqual(sockets, []);
  });

  test("the SSE page and a WebSocket page chat both ways", async () => {
    await say(ps, "sent over POST");
    await waitForMessage(pw, "sent over POST");
    await waitForMessage(ps, "sent over POST", { settled: true });
    assert.ok(requests.includes("POST /api/rooms/lobby/messages"));
    await say(pw, "received over EventSource");
    await waitForMessage(ps, "received over EventSource");
    await say(ps, "<script>window.__pwned=1</script>");
    await waitForMessage(pw, "<script>window.__pwned=1</script>");
    await waitForMessage(ps, "<script>window.__pwned=1</script>", { settled: true });

    const texts = (await messages(ps)).map((m) => `${m.from}: ${m.text}`);
    assert.deepEqual(texts, [
      "sse-sam: sent over POST",
      "ws-wendy: received over EventSource",
      "sse-sam: <script>window.__pwned=1</script>",
    ]);
    assert.equal(await ps.evaluate(() => window.__pwned), undefined);
    assert.deepEqual(sockets, []);
    // The WebSocket page lists the SSE member.
    await pw.locator('#member-list li[data-name="sse-sam"]').waitFor();
  });

  test("rooms work over SSE: join another room, unread count, switch", async () => {
    await ps.getByLabel("Join or create a room").fill("sse-room");
    await ps.getByLabel("Join or create a room").press("Enter");
    await ps.locator("#room-title", { hasText: "#sse-room" }).waitFor();
    await ps.locator("#room-list li[data-room='lobby'] button").click();
    await server.post("sse-room", "poster", "unread over sse");
    await ps.waitForFunction(
      () => document.querySelector('#room-list li[data-room="sse-room"] .unread')?.firstChild?.textContent === "1",
    );
    await ps.locator("#room-list li[data-room='sse-room'] button").click();
    await waitForMessage(ps, "unread over sse");
  });

  test("SSE: server restart, missed messages once each, offline message delivered", async () => {
    await ps.locator("#room-list li[data-room='lobby'] button").click();
    await waitForMessage(ps, "received over EventSource");
    await server.stop("SIGKILL");
    await ps.locator('#conn:not([data-state="connected"])').waitFor({ timeout: 10000 });
    await say(ps, "sse typed while offline");
    assert.ok((await messages(ps)).at(-1).pending);
    await ps.waitForTimeout(1000);
    await server.start();
    for (let i = 1; i <= 3; i++) await server.post("lobby", "bob", `sse missed ${i}`);
    await waitForMessage(ps, "sse missed 3", { timeout: 30000 });
    await waitForMessage(ps, "sse typed while offline", { settled: true, timeout: 30000 });
    const ms = await messages(ps);
    const texts = ms.map((m) => m.text);
    for (const t of ["sse missed 1", "sse missed 2", "sse missed 3", "sse typed while offline"]) {
      assert.equal(texts.filter((x) => x === t).length, 1, `${t} shown once`);
    }
    const ids = ms.map((m) => m.id);
    assert.equal(new Set(ids).size, ids.length);
    assert.deepEqual([...ids].sort((a, b) => a - b), ids);
    const hist = await server.history("lobby", { limit: 200 });
    assert.equal(hist.messages.filter((m) => m.data === "sse typed while offline").length, 1);
    assert.deepEqual(sockets, []);
  });

  test("SSE: a server whose data was wiped does not hide new messages", async () => {
    await server.stop("SIGTERM");
    server.dataDir = tmpDir("hubbub-data-wiped-");
    await server.start();
    await ps.locator('[role="log"] li.notice', { hasText: "history was reset" }).waitFor({ timeout: 30000 });
    await server.post("lobby", "bob", "sse: first of the new history");
    await waitForMessage(ps, "sse: first of the new history");
    assert.deepEqual((await messages(ps)).map((m) => [m.id, m.text]), [[1, "sse: first of the new history"]]);
  });

  test("no uncaught errors in either page", () => {
    assert.deepEqual(sseBrowser.pageErrors, []);
    assert.deepEqual(wsBrowser.pageErrors, []);
  });
});

describe("automatic fallback when the WebSocket cannot open", () => {
  afterEach(dumpOnFailure);
  let server, browser;

  before(async () => {
    server = await startServer();
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("a proxy that refuses WebSocket upgrades makes the page use EventSource + HTTP", async () => {
    const proxy = await startNoWebSocketProxy(server);
    try {
      const sockets = [];
      // openChat takes a server-like object: point it at the proxy.
      const page = await openChat(browser, { url: proxy.url }, {
        name: "proxied-pat",
        waitConnected: false,
        beforeGoto: (p) => p.on("websocket", (ws) => sockets.push(ws.url())),
      });
      await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
      assert.equal(await page.evaluate(() => document.documentElement.dataset.transport), "sse");
      assert.equal(sockets.length, 1, "it tried the WebSocket once");
      await say(page, "posted after falling back");
      await waitForMessage(page, "posted after falling back", { settled: true });
      await server.post("lobby", "direct", "streamed through the proxy");
      await waitForMessage(page, "streamed through the proxy");
      const hist = await server.history("lobby");
      assert.ok(hist.messages.some((m) => m.data === "posted after falling back" && m.from === "proxied-pat"));
      await page.close();
    } finally {
      await proxy.close();
    }
  });

  test("a browser without WebSocket uses EventSource + HTTP", async () => {
    const page = await openChat(browser, server, {
      name: "no-ws-nia",
      waitConnected: false,
      beforeGoto: (p) => p.addInitScript(() => delete window.WebSocket),
    });
    await page.locator('#conn[data-state="connected"]').waitFor({ timeout: 20000 });
    assert.equal(await page.evaluate(() => document.documentElement.dataset.transport), "sse");
    await waitForMessage(page, "streamed through the proxy");
    await say(page, "no websocket here");
    await waitForMessage(page, "no websocket here", { settled: true });
    assert.deepEqual(browser.pageErrors, []);
  });
});
