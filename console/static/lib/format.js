// Formatting of times, durations and statuses for people.

const dateTime = new Intl.DateTimeFormat(undefined, {dateStyle: "medium", timeStyle: "medium"});

// when formats an RFC 3339 time in the browser's locale and zone.
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : dateTime.format(d);
}

// span says how long ms is, roughly: "45 s", "11 min", "3 h 5 min", "2 d".
export function span(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 90) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return m % 60 ? `${hrs} h ${m % 60} min` : `${hrs} h`;
  return `${Math.round(hrs / 24)} d`;
}

// ago says how long ago iso was: "5 min ago", or "in 5 min".
export function ago(iso, now = Date.now()) {
  if (!iso) return "";
  const d = new Date(iso).getTime() - now;
  return d > 0 ? `in ${span(d)}` : `${span(d)} ago`;
}

// expiry describes a token's expiry at now: {text, bad}. bad is true when
// the token has expired or its refresh is failing.
export function expiry(token, now = Date.now()) {
  if (!token) return {text: "—", bad: false, none: true};
  const failing = Boolean(token.lastError);
  if (!token.expiresAt) {
    return {text: failing ? "no token: refresh failing" : "no token yet", bad: failing, none: !failing};
  }
  const left = new Date(token.expiresAt).getTime() - now;
  let text = left > 0 ? `expires in ${span(left)}` : `expired ${span(left)} ago`;
  if (failing) text += " · refresh failing";
  const bad = left <= 0 || failing;
  return {text, bad, soon: !bad && left < 15 * 60 * 1000};
}

// broken reports whether a connection needs someone's attention.
export function broken(c, now = Date.now()) {
  return c.status === "ERROR" || c.status === "NEEDS_CONSENT" || expiry(c.token, now).bad;
}

// urgency orders connections for "broken and soon-to-expire first": broken
// ones first, then by how soon their token expires, then by name.
export function urgency(a, b, now = Date.now()) {
  const rank = (c) => (broken(c, now) ? 0 : expiry(c.token, now).soon ? 1 : 2);
  const exp = (c) => (c.token && c.token.expiresAt ? new Date(c.token.expiresAt).getTime() : Infinity);
  return rank(a) - rank(b) || exp(a) - exp(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

// statusLabel is how a status reads.
export function statusLabel(status) {
  return {DRAFT: "Draft", CONFIGURED: "Configured", ERROR: "Error", NEEDS_CONSENT: "Needs consent"}[status] || status;
}
