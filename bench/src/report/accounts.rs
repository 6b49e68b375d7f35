//! Signed-in members against guests: `hubbub-accounts` (every connection signed in with a
//! token, so an account each) beside `hubbub` (guests) for the costs issue 19 asks about —
//! fan-out CPU per delivery, room fill cost, idle memory per connection — with the ratio.

use std::fmt::Write as _;

use super::query::{HUBBUB, median, sizes};
use super::{Results, fmt_opt};
use crate::servers::HUBBUB_ACCOUNTS;

/// The measures compared: scenario, metric key, and what the row says.
const MEASURES: [(&str, &str, &str); 5] = [
    (
        "fanout",
        "cpu_us_per_delivery",
        "CPU µs per delivered message, fan-out",
    ),
    (
        "fanout",
        "fill_server_cpu_s",
        "server CPU s to fill the room, fan-out",
    ),
    (
        "fanout",
        "kib_per_conn_in_room",
        "resident KiB per room member, fan-out",
    ),
    ("idle", "kib_per_conn", "resident KiB per idle connection"),
    (
        "rooms",
        "cpu_us_per_delivery",
        "CPU µs per delivered message, many rooms",
    ),
];

/// One comparison row: a measure at one size, both values and members ÷ guests.
struct Row {
    what: String,
    guests: Option<f64>,
    members: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        match (self.members, self.guests) {
            (Some(m), Some(g)) if g > 0.0 => Some(m / g),
            _ => None,
        }
    }
}

/// Every measure at every size either kind ran, in the order of [`MEASURES`].
fn rows(res: &Results) -> Vec<Row> {
    let mut out = Vec::new();
    for (scenario, key, what) in MEASURES {
        for n in sizes(res, scenario) {
            let guests = median(res, HUBBUB, scenario, n, key);
            let members = median(res, HUBBUB_ACCOUNTS, scenario, n, key);
            if guests.is_some() || members.is_some() {
                out.push(Row {
                    what: format!("{what} ({n})"),
                    guests,
                    members,
                });
            }
        }
    }
    out
}

/// The Markdown table, or nothing when the run had no `hubbub-accounts` records.
pub(super) fn section(res: &Results) -> String {
    if !res.records.iter().any(|r| r.server == HUBBUB_ACCOUNTS) {
        return String::new();
    }
    let mut md = String::new();
    let _ = writeln!(md, "### Signed-in members against guests\n");
    let _ = writeln!(
        md,
        "`hubbub-accounts` is the same binary with `--auth-secret`; each of its connections signs in with its own token, so it is an account (index, read markers) rather than a guest.\n"
    );
    let _ = writeln!(
        md,
        "| measure (N) | hubbub (guests) | hubbub-accounts (members) | members / guests |"
    );
    let _ = writeln!(md, "|---|---|---|---|");
    for row in rows(res) {
        let ratio = row
            .ratio()
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {ratio} |",
            row.what,
            fmt_opt(row.guests),
            fmt_opt(row.members)
        );
    }
    let _ = writeln!(md);
    md
}
