// Search in the web client (issue 20), against the real binary: "/" focuses the search box,
// results show the matches in <mark> elements built from text (markup in a message stays
// text), "More results" pages with `next`, and choosing a result brings its room into view at
// the message (loading history it had not loaded), highlighted.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, launchBrowser, openChat, startServer } from "./lib/harness.mjs";

describe("search", () => {
  afterEach(dumpOnFailure);
  let server, browser, page;
  let wanted;

  before(async () => {
    server = await startServer();
    wanted = (await server.post("rust", "maria", "the borrow checker is <b>strict</b> but fair")).id;
    for (let i = 1; i <= 80; i++) await server.post("rust", "jonas", `filler ${i}`);
    for (let i = 1; i <= 25; i++) await server.post("lobby", "jonas", `pineapple number ${i}`);
    browser = await launchBrowser();
    page = await openChat(browser, server, { name: "alice" });
  });
  after(async () => {
    await browser?.close();
    await server?.stop();
    cleanupTmp();
  });

  test("'/' focuses the search box and the matches are marked, markup shown as text", async () => {
    await page.locator("#log").focus();
    await page.keyboard.press("/");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "search");
    await page.keyboard.type("borrow checker");
    await page.keyboard.press("Enter");
    const result = page.locator("#search-results .result");
    await result.first().waitFor();
    assert.equal(await result.count(), 1);
    assert.deepEqual(await result.locator("mark").allTextContents(), ["borrow", "checker"]);
    assert.match(await result.locator(".snippet").textContent(), /<b>strict<\/b>/);
    assert.equal(await result.locator(".snippet b").count(), 0, "no element made from the message");
    assert.equal(await result.locator(".result-room").textContent(), "#rust");
  });

  test("choosing a result shows its room at the message, highlighted, loading history", async () => {
    await page.locator("#search-results .result").first().press("Enter");
    await page.locator("#room-title", { hasText: "#rust" }).waitFor();
    const target = page.locator("li.msg.highlight", { hasText: "the borrow checker is" });
    await target.waitFor({ timeout: 20000 });
    assert.equal(await target.getAttribute("data-id"), String(wanted));
    assert.equal(await page.locator("#search-panel").isVisible(), false);
  });

  test("More results pages on with next; Escape closes the results", async () => {
    await page.keyboard.press("Control+K");
    assert.equal(await page.evaluate(() => document.activeElement?.id), "search");
    await page.getByLabel("Search messages").fill("pineapple");
    await page.getByLabel("Search messages").press("Enter");
    await page.locator("#search-status", { hasText: "20 results" }).waitFor();
    await page.getByRole("button", { name: "More results" }).press("Enter");
    await page.locator("#search-status", { hasText: "25 results" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "More results" }).isVisible(), false);
    const first = await page.locator("#search-results .snippet").first().textContent();
    assert.equal(first, "pineapple number 25", "newest first");
    await page.locator("#search-results .result").first().focus();
    await page.keyboard.press("Escape");
    await page.locator("#search-panel").waitFor({ state: "hidden" });
  });

  test("no uncaught errors in the page", () => {
    assert.deepEqual(browser.pageErrors, []);
  });
});
