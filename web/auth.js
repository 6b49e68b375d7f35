// Token auth (docs/security.md, "Tokens"; docs/web-client.md, "Token auth").

import { setToken } from "./transport.js";

// ---------------------------------------------------------------------------------------------
// Token auth (docs/security.md, "Tokens"; docs/web-client.md, "Token auth")
//
// A token arrives in the address, as `/?token=JWT` or in the fragment (`/#token=JWT`, or with a
// room: `/#room-name&token=JWT`; a fragment never reaches the server or its logs). It is kept in
// sessionStorage (this tab only, gone when the tab closes) and taken out of the address bar at
// once, so copying the address does not share it. Its payload is only read, not verified (the
// server does that): `sub` is our display name, `rooms` the rooms we may join, `exp` its end.

export const TOKEN_KEY = "hubbub.token";

/** The claims of a JWT, or null when it is not one. */
export function decodeToken(token) {
  try {
    const part = token.split(".")[1];
    if (!part) return null;
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "=");
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (!claims || typeof claims !== "object" || typeof claims.sub !== "string") return null;
    return claims;
  } catch {
    return null;
  }
}

export function takeToken() {
  let fromUrl = null;
  const url = new URL(location.href);
  if (url.searchParams.has("token")) {
    fromUrl = url.searchParams.get("token");
    url.searchParams.delete("token");
  }
  const frag = url.hash.slice(1);
  if (/(^|&)token=/.test(frag)) {
    const keep = [];
    for (const part of frag.split("&")) {
      if (part.startsWith("token=")) fromUrl = decodeURIComponent(part.slice(6));
      else if (part) keep.push(part);
    }
    url.hash = keep.join("&");
  }
  if (fromUrl !== null) {
    // Out of the address bar (and the history entry) before anything else happens.
    history.replaceState(history.state, "", url.search || url.hash ? url.href : url.pathname);
    if (decodeToken(fromUrl)) {
      try {
        sessionStorage.setItem(TOKEN_KEY, fromUrl);
      } catch {
        /* storage off: the token lives as long as this page */
      }
      return { token: fromUrl, claims: decodeToken(fromUrl), badUrlToken: false };
    }
    // Garbage in the address: do not keep it, fall back to what this tab had.
  }
  let saved = null;
  try {
    saved = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    /* storage off */
  }
  const claims = saved ? decodeToken(saved) : null;
  return { token: claims ? saved : "", claims, badUrlToken: fromUrl !== null };
}

export const auth = takeToken();
setToken(auth.token);

export function tokenExpired() {
  return !!auth.claims && typeof auth.claims.exp === "number" && auth.claims.exp * 1000 <= Date.now();
}

/** Whether the token's `rooms` claim allows `room` (no claim: every room). The server checks
 *  for itself; this only lets the page choose a room it may enter and explain a refusal. */
export function tokenAllows(room) {
  const rooms = auth.claims?.rooms;
  if (!Array.isArray(rooms)) return true;
  return rooms.some((p) => {
    if (typeof p !== "string") return false;
    const re = new RegExp(`^${p.split("*").map((x) => x.replace(/[.]/g, "\\.")).join("[A-Za-z0-9_.-]*")}$`);
    return re.test(room);
  });
}
