// Test harness: starts the real hubbub binary on a loopback port, opens headless Chromium
// (Debian's /usr/bin/chromium driven by playwright-core), and offers small helpers that act
// the way a person would: type in the "Your name" and "Message" fields, press Enter, read the
// role="log" element.
//
// Everything runs on 127.0.0.1. Processes started here are stopped by their PID.

import { spawn } from "node:child_process";
import http from "node:http";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..", "..");
export const hubbubBin = path.resolve(repoRoot, process.env.HUBBUB_BIN || "target/release/hubbub");
export const chromiumPath = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
export const screenshotDir = path.join(repoRoot, "docs", "screenshots");

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------------------------------------
// Diagnostics, dumped only when a test fails: one timeline of every WebSocket frame each page
// sent and received, each page's console and failed requests, and the servers' logs (set
// HUBBUB_LOG=debug for the hub's debug lines). With it a failure tells "the server never sent
// the frame" from "the page got it and did not show it" from "the test looked too early".

const timeline = [];
const TIMELINE_MAX = 50000;
const servers = new Set();
const stamp = () => new Date().toISOString().slice(11, 23);

/** Adds one line to the diagnostic timeline. */
export function note(who, what) {
  timeline.push(`${stamp()} ${who} ${what}`);
  if (timeline.length > TIMELINE_MAX) timeline.splice(0, timeline.length - TIMELINE_MAX);
}

/** Records a page's WebSocket frames, console and failed requests under its name (a second page
 *  of the same name is "name#2"). */
const labels = new Map();
export function watchPage(page, name) {
  if (page.hubbubWatched) return;
  const n = (labels.get(name) || 0) + 1;
  labels.set(name, n);
  const label = n > 1 ? `${name}#${n}` : name;
  page.hubbubWatched = label;
  page.on("websocket", (ws) => {
    const id = ws.url().replace(/token=[^&]+/, "token=…");
    note(label, `ws created ${id}`);
    ws.on("framesent", (f) => note(label, `-> ${f.payload}`));
    ws.on("framereceived", (f) => note(label, `<- ${f.payload}`));
    ws.on("socketerror", (e) => note(label, `ws error ${e}`));
    ws.on("close", () => note(label, `ws closed ${id}`));
  });
  page.on("console", (m) => note(label, `console.${m.type()} ${m.text()}`));
  page.on("pageerror", (e) => note(label, `pageerror ${e}`));
  page.on("requestfailed", (r) => note(label, `request failed ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
  page.on("framenavigated", (f) => f === page.mainFrame() && note(label, `navigated ${f.url()}`));
}

let dumps = 0;
/** For `afterEach`: when the test failed, writes the timeline and every server's log to
 *  tests/browser/failures/ and prints where, with the last part of the timeline. */
export function dumpOnFailure(t) {
  if (t.passed) return;
  const dir = path.join(here, "..", "failures");
  fs.mkdirSync(dir, { recursive: true });
  const safe = `${t.name}`.replace(/[^A-Za-z0-9_.-]+/g, "-").slice(0, 80);
  const file = path.join(dir, `${Date.now()}-${process.pid}-${++dumps}-${safe}.log`);
  const parts = [`# failed: ${t.name}\n# ${t.error?.message ?? ""}\n\n## timeline (pages)\n`, timeline.join("\n")];
  for (const s of servers) parts.push(`\n\n## server 127.0.0.1:${s.port} log\n`, s.log.join(""));
  fs.writeFileSync(file, parts.join(""));
  const tail = timeline.slice(-150).join("\n");
  process.stderr.write(`\n--- ${t.name} failed; pages' frames and server logs in ${file}; last frames:\n${tail}\n---\n`);
}

/** A free loopback TCP port: bind port 0, read the port, close. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Every hubbub process this file started and has not yet seen exit: if the test process ends
// abruptly (a crash, Ctrl-C), they are killed by PID on the way out.
const live = new Set();
process.on("exit", () => {
  for (const proc of live) {
    try {
      process.kill(proc.pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
});
for (const sig of ["SIGINT", "SIGTERM"]) process.once(sig, () => process.exit(130));

/** One hubbub process: `hubbub serve --addr 127.0.0.1:PORT --data DIR`. */
export class HubbubServer {
  constructor({ port, dataDir, extraArgs = [] }) {
    this.port = port;
    this.dataDir = dataDir;
    this.extraArgs = extraArgs;
    this.proc = null;
    this.log = [];
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  url(p = "/") {
    return `${this.origin}${p}`;
  }

  async start() {
    if (!fs.existsSync(hubbubBin)) {
      throw new Error(`hubbub binary not found at ${hubbubBin} (set HUBBUB_BIN or run cargo build --release)`);
    }
    const args = ["serve", "--addr", `127.0.0.1:${this.port}`, "--data", this.dataDir, ...this.extraArgs];
    const proc = spawn(hubbubBin, args, {
      stdio: ["ignore", "pipe", "pipe"],
      // The tests seed rooms through the HTTP API faster than the default per-address rate limit
      // allows (the rate limits have their own Rust tests); a test can pass --rate-limit itself.
      env: { HUBBUB_RATE_LIMIT: "0", ...process.env, RUST_LOG: process.env.RUST_LOG || "info" },
    });
    this.proc = proc;
    servers.add(this);
    live.add(proc);
    proc.once("exit", () => live.delete(proc));
    const keep = (chunk) => {
      this.log.push(chunk.toString());
      if (this.log.length > 20000) this.log.splice(0, this.log.length - 20000);
    };
    proc.stdout.on("data", keep);
    proc.stderr.on("data", keep);
    const exited = new Promise((resolve) => proc.once("exit", (code, sig) => resolve({ code, sig })));
    this.exited = exited;
    const deadline = Date.now() + 20000;
    let lastErr = null;
    while (Date.now() < deadline) {
      const early = await Promise.race([exited, sleep(100).then(() => null)]);
      if (early) {
        throw new Error(`hubbub exited during start (${JSON.stringify(early)}):\n${this.log.join("")}`);
      }
      try {
        const r = await fetch(this.url("/healthz"));
        if (r.ok) {
          note(`server:${this.port}`, `started (pid ${proc.pid})`);
          return this;
        }
      } catch (e) {
        lastErr = e;
      }
    }
    await this.stop("SIGKILL");
    throw new Error(`hubbub did not answer /healthz within 20s (${lastErr}):\n${this.log.join("")}`);
  }

  /** Stops the process by its PID and waits for it to exit. */
  async stop(signal = "SIGTERM") {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      this.proc = null;
      return;
    }
    note(`server:${this.port}`, `stopping with ${signal}`);
    try {
      process.kill(proc.pid, signal);
    } catch {
      /* already gone */
    }
    // The deadline's timer is cleared once the process exits: a pending 8 s timer would keep
    // node's event loop, and so the whole test file, alive for those 8 s after its last test.
    let deadline;
    const done = await Promise.race([
      this.exited,
      new Promise((resolve) => {
        deadline = setTimeout(() => resolve(null), 8000);
      }),
    ]);
    clearTimeout(deadline);
    if (!done) {
      try {
        process.kill(proc.pid, "SIGKILL");
      } catch {
        /* gone */
      }
      await this.exited;
    }
    this.proc = null;
  }

  /** POST /api/rooms/{room}/messages as a plain HTTP client. */
  async post(room, from, data) {
    const r = await fetch(this.url(`/api/rooms/${encodeURIComponent(room)}/messages`), {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ from, data }),
    });
    const body = await r.json().catch(() => null);
    if (r.status !== 201) throw new Error(`POST ${room} answered ${r.status}: ${JSON.stringify(body)}`);
    return body;
  }

  async history(room, { before, limit } = {}) {
    const q = new URLSearchParams();
    if (before) q.set("before", String(before));
    if (limit) q.set("limit", String(limit));
    const r = await fetch(this.url(`/api/rooms/${encodeURIComponent(room)}/messages?${q}`));
    return r.json();
  }
}

const tmpDirs = [];
export function tmpDir(prefix) {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}
export function cleanupTmp() {
  for (const d of tmpDirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** Starts a fresh server (new port, new data dir). */
export async function startServer({ extraArgs = [] } = {}) {
  const server = new HubbubServer({ port: await freePort(), dataDir: tmpDir("hubbub-data-"), extraArgs });
  return server.start();
}

/** A receive-only member made of a raw SSE stream (GET /events) held open by node. */
export async function sseMember(server, room, name) {
  const ac = new AbortController();
  const q = new URLSearchParams({ room, name });
  const res = await fetch(server.url(`/events?${q}`), { signal: ac.signal });
  if (!res.ok) throw new Error(`/events answered ${res.status}`);
  const reader = res.body.getReader();
  (async () => {
    try {
      while (!(await reader.read()).done) {
        /* drain */
      }
    } catch {
      /* aborted */
    }
  })();
  return { close: () => ac.abort() };
}

/** A separate Chromium with a fresh --user-data-dir: one per simulated person, so each has
 *  its own localStorage and its own connection. */
export async function launchBrowser({ viewport = { width: 1280, height: 800 }, colorScheme = "light" } = {}) {
  const profile = tmpDir("hubbub-chromium-");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    colorScheme,
    locale: "en-GB",
    timezoneId: "UTC",
  });
  context.pageErrors = []; // uncaught exceptions in the page: every test asserts there are none
  return context;
}

/** Opens the client, types the name into "Your name", and waits until it is connected. */
export async function openChat(context, server, { name, hash = "", query = "", waitConnected = true, beforeGoto } = {}) {
  const blank = context.pages().find((p) => p.url() === "about:blank" && !p.hubbubUsed);
  const page = blank || (await context.newPage());
  page.hubbubUsed = true;
  page.on("pageerror", (e) => context.pageErrors.push(String(e)));
  watchPage(page, name || hash || "page");
  if (beforeGoto) await beforeGoto(page);
  await page.goto(server.url(`/${query}${hash}`));
  if (name) await setName(page, name);
  if (waitConnected) await waitConnectedState(page);
  return page;
}

export async function setName(page, name) {
  const field = page.getByLabel("Your name");
  await field.fill(name);
  await field.press("Enter");
}

export async function waitConnectedState(page, timeout = 15000) {
  await page.locator('#conn[data-state="connected"]').waitFor({ timeout });
}

/** Types a message into "Message" and presses Enter. */
export async function say(page, text) {
  const box = page.getByLabel("Message", { exact: true });
  await box.fill(text);
  await box.press("Enter");
}

/** The messages currently in the log of the room in view, in display order. */
export function messages(page) {
  return page.evaluate(() =>
    [...document.querySelectorAll('[role="log"] li.msg')].map((li) => ({
      id: li.dataset.id ? Number(li.dataset.id) : null,
      from: li.querySelector(".from")?.textContent ?? "",
      text: li.querySelector(".text")?.textContent ?? "",
      pending: li.classList.contains("pending") || li.classList.contains("unsent"),
      status: li.querySelector(".status")?.textContent ?? "",
    })),
  );
}

/** Waits until a message with this exact text is in the log (and returns it). */
export async function waitForMessage(page, text, { timeout = 10000, settled = false } = {}) {
  await page.waitForFunction(
    ({ text, settled }) =>
      [...document.querySelectorAll('[role="log"] li.msg')].some(
        (li) =>
          li.querySelector(".text")?.textContent === text &&
          (!settled || !(li.classList.contains("pending") || li.classList.contains("unsent"))),
      ),
    { text, settled },
    { timeout },
  );
}

export async function saveScreenshot(page, file) {
  fs.mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: path.join(screenshotDir, file) });
}

/** A reverse proxy on loopback that passes plain HTTP (and SSE streams) through to the server
 *  but refuses every WebSocket upgrade, like a proxy that does not speak WebSocket. */
export async function startNoWebSocketProxy(server) {
  const proxy = http.createServer((req, res) => {
    const up = http.request(
      { host: "127.0.0.1", port: server.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode, upRes.headers);
        res.flushHeaders();
        upRes.pipe(res);
      },
    );
    up.on("error", () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  proxy.on("upgrade", (req, socket) => {
    socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  });
  const port = await freePort();
  await new Promise((resolve) => proxy.listen(port, "127.0.0.1", resolve));
  return {
    port,
    url: (p = "/") => `http://127.0.0.1:${port}${p}`,
    close: () =>
      new Promise((resolve) => {
        proxy.closeAllConnections?.();
        proxy.close(() => resolve());
      }),
  };
}

/** A TCP proxy on loopback in front of `server` that passes everything through but holds each
 *  WebSocket handshake (a request for /ws) until `release()`: the page's socket stays
 *  "connecting" for as long as the test needs, without any timing. */
export async function startHandshakeHoldingProxy(server, { holding: holdAtFirst = true } = {}) {
  const held = [];
  const waiters = [];
  let holding = holdAtFirst;
  const sockets = new Set();
  const pass = (client, first) => {
    const up = net.connect(server.port, "127.0.0.1");
    sockets.add(up);
    up.on("close", () => sockets.delete(up));
    up.write(first);
    client.pipe(up);
    up.pipe(client);
    client.on("error", () => up.destroy());
    up.on("error", () => client.destroy());
    client.resume();
  };
  const proxy = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.once("data", (first) => {
      client.pause();
      if (holding && /^GET \/ws[?\s]/.test(first.toString("latin1"))) {
        held.push([client, first]);
        for (const w of waiters.splice(0)) w();
      } else pass(client, first);
    });
  });
  proxy.unref(); // a test that forgets to close it still ends
  const port = await freePort();
  await new Promise((resolve) => proxy.listen(port, "127.0.0.1", resolve));
  return {
    port,
    url: (p = "/") => `http://127.0.0.1:${port}${p}`,
    /** Resolves once a handshake is being held (rejects after `timeout` ms). */
    waitHeld(timeout = 15000) {
      if (held.length) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no WebSocket handshake within ${timeout} ms`)), timeout);
        waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
    /** Holds every later handshake (until `release`). */
    hold() {
      holding = true;
    },
    /** Lets the held handshakes (and every later one) through. */
    release() {
      holding = false;
      for (const [client, first] of held.splice(0)) pass(client, first);
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        proxy.close(() => resolve());
      }),
  };
}
