// Safe rendering helpers. User data only ever reaches the page through textContent and
// DOM properties: there is no innerHTML anywhere in the client.

/** Creates an element; `props` are set as properties (className, textContent, ...) except
 *  `attrs`, whose entries are set with setAttribute. Children may be nodes or strings. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === "attrs") {
      for (const [a, av] of Object.entries(v)) if (av != null) el.setAttribute(a, String(av));
    } else if (k === "dataset") {
      Object.assign(el.dataset, v);
    } else {
      el[k] = v;
    }
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    el.append(c); // strings become Text nodes
  }
  return el;
}

// http(s) URLs and bare www. hosts, up to the next white space or angle bracket/quote.
const URL_RE = /\b(?:https?:\/\/|www\.)[^\s<>"'`]+/gi;
// Trailing punctuation that is usually sentence punctuation, not part of the URL.
const TRAILING = /[.,;:!?'"]+$/;

function trimUrl(raw) {
  let url = raw.replace(TRAILING, "");
  // Drop an unbalanced closing bracket: "(see https://x.org/a)" -> "https://x.org/a"
  for (const [open, close] of [["(", ")"], ["[", "]"], ["{", "}"]]) {
    while (url.endsWith(close) && count(url, close) > count(url, open)) {
      url = url.slice(0, -1).replace(TRAILING, "");
    }
  }
  return url;
}

function count(s, ch) {
  let n = 0;
  for (const c of s) if (c === ch) n++;
  return n;
}

/** Turns message text into a DocumentFragment of Text nodes and <a> links. Only http: and
 *  https: URLs become links; everything else stays literal text. */
export function linkify(text) {
  const frag = document.createDocumentFragment();
  let last = 0;
  URL_RE.lastIndex = 0;
  for (let m; (m = URL_RE.exec(text)); ) {
    const url = trimUrl(m[0]);
    if (!url) continue;
    const start = m.index;
    const href = url.toLowerCase().startsWith("www.") ? `https://${url}` : url;
    let parsed;
    try {
      parsed = new URL(href);
    } catch {
      continue;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") continue;
    if (start > last) frag.append(text.slice(last, start));
    const a = document.createElement("a");
    a.href = parsed.href;
    a.textContent = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    frag.append(a);
    last = start + url.length;
    URL_RE.lastIndex = last;
  }
  if (last < text.length) frag.append(text.slice(last));
  return frag;
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateTimeFmt = new Intl.DateTimeFormat(undefined, {
  month: "short",
  day: "numeric",
  hour: "2-digit",
  minute: "2-digit",
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "medium" });

/** <time> in the reader's local time zone: the time of day for today's messages, the date and
 *  time for older ones, and the full date and time on hover. */
export function timeEl(ts) {
  const d = new Date(typeof ts === "number" ? ts : Date.now());
  const today = new Date().toDateString() === d.toDateString();
  return h("time", {
    textContent: (today ? timeFmt : dateTimeFmt).format(d),
    dateTime: d.toISOString(),
    title: fullFmt.format(d),
  });
}

/** Stable hue per name, so senders are easier to tell apart (colour is never the only cue). */
export function nameHue(name) {
  let x = 0;
  for (const c of name) x = (x * 31 + c.codePointAt(0)) >>> 0;
  return x % 360;
}
