// Helpers for the issue-19 browser tests: signing up and in the way a person does (the top
// bar's buttons and the dialog, by keyboard), and reading the sidebar's people sections.

import { waitConnectedState, watchPage } from "./harness.mjs";

/** Opens the account dialog with its top-bar button (focus + Enter), fills it and submits
 *  with Enter. Does not wait for the outcome. */
export async function submitAccountDialog(page, which, { name, password, invite } = {}) {
  const button = page.getByRole("button", { name: which === "signup" ? "Sign up" : "Sign in", exact: true });
  await button.focus();
  await page.keyboard.press("Enter");
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  await dialog.getByLabel("Name").fill(name);
  if (invite) await dialog.getByLabel("Invite code").fill(invite);
  await dialog.getByLabel("Password").fill(password);
  await dialog.getByLabel("Password").press("Enter");
}

/** Signs up (or in) through the dialog and waits until the reloaded page is connected as
 *  that account. */
export async function signIn(page, which, { name, password, invite }) {
  await submitAccountDialog(page, which, { name, password, invite });
  await page.getByText(`Signed in as ${name}`).waitFor();
  await waitConnectedState(page);
}

/** A fresh page at the server's root for a person who has not picked a name yet. */
export async function openGuest(context, server, { hash = "", label = "guest" } = {}) {
  const page = context.pages().find((p) => p.url() === "about:blank" && !p.hubbubUsed) || (await context.newPage());
  page.hubbubUsed = true;
  page.on("pageerror", (e) => context.pageErrors.push(String(e)));
  watchPage(page, label);
  await page.goto(server.url(`/${hash}`));
  await waitConnectedState(page);
  return page;
}

/** The label of each room in one of the sidebar's lists ("room-list", "dm-list",
 *  "private-list"). */
export function sidebarRooms(page, list) {
  return page.evaluate(
    (list) => [...document.querySelectorAll(`#${list} li`)].map((li) => ({
      room: li.dataset.room,
      label: li.querySelector(".room-name")?.textContent ?? "",
      unread: li.querySelector(".unread")?.firstChild?.textContent ?? "",
      mentions: li.querySelector(".mentions")?.firstChild?.textContent ?? "",
    })),
    list,
  );
}

/** Presses a button by keyboard: focus, then Enter. */
export async function press(page, name) {
  const button = page.getByRole("button", { name, exact: true });
  await button.focus();
  await page.keyboard.press("Enter");
}

/** Answers the page's question dialog by keyboard. */
export async function answer(page, text) {
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  // The field is a combobox when it suggests people, a textbox otherwise.
  const field = dialog.locator("#ask-input");
  await field.fill(text);
  await field.press("Enter");
  await dialog.waitFor({ state: "hidden" });
}

/** Waits until the sidebar list holds a room with this label; returns its entry. */
export async function waitForSidebar(page, list, label) {
  await page.locator(`#${list} li .room-name`, { hasText: label }).first().waitFor();
  return (await sidebarRooms(page, list)).find((r) => r.label === label);
}
