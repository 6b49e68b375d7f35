// Accounts in the web client (issue 19): sign up, sign in, sign out, a refused password, all
// through the top bar's buttons and the dialog, by keyboard, against the real binary.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, hubbubBin, launchBrowser, say, startServer, waitForMessage } from "./lib/harness.mjs";
import { openGuest, signIn, submitAccountDialog } from "./lib/accounts.mjs";

describe("accounts", () => {
  afterEach(dumpOnFailure);
  let server;
  const browsers = [];
  const browser = async (opts) => {
    const b = await launchBrowser(opts);
    browsers.push(b);
    return b;
  };

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await server?.stop();
    cleanupTmp();
  });

  test("signing up in the dialog signs the page in under the account's name", async () => {
    const b = await browser();
    const page = await openGuest(b, server);
    await signIn(page, "signup", { name: "alice", password: "correct horse battery" });
    const field = page.getByLabel("Your name");
    assert.equal(await field.inputValue(), "alice");
    assert.equal(await field.getAttribute("readonly"), "");
    await page.getByRole("button", { name: "Sign out" }).waitFor();
    assert.equal(await page.getByRole("button", { name: "Sign in", exact: true }).isVisible(), false);
    const cookie = (await b.cookies()).find((c) => c.name === "hubbub_session");
    assert.ok(cookie, "the session cookie is set");
    assert.equal(cookie.httpOnly, true);
    assert.equal(await page.evaluate(() => document.cookie.includes("hubbub_session")), false);
    assert.deepEqual(b.pageErrors, []);
  });

  test("a wrong password is refused in the dialog and the page stays a guest", async () => {
    const b = await browser();
    const page = await openGuest(b, server);
    await submitAccountDialog(page, "signin", { name: "alice", password: "not the password" });
    const dialog = page.getByRole("dialog");
    await dialog.getByText("Wrong name or password.").waitFor();
    // An unknown name gets the very same answer (no enumeration).
    await dialog.getByLabel("Name").fill("nobody-here");
    const answered = page.waitForResponse((r) => r.url().endsWith("/api/auth/signin"));
    await dialog.getByLabel("Password").press("Enter");
    assert.equal((await answered).status(), 401);
    await dialog.getByText("Wrong name or password.").waitFor();
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "hidden" });
    assert.equal(await page.evaluate(() => document.documentElement.dataset.account), "guest");
  });

  test("signing in on a second browser and then signing out makes that page a guest again", async () => {
    const b = await browser();
    const page = await openGuest(b, server);
    await signIn(page, "signin", { name: "alice", password: "correct horse battery" });
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("button", { name: "Sign in", exact: true }).waitFor();
    await page.locator('html[data-account="guest"]').waitFor();
    assert.equal(await page.getByLabel("Your name").getAttribute("readonly"), null);
    assert.deepEqual(b.pageErrors, []);
  });

  test("a server that refuses guests offers Sign in, and the signed-in page connects", async () => {
    const closed = await startServer({ extraArgs: ["--guests=false"] });
    try {
      const b = await browser();
      const page = b.pages()[0] || (await b.newPage());
      page.on("pageerror", (e) => b.pageErrors.push(String(e)));
      await page.goto(closed.url("/"));
      await page.locator('#conn[data-state="unauthenticated"]').waitFor();
      await page.getByText("Cannot connect: this server needs a sign-in token or an account").waitFor();
      await submitAccountDialog(page, "signup", { name: "dora", password: "a long enough password" });
      await page.getByText("Signed in as dora").waitFor();
      await page.locator('#conn[data-state="connected"]').waitFor();
      assert.deepEqual(b.pageErrors, []);
    } finally {
      await closed.stop();
    }
  });

  test("under --signup invite, the invite link's code signs a new account up", async () => {
    const invited = await startServer({ extraArgs: ["--signup", "invite"] });
    try {
      // The operator makes the code with the CLI, beside the running server.
      const code = execFileSync(hubbubBin, ["invite", "--data", invited.dataDir], { encoding: "utf8" }).trim();
      assert.match(code, /^\S+$/);
      const b = await browser();
      const page = await openGuest(b, invited, { hash: "" , label: "invitee" });
      await page.goto(invited.url(`/?invite=${encodeURIComponent(code)}`));
      await signIn(page, "signup", { name: "erin", password: "a long enough password" });
      assert.equal(await page.evaluate(() => document.documentElement.dataset.account), "signed-in");
      assert.deepEqual(b.pageErrors, []);
    } finally {
      await invited.stop();
    }
  });

  test("under --signup invite, a sign-up without a code is refused in the dialog", async () => {
    const invited = await startServer({ extraArgs: ["--signup", "invite"] });
    try {
      const b = await browser();
      const page = await openGuest(b, invited, { label: "uninvited" });
      await submitAccountDialog(page, "signup", { name: "frank", password: "a long enough password" });
      await page.getByRole("dialog").getByText("needs a valid invite").waitFor();
      assert.equal(await page.evaluate(() => document.documentElement.dataset.account), "guest");
    } finally {
      await invited.stop();
    }
  });

  test("a signed-in page on the SSE transport is signed in and posts under the account's name", async () => {
    const b = await browser();
    const page = await openGuest(b, server, { label: "sse-account" });
    await signIn(page, "signup", { name: "gwen", password: "a long enough password" });
    await page.goto(server.url("/?transport=sse#lobby"));
    await page.getByText("Signed in as gwen").waitFor();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.transport), "sse");
    assert.equal(await page.getByLabel("Your name").getAttribute("readonly"), "");
    await page.locator('#conn[data-state="connected"]').waitFor();
    const watcher = await openGuest(await browser(), server, { hash: "#lobby", label: "watcher" });
    await say(page, "hello over sse");
    await waitForMessage(watcher, "hello over sse");
    const from = await watcher
      .locator("li.msg", { hasText: "hello over sse" })
      .locator(".from")
      .textContent();
    assert.equal(from, "gwen");
    assert.deepEqual(b.pageErrors, []);
  });

  test("a taken name is refused at sign-up with a message in the dialog", async () => {
    const b = await browser();
    const page = await openGuest(b, server);
    await submitAccountDialog(page, "signup", { name: "Alice", password: "another long password" });
    await page.getByRole("dialog").getByText("That name is taken.").waitFor();
  });
});
