// Accounts (issue 19; docs/web-client.md, "Accounts"): who is signed in, the sign-in / sign-up
// dialog, sign out. The session is an HttpOnly cookie the page never sees: the browser sends it
// on /ws, /events and /api by itself. Over WebSocket the page learns the account from
// `welcome`'s `account`; over SSE (no `welcome`) from GET /api/me, asked only when this browser
// signed in before (a hint in localStorage), so a guest's page makes no extra request. The
// CSRF token for the page's own POSTs comes from GET /api/me when a POST first needs it.

import { state, store } from "./state.js";
import { auth } from "./auth.js";
import { ui } from "./ui.js";
import { renderNotifyButton, markRead } from "./marks.js";
import { renderRooms } from "./sidebar.js";
import { renderRoomHead } from "./moderation.js";
import { renderMembers } from "./presence.js";
import { useCsrfHeaders } from "./transport.js";
import { redecorateAll } from "./message_actions.js";

const HINT = "signedIn"; // localStorage: this browser signed in and has not signed out since

/** The signed-in account as the server reported it (null for a guest), and the CSRF token
 *  that state-changing requests made with its cookie must carry. */
export const account = { me: null, csrf: "" };

const $ = (id) => document.getElementById(id);
let mode = "signin";

/** The server says we are signed in as `info.name` (from `welcome` or GET /api/me). */
export function setAccount(info) {
  if (!info || typeof info.name !== "string" || info.guest === true) return;
  account.me = { name: info.name, admin: info.admin === true };
  store.set(HINT, true);
  // `welcome` has no CSRF token: a POST that needs it (sign out) asks GET /api/me first.
  if (typeof info.csrf === "string") account.csrf = info.csrf;
  // The account's name is the name: the field only shows it.
  ui.name.readOnly = true;
  ui.name.title = "Your name is your account's name";
  ui.nameHint.textContent = "(from your sign-in)";
  renderAccount();
  renderRooms();
  renderRoomHead(); // an admin moderates every room
  renderMembers();
  markRead(); // the room in view may have caught up before we knew who we are
  redecorateAll(); // React, Edit and Delete need a signed-in account
}

/** A WebSocket `welcome` without `account`: this connection is not signed in (the session
 *  ended, or this browser never signed in), so the next load need not ask GET /api/me. */
export function noAccount() {
  store.set(HINT, false);
}

/** Asks GET /api/me who we are, when this browser signed in before (or `always`). Only over
 *  SSE, which has no `welcome` to say it. A 401 means the session ended (signed out
 *  elsewhere, expired): the page is a guest's. */
export async function loadAccount({ always = false } = {}) {
  if (!always && !store.get(HINT, false)) return;
  try {
    const r = await fetch("/api/me", { cache: "no-store" });
    if (r.ok) {
      const me = await r.json();
      store.set(HINT, true);
      setAccount(me);
    } else if (r.status === 401 || r.status === 404) {
      store.set(HINT, false);
    }
  } catch {
    /* offline: `welcome` or the next load will tell */
  }
}

/** The `X-CSRF-Token` header a POST made with the session cookie must carry (none for a
 *  guest's page). The token comes from GET /api/me, asked the first time one is needed. */
export async function csrfHeaders() {
  if (!account.me) return {};
  if (!account.csrf) {
    try {
      const me = await fetch("/api/me", { cache: "no-store" }).then((r) => (r.ok ? r.json() : null));
      if (typeof me?.csrf === "string") account.csrf = me.csrf;
    } catch {
      /* offline: the POST fails on its own */
    }
  }
  return account.csrf ? { "X-CSRF-Token": account.csrf } : {};
}

useCsrfHeaders(csrfHeaders);

/** The account line in the top bar: "Signed in as alice · Sign out", or the sign-in buttons. */
export function renderAccount() {
  const signedIn = !!account.me;
  const byToken = !!auth.claims;
  ui.accountName.textContent = signedIn ? `Signed in as ${account.me.name}${account.me.admin ? " (admin)" : ""}` : "";
  ui.signIn.hidden = signedIn || byToken;
  ui.signUp.hidden = signedIn || byToken;
  ui.signOut.hidden = !signedIn || byToken;
  document.documentElement.dataset.account = signedIn ? "signed-in" : "guest";
  renderNotifyButton();
}

/** Opens the dialog in "signin" or "signup" mode, focus in the name field. */
export function openAccountDialog(which) {
  mode = which;
  const signup = which === "signup";
  $("account-dialog-h").textContent = signup ? "Sign up" : "Sign in";
  $("account-submit").textContent = signup ? "Sign up" : "Sign in";
  $("account-switch").textContent = signup ? "Have an account? Sign in" : "New here? Sign up";
  $("account-password").autocomplete = signup ? "new-password" : "current-password";
  const invite = new URLSearchParams(location.search).get("invite");
  if (invite) $("account-invite").value = invite;
  $("invite-row").hidden = !signup;
  $("account-error").textContent = "";
  if (!$("account-user").value) $("account-user").value = state.wantedName || "";
  const dialog = $("account-dialog");
  if (!dialog.open) dialog.showModal();
  $("account-user").focus();
}

/** The words a person reads for a refused sign-in or sign-up. */
async function refusal(r) {
  let body = null;
  try {
    body = await r.json();
  } catch {
    /* no JSON body */
  }
  const message = body?.error?.message;
  if (r.status === 404) return "This server has no accounts.";
  if (r.status === 401) return mode === "signin" ? "Wrong name or password." : message || "Not allowed.";
  if (r.status === 409) return "That name is taken.";
  if (r.status === 429) {
    const wait = Number(r.headers.get("retry-after"));
    return `Too many attempts. Try again${wait > 0 ? ` in ${wait} s` : " later"}.`;
  }
  return message || `The server said ${r.status}.`;
}

async function submitAccount(e) {
  e.preventDefault();
  const body = { name: $("account-user").value.trim(), password: $("account-password").value };
  const invite = $("account-invite").value.trim();
  if (mode === "signup" && invite) body.invite = invite;
  const button = $("account-submit");
  button.disabled = true;
  $("account-error").textContent = "";
  try {
    const r = await fetch(`/api/auth/${mode}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (r.ok) {
      // The new session cookie is set: a fresh page connects with it.
      $("account-password").value = "";
      store.set(HINT, true);
      location.reload();
      return;
    }
    $("account-error").textContent = await refusal(r);
  } catch {
    $("account-error").textContent = "Could not reach the server.";
  } finally {
    button.disabled = false;
  }
}

async function signOut() {
  try {
    if (!account.csrf) {
      const me = await fetch("/api/me", { cache: "no-store" }).then((r) => (r.ok ? r.json() : null));
      account.csrf = typeof me?.csrf === "string" ? me.csrf : "";
    }
    const r = await fetch("/api/auth/signout", { method: "POST", headers: { "X-CSRF-Token": account.csrf } });
    if (!r.ok && r.status !== 401) {
      ui.alert.textContent = `Could not sign out: ${await refusal(r)}`;
      return;
    }
  } catch {
    ui.alert.textContent = "Could not sign out: the server cannot be reached.";
    return;
  }
  store.set(HINT, false);
  // A guest cannot enter the account's DMs and private rooms: do not try them after the reload.
  const personal = (name) => typeof name === "string" && /^(dm|p)-/.test(name);
  const saved = store.get("rooms", []);
  store.set("rooms", (Array.isArray(saved) ? saved : []).filter((n) => !personal(n)));
  if (personal(store.get("current", ""))) store.set("current", "lobby");
  if (personal(decodeURIComponent(location.hash.slice(1)))) history.replaceState(null, "", "#lobby");
  location.reload();
}

/** Wires the account buttons and the dialog. */
export function wireAccount() {
  ui.signIn.addEventListener("click", () => openAccountDialog("signin"));
  ui.signUp.addEventListener("click", () => openAccountDialog("signup"));
  ui.signOut.addEventListener("click", signOut);
  $("account-form").addEventListener("submit", submitAccount);
  $("account-cancel").addEventListener("click", () => $("account-dialog").close());
  $("account-switch").addEventListener("click", () => openAccountDialog(mode === "signin" ? "signup" : "signin"));
  renderAccount();
}
