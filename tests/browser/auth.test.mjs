// Token auth (--auth-secret): the page takes a JWT from its address, keeps it in sessionStorage,
// hides it from the address bar, presents it on /ws, /events and /api, names itself after the
// token's `sub`, and explains refusals (a room outside the claim, no token, an expired token)
// instead of retrying forever. Tokens are minted by the real binary (`hubbub token`).

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, afterEach, before, describe, test } from "node:test";
import {
  cleanupTmp,
  dumpOnFailure,
  hubbubBin,
  launchBrowser,
  messages,
  openChat,
  say,
  sleep,
  startServer,
  waitConnectedState,
  waitForMessage,
} from "./lib/harness.mjs";

const SECRET = "browser-test-secret-0123456789abcdef";

function mint(sub, { rooms = "team-*", ttl = "1h" } = {}) {
  const args = ["token", "--sub", sub, "--ttl", ttl];
  if (rooms) args.push("--rooms", rooms);
  return execFileSync(hubbubBin, args, {
    env: { ...process.env, HUBBUB_AUTH_SECRET: SECRET },
    encoding: "utf8",
  }).trim();
}

const notice = (page) => page.locator("#alert");

describe("token auth in the web client", () => {
  afterEach(dumpOnFailure);
  let server, alice, bob, carol, anon, late, pa, pb;
  const aliceSent = []; // frames alice's page sent over its WebSocket
  const aliceSockets = []; // URLs of the WebSockets alice's page opened

  before(async () => {
    server = await startServer({ extraArgs: ["--auth-secret", SECRET] });
    alice = await launchBrowser();
    bob = await launchBrowser();
    pa = await openChat(alice, server, {
      query: `?token=${mint("alice")}`,
      hash: "#team-a",
      beforeGoto: (p) =>
        p.on("websocket", (ws) => {
          aliceSockets.push(ws.url());
          ws.on("framesent", (f) => {
            try {
              aliceSent.push(JSON.parse(String(f.payload)));
            } catch {
              /* not JSON */
            }
          });
        }),
    });
    // bob uses the fragment form: the token never reaches the server as part of the page URL.
    pb = await openChat(bob, server, { hash: `#team-a&token=${mint("bob")}` });
  });

  after(async () => {
    for (const b of [alice, bob, carol, anon, late]) await b?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("the name comes from the token, read-only, and the token leaves the address bar", async () => {
    for (const [page, name] of [
      [pa, "alice"],
      [pb, "bob"],
    ]) {
      const field = page.getByLabel("Your name");
      assert.equal(await field.inputValue(), name);
      assert.equal(await field.evaluate((el) => el.readOnly), true);
      assert.match(await page.locator("#name-hint").textContent(), /sign-in/);
      const url = new URL(page.url());
      assert.ok(!page.url().includes("token"), `no token in ${page.url()}`);
      assert.equal(url.hash, "#team-a", "the room deep link survives");
      assert.equal(await page.locator("#room-title").textContent(), "#team-a");
      const stored = await page.evaluate(() => ({
        session: sessionStorage.getItem("hubbub.token"),
        local: Object.keys(localStorage).filter((k) => (localStorage.getItem(k) || "").includes("eyJ")),
      }));
      assert.ok(stored.session?.startsWith("eyJ"), "kept in sessionStorage");
      assert.deepEqual(stored.local, [], "never in localStorage");
      // Typing into the field does not try to rename.
      await page.getByLabel("Your name").press("Enter");
    }
    assert.ok(aliceSockets.length >= 1 && aliceSockets.every((u) => new URL(u).searchParams.get("token")));
    assert.ok(!aliceSent.some((f) => f.type === "nick"), "no nick frame");
  });

  test("alice and bob chat in team-a", async () => {
    await say(pa, "hello team from alice");
    await waitForMessage(pb, "hello team from alice");
    await say(pb, "hi alice");
    await waitForMessage(pa, "hi alice");
    await waitForMessage(pa, "hello team from alice", { settled: true });
    const ms = await messages(pb);
    assert.deepEqual(
      ms.slice(-2).map((m) => `${m.from}: ${m.text}`),
      ["alice: hello team from alice", "bob: hi alice"],
    );
    // The directory (GET /api/rooms with a bearer token) lists team-a.
    await pa.locator('#room-list li[data-room="team-a"]').waitFor();
  });

  test("joining a room outside the claim shows an unauthorized notice, once", async () => {
    await pa.getByLabel("Join or create a room").fill("random");
    await pa.getByLabel("Join or create a room").press("Enter");
    await notice(pa).getByText("You don't have access to #random").waitFor({ timeout: 5000 });
    assert.match(await notice(pa).textContent(), /team-\*/);
    await sleep(2000);
    const joins = aliceSent.filter((f) => f.type === "join" && f.room === "random");
    assert.equal(joins.length, 1, "asked once, no retry loop");
    assert.equal(await pa.locator('#room-list li[data-room="random"]').count(), 0);
    assert.equal(await pa.locator("#room-title").textContent(), "#team-a");
    await waitConnectedState(pa);
    // Still chatting where allowed.
    await say(pa, "still here");
    await waitForMessage(pb, "still here");
  });

  test("a reload keeps the session's token (sessionStorage) and the name", async () => {
    await pa.reload();
    await waitConnectedState(pa);
    assert.equal(await pa.getByLabel("Your name").inputValue(), "alice");
    await waitForMessage(pa, "still here");
  });

  test("without a token the page says it cannot connect and stops", async () => {
    anon = await launchBrowser();
    const attempts = [];
    const p = await openChat(anon, server, {
      waitConnected: false,
      beforeGoto: (pg) => {
        pg.on("websocket", (ws) => attempts.push(`ws ${ws.url()}`));
        pg.on("request", (r) => {
          if (new URL(r.url()).pathname === "/events") attempts.push(`sse ${r.url()}`);
        });
      },
    });
    await p.locator('#conn[data-state="unauthenticated"]').waitFor({ timeout: 10000 });
    await notice(p).getByText("Cannot connect: this server needs a sign-in token").waitFor();
    const seen = attempts.length;
    await sleep(4000);
    assert.equal(attempts.length, seen, `no further attempts: ${attempts}`);
    assert.ok(seen <= 2, `a single attempt: ${attempts}`);
    assert.equal(await p.locator("#retry-now").isVisible(), false);
  });

  test("over ?transport=sse the token goes on /events and as a bearer header on /api", async () => {
    carol = await launchBrowser();
    const requests = [];
    const p = await openChat(carol, server, {
      query: `?transport=sse&token=${mint("carol")}`,
      hash: "#team-a",
      beforeGoto: (pg) =>
        pg.on("request", (r) => {
          const u = new URL(r.url());
          if (u.pathname === "/events" || u.pathname.startsWith("/api/")) {
            requests.push({ path: u.pathname, method: r.method(), query: u.searchParams, auth: r.headers().authorization });
          }
        }),
    });
    assert.equal(await p.evaluate(() => document.documentElement.dataset.transport), "sse");
    assert.ok(!p.url().includes("token"));
    assert.equal(new URL(p.url()).search, "?transport=sse", "other parameters stay");
    assert.equal(await p.getByLabel("Your name").inputValue(), "carol");
    await say(p, "carol over sse");
    await waitForMessage(pa, "carol over sse");
    await waitForMessage(p, "carol over sse", { settled: true });
    assert.equal((await messages(pa)).find((m) => m.text === "carol over sse").from, "carol");
    await say(pa, "alice to carol");
    await waitForMessage(p, "alice to carol");
    const events = requests.filter((r) => r.path === "/events");
    assert.ok(events.length >= 1 && events.every((r) => r.query.get("token")?.startsWith("eyJ")));
    const posts = requests.filter((r) => r.method === "POST");
    assert.ok(posts.length >= 1 && posts.every((r) => /^Bearer eyJ/.test(r.auth || "")), "bearer on POST");
    assert.ok(posts.every((r) => !r.query.get("token")), "no token in /api URLs");

    // A room outside the claim: the stream is refused (403), the page says so and stops asking.
    await p.getByLabel("Join or create a room").fill("random");
    await p.getByLabel("Join or create a room").press("Enter");
    await notice(p).getByText("You don't have access to #random").waitFor({ timeout: 10000 });
    const n = requests.filter((r) => r.path === "/events" && r.query.get("room") === "random").length;
    await sleep(3000);
    assert.equal(requests.filter((r) => r.path === "/events" && r.query.get("room") === "random").length, n);
    assert.equal(await p.locator('#room-list li[data-room="random"]').count(), 0);
  });

  test("an expiring token: the server closes the connection, the page says the session expired", async () => {
    late = await launchBrowser();
    const sockets = [];
    const p = await openChat(late, server, {
      query: `?token=${mint("dora", { ttl: "6s" })}`,
      hash: "#team-a",
      beforeGoto: (pg) => pg.on("websocket", (ws) => sockets.push(ws.url())),
    });
    await notice(p).getByText("Your session expired").waitFor({ timeout: 25000 });
    assert.equal(await p.locator("#conn-text").textContent(), "Session expired");
    const seen = sockets.length;
    await sleep(3000);
    assert.equal(sockets.length, seen, "no reconnecting after expiry");
  });

  test("no uncaught errors in any page", () => {
    for (const b of [alice, bob, carol, anon, late]) assert.deepEqual(b?.pageErrors ?? [], []);
  });
});
