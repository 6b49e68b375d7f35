// Direct messages, private rooms, read state across devices and mentions in the web client
// (issue 19), against the real binary: alice and bob sign up in their own browsers, bob has a
// second browser (his "phone"), carol is an outsider. The tests run in order and build on each
// other (a DM, then a private room alice owns). Moderation: moderation.test.mjs.

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";
import { cleanupTmp, dumpOnFailure, launchBrowser, saveScreenshot, say, startServer, waitForMessage } from "./lib/harness.mjs";
import { answer, openGuest, press, signIn, waitForSidebar } from "./lib/accounts.mjs";

const PASSWORD = "a long enough password";

describe("people: DMs, private rooms, read state, mentions", () => {
  afterEach(dumpOnFailure);
  let server;
  const browsers = [];
  let alice, bob, bobPhone, dm, design;

  before(async () => {
    server = await startServer();
    const open = async () => {
      const b = await launchBrowser();
      browsers.push(b);
      return openGuest(b, server, { label: `person${browsers.length}` });
    };
    alice = await open();
    await signIn(alice, "signup", { name: "alice", password: PASSWORD });
    bob = await open();
    await signIn(bob, "signup", { name: "bob", password: PASSWORD });
    bobPhone = await open();
    await signIn(bobPhone, "signin", { name: "bob", password: PASSWORD });
  });
  after(async () => {
    for (const b of browsers) await b.close();
    await server?.stop();
    cleanupTmp();
  });

  test("a DM started by picking a person is in both sidebars, labelled with the other's name", async () => {
    await press(alice, "New direct message");
    await answer(alice, "bob");
    dm = await waitForSidebar(alice, "dm-list", "bob");
    assert.match(dm.room, /^dm-[0-9a-f]{16}$/);
    await alice.locator("#room-title", { hasText: "bob" }).waitFor();
    const atBob = await waitForSidebar(bob, "dm-list", "alice");
    assert.equal(atBob.room, dm.room);
  });

  test("a DM message reaches the other person, with an unread badge until viewed", async () => {
    await say(alice, "hi bob, a word in private");
    await waitForMessage(alice, "hi bob, a word in private", { settled: true });
    await bob.locator(`#dm-list li[data-room="${dm.room}"] .unread`).waitFor();
    await bob.locator(`#dm-list li[data-room="${dm.room}"] button`).click();
    await waitForMessage(bob, "hi bob, a word in private");
  });

  test("reading a DM on one device clears its badge on the account's other device", async () => {
    // bob's laptop looks at the lobby: a new DM message is unread on both of his devices.
    await bob.locator('#room-list li[data-room="lobby"] button').click();
    await say(alice, "are you there?");
    const badge = `#dm-list li[data-room="${dm.room}"] .unread`;
    await bob.locator(badge).waitFor();
    await bobPhone.locator(badge).waitFor();
    // He reads it on the laptop: the phone's badge goes too.
    await bob.locator(`#dm-list li[data-room="${dm.room}"] button`).click();
    await waitForMessage(bob, "are you there?");
    await bobPhone.locator(badge).waitFor({ state: "detached" });
  });

  test("a mention while the page is hidden counts on the badge and shows a browser notification", async () => {
    // bob's phone is in the background (hidden) with notifications allowed; the Notification
    // constructor records what the page shows. His laptop looks at the lobby, so nothing reads
    // the DM meanwhile.
    await bob.locator('#room-list li[data-room="lobby"] button').click();
    await bobPhone.context().grantPermissions(["notifications"]);
    await bobPhone.evaluate(() => {
      window.shown = [];
      const Real = window.Notification;
      window.Notification = class extends Real {
        constructor(title, options) {
          window.shown.push({ title, body: options?.body });
          super(title, options);
        }
      };
      Object.defineProperty(window.Notification, "permission", { get: () => "granted" });
      Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
      Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
      document.dispatchEvent(new Event("visibilitychange"));
    });
    await say(alice, "@bob please look at this");
    await bobPhone.waitForFunction(() => window.shown.length > 0);
    const shown = await bobPhone.evaluate(() => window.shown);
    assert.deepEqual(shown, [{ title: "alice mentioned you", body: "@bob please look at this" }]);
    await bobPhone.locator(`#dm-list li[data-room="${dm.room}"] .mentions`).waitFor();
  });

  test("a private room is in its owner's sidebar by title and invisible to an outsider", async () => {
    await press(alice, "New private room");
    await answer(alice, "Design");
    design = await waitForSidebar(alice, "private-list", "Design");
    assert.match(design.room, /^p-[0-9a-f]{16}$/);
    await alice.locator("#room-title", { hasText: "Design" }).waitFor();
    const b = await launchBrowser();
    browsers.push(b);
    const carol = await openGuest(b, server, { hash: `#${design.room}` });
    await carol.getByText(`Could not join #${design.room}`).waitFor();
    const asOutsider = await fetch(server.url(`/api/rooms/${design.room}/messages`));
    assert.equal(asOutsider.status, 404);
    await saveScreenshot(alice, "people.png");
  });

  test("an invited member sees the private room under its title", async () => {
    await press(alice, "Invite");
    await answer(alice, "bob");
    const atBob = await waitForSidebar(bob, "private-list", "Design");
    assert.equal(atBob.room, design.room);
    await bob.locator(`#private-list li[data-room="${design.room}"] button`).click();
    await bob.locator("#room-title", { hasText: "Design" }).waitFor();
  });

  test("the owner's topic shows in the room head of every member", async () => {
    await press(alice, "Topic");
    await answer(alice, "Logo drafts, due Friday");
    await bob.locator("#room-topic", { hasText: "Logo drafts, due Friday" }).waitFor();
  });

  test("no uncaught errors in any page", () => {
    for (const b of browsers) assert.deepEqual(b.pageErrors, []);
  });
});
