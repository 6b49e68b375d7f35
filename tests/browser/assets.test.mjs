// The binary serves the client embedded at compile time. A stale binary would test stale
// files, so first check that what the server sends is byte for byte what web/ holds, with the
// right content types, and that the page loads with no console errors.

import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, launchBrowser, repoRoot, startServer } from "./lib/harness.mjs";

const webDir = path.join(repoRoot, "web");
const TYPES = { ".html": /^text\/html/, ".js": /^(text|application)\/javascript/, ".css": /^text\/css/ };

describe("embedded assets", () => {
  afterEach(dumpOnFailure);
  let server;
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
    cleanupTmp();
  });

  test("every file under web/ is served at its path, unchanged, with its content type", async () => {
    const files = fs.readdirSync(webDir).filter((f) => fs.statSync(path.join(webDir, f)).isFile());
    assert.ok(files.includes("index.html") && files.includes("app.js") && files.includes("app.css"));
    for (const f of files) {
      const r = await fetch(server.url(`/${f}`));
      assert.equal(r.status, 200, f);
      const served = Buffer.from(await r.arrayBuffer());
      const onDisk = fs.readFileSync(path.join(webDir, f));
      assert.ok(
        served.equals(onDisk),
        `${f} served by ${process.env.HUBBUB_BIN} differs from web/${f}: rebuild the binary (cargo build --release)`,
      );
      const re = TYPES[path.extname(f)];
      if (re) assert.match(r.headers.get("content-type"), re, f);
    }
    const root = await fetch(server.url("/"));
    assert.match(root.headers.get("content-type"), /^text\/html/);
    assert.ok(Buffer.from(await root.arrayBuffer()).equals(fs.readFileSync(path.join(webDir, "index.html"))));
  });

  test("the client source never turns strings into markup", () => {
    // Belt and braces for the XSS tests: no HTML-parsing sinks at all, not even for constants.
    const sinks = /\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(|createContextualFragment/;
    for (const f of fs.readdirSync(webDir).filter((f) => f.endsWith(".js"))) {
      const code = fs
        .readFileSync(path.join(webDir, f), "utf8")
        .split("\n")
        .filter((line) => !line.trim().startsWith("//") && !line.trim().startsWith("*"));
      const bad = code.filter((line) => sinks.test(line));
      assert.deepEqual(bad, [], `${f} uses an HTML sink`);
    }
  });

  test("the page loads without console errors or failed requests", async () => {
    const browser = await launchBrowser();
    try {
      const page = browser.pages()[0] || (await browser.newPage());
      const problems = [];
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(`console: ${m.text()}`);
      });
      page.on("pageerror", (e) => problems.push(`pageerror: ${e}`));
      page.on("requestfailed", (r) => problems.push(`requestfailed: ${r.url()}`));
      page.on("response", (r) => {
        if (r.status() >= 400) problems.push(`${r.status()}: ${r.url()}`);
      });
      await page.goto(server.url("/"));
      await page.locator('#conn[data-state="connected"]').waitFor();
      await page.waitForTimeout(300);
      assert.deepEqual(problems, []);
    } finally {
      await browser.close();
    }
  });
});
