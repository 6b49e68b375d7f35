// Pending messages that survive a reload: the web client's outbox, kept in localStorage until
// the server acks each message (docs/web-client.md, "The offline queue").
//
// localStorage belongs to the page's origin, so each server (scheme, host, port) has its own
// queue; with token auth each signed-in name has its own key within it. Every tab of that origin
// shares the key, so each entry names the tab that owns it and only its owner sends it: a second
// tab must never send the same message again. A tab owns the entries it made, and adopts those
// of a tab that is gone (closed, or this same tab before a reload):
//
// - With the Web Locks API (every current browser, on https:// and on localhost) each page holds
//   the lock `hubbub.tab.<id>` for its life. A page waits for the lock of every other owner it
//   finds in the queue; the browser grants it the moment that page is gone, and the waiting page
//   adopts its entries, under the lock `hubbub.outbox` so that two tabs never adopt the same one.
// - Without it (plain http:// to a remote host) a page keeps its id in sessionStorage, so a
//   reload owns its entries again at once, and writes a heartbeat every few seconds; entries of
//   an owner whose heartbeat is older than STALE_MS are adopted.

const KEY = "hubbub.outbox";
const HEARTBEAT_MS = 5000;
const STALE_MS = 20000;

/** The fields of an entry that are kept (the rest, such as its <li>, lives in the page). */
const FIELDS = ["ref", "room", "text", "from", "ts", "state", "afterId", "error", "replyTo", "attachment"];

function readAll(key) {
  try {
    const v = JSON.parse(localStorage.getItem(key) || "[]");
    return Array.isArray(v) ? v.filter((e) => e && typeof e === "object" && typeof e.ref === "string") : [];
  } catch {
    return [];
  }
}

function writeAll(key, entries) {
  try {
    if (entries.length) localStorage.setItem(key, JSON.stringify(entries));
    else localStorage.removeItem(key);
    return true;
  } catch {
    return false; // private mode, quota: the queue still works, it just does not survive a reload
  }
}

function randomId() {
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}

/** The persistent half of the outbox. The chat core (app.js) keeps the live entries and calls
 *  `save` whenever one is added, changes state or is done; `start` hands it the entries this
 *  page owns from before (and later ones it adopts from tabs that closed). */
export class PersistentOutbox {
  /** `identity`: the token's name with token auth (a queue per signed-in name), else "". */
  constructor(identity = "") {
    this.key = identity ? `${KEY}@${identity}` : KEY;
    this.locks = typeof navigator !== "undefined" && navigator.locks?.request ? navigator.locks : null;
    this.id = this.locks ? randomId() : this.sessionId();
    this.ready = false; // until then nothing is written: the entries of before are not ours yet
    this.unsaved = null;
    this.waitingFor = new Set(); // owners whose lock we are queued for
  }

  sessionId() {
    try {
      let id = sessionStorage.getItem("hubbub.tab");
      if (!id) sessionStorage.setItem("hubbub.tab", (id = randomId()));
      return id;
    } catch {
      return randomId();
    }
  }

  /** Takes ownership of this page's queue; `onAdopt(entries)` receives the entries this page
   *  now owns and must send, now and whenever another tab's entries become ours. */
  async start(onAdopt) {
    this.onAdopt = onAdopt;
    if (this.locks) {
      try {
        // Held until the page goes away; the promise never settles.
        await new Promise((granted, refused) => {
          this.locks
            .request(`hubbub.tab.${this.id}`, () => {
              granted();
              return new Promise(() => {});
            })
            .catch(refused);
        });
      } catch {
        this.locks = null; // e.g. a sandboxed frame: fall back to heartbeats
        this.id = this.sessionId();
      }
    }
    if (!this.locks) {
      this.beat();
      setInterval(() => {
        this.beat();
        this.adopt();
      }, HEARTBEAT_MS);
    }
    this.ready = true;
    // Another tab wrote the queue: it may name an owner we do not wait for yet.
    addEventListener("storage", (ev) => {
      if (ev.key === this.key && this.locks) this.adopt();
    });
    await this.adopt();
    if (this.unsaved) this.save(this.unsaved);
  }

  beat() {
    try {
      localStorage.setItem(`${this.key}.alive.${this.id}`, String(Date.now()));
    } catch {
      /* storage off */
    }
  }

  ownerGone(owner) {
    if (owner === this.id) return true;
    let at = 0;
    try {
      at = Number(localStorage.getItem(`${this.key}.alive.${owner}`)) || 0;
    } catch {
      /* storage off */
    }
    if (Date.now() - at > STALE_MS) {
      try {
        localStorage.removeItem(`${this.key}.alive.${owner}`);
      } catch {
        /* storage off */
      }
      return true;
    }
    return false;
  }

  /** Moves the entries of owners that are gone to this page and hands them over. `known`: an
   *  owner known to be gone (we hold its lock now, so it shows as held). */
  async adopt(known = null) {
    const run = async () => {
      const all = readAll(this.key);
      const held = this.locks ? await this.heldTabs() : null;
      const gone = (owner) =>
        owner === known || (held ? owner === this.id || !held.has(owner) : this.ownerGone(owner));
      const mine = [];
      const first = !this.adopted;
      this.adopted = true;
      for (const e of all) {
        if (gone(e.tab)) {
          // Our own id's entries are news only once: when a reload kept the id (no Web Locks).
          if (e.tab !== this.id || first) mine.push(e);
          e.tab = this.id;
        } else if (this.locks && !this.waitingFor.has(e.tab)) {
          this.waitForOwner(e.tab);
        }
      }
      if (mine.length) writeAll(this.key, all);
      return mine;
    };
    const mine = this.locks ? await this.locks.request(KEY, run) : await run();
    if (mine.length) this.onAdopt(mine);
  }

  async heldTabs() {
    const { held = [] } = await this.locks.query();
    return new Set(held.map((l) => l.name).filter((n) => n.startsWith("hubbub.tab.")).map((n) => n.slice(11)));
  }

  /** Queues for another page's lock: it is granted when that page is gone. */
  waitForOwner(owner) {
    this.waitingFor.add(owner);
    this.locks.request(`hubbub.tab.${owner}`, async () => {
      await this.adopt(owner);
      this.waitingFor.delete(owner);
    });
  }

  /** Replaces this page's entries in the queue with `entries` (other tabs' are kept). */
  save(entries) {
    if (!this.ready) {
      this.unsaved = entries;
      return;
    }
    this.unsaved = null;
    const others = readAll(this.key).filter((e) => e.tab !== this.id);
    const mine = entries.map((e) => {
      const kept = { tab: this.id };
      for (const f of FIELDS) if (e[f] !== undefined && e[f] !== null) kept[f] = e[f];
      return kept;
    });
    writeAll(this.key, [...others, ...mine]);
  }
}

/** The room's stored messages with an id above `afterId`, oldest first, read with the HTTP
 *  API from the newest back (a reloaded page asks this about messages it sent whose `ack` never
 *  came, to tell "stored" from "lost"). Throws when the server cannot be asked (ask again later). */
export async function messagesAfter(room, afterId, headers = {}) {
  const found = [];
  let before = 0;
  for (let page = 0; page < 50; page++) {
    const q = new URLSearchParams({ limit: "200" });
    if (before) q.set("before", String(before));
    const r = await fetch(`/api/rooms/${encodeURIComponent(room)}/messages?${q}`, { cache: "no-store", headers });
    if (!r.ok) throw new Error(`history answered ${r.status}`);
    const body = await r.json();
    const msgs = Array.isArray(body?.messages) ? body.messages : [];
    found.unshift(...msgs.filter((m) => typeof m.id === "number" && m.id > afterId));
    if (!msgs.length || !body.has_more || msgs[0].id <= afterId + 1) return found;
    before = msgs[0].id;
  }
  throw new Error("too much history to search");
}
