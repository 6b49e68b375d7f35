//! Looking records up in a run's results: by server, scenario and size, clean values only,
//! medians over repeated rounds and the best peer for a metric.

use super::cluster::is_cluster;
use super::{Record, Results};
use crate::servers::{ECHO_FLOOR, HUBBUB_ACCOUNTS};

/// The server the report sets against the peers.
pub(super) const HUBBUB: &str = "hubbub";

/// Whether `server` is a peer hubbub is set against: not hubbub itself, nor its signed-in
/// variant, which is compared with hubbub's guests in a table of its own.
pub(super) fn is_peer(server: &str) -> bool {
    server != HUBBUB && server != HUBBUB_ACCOUNTS
}

/// Whether lower or higher is better for a headline metric.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Better {
    Lower,
    Higher,
}

/// Every record of `server` in `scenario` at size `n`, in the order they ran (several when the
/// scenario runs in rounds).
pub(super) fn records_at<'a>(
    res: &'a Results,
    server: &'a str,
    scenario: &'a str,
    n: usize,
) -> impl DoubleEndedIterator<Item = &'a Record> {
    res.records
        .iter()
        .filter(move |r| r.server == server && r.scenario == scenario && r.n == n)
}

/// The record of `server` in `scenario` at size `n` (the last one, if repeated).
pub(super) fn find<'a>(
    res: &'a Results,
    server: &'a str,
    scenario: &'a str,
    n: usize,
) -> Option<&'a Record> {
    records_at(res, server, scenario, n).next_back()
}

/// The servers compared, in the order they ran; the echo floor is a reference, not one of them,
/// and the cluster scenario's configurations are compared in a section of their own.
pub(super) fn servers(res: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &res.records {
        if r.server != ECHO_FLOOR && !is_cluster(r) && !v.contains(&r.server) {
            v.push(r.server.clone());
        }
    }
    v
}

pub(super) fn sizes(res: &Results, scenario: &str) -> Vec<usize> {
    let mut v: Vec<usize> = res
        .records
        .iter()
        .filter(|r| r.scenario == scenario)
        .map(|r| r.n)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A metric of a record, but only when the record's run was clean enough to count: no
/// connection failures and (for delivery metrics) deliveries actually happened.
pub(super) fn clean(r: &Record, key: &str) -> Option<f64> {
    if r.get("failed").unwrap_or(0.0) > 0.0 {
        return None;
    }
    r.get(key)
}

/// The median of `key` over every clean record of `server` at (`scenario`, `n`): one record's
/// value, or the middle of repeated rounds (the lower middle of an even count).
pub(super) fn median(
    res: &Results,
    server: &str,
    scenario: &str,
    n: usize,
    key: &str,
) -> Option<f64> {
    let mut values: Vec<f64> = records_at(res, server, scenario, n)
        .filter_map(|r| clean(r, key))
        .collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// Best peer value of `key` at (`scenario`, `n`).
pub(super) fn best_peer(
    res: &Results,
    scenario: &str,
    n: usize,
    key: &str,
    better: Better,
) -> Option<(String, f64)> {
    let mut best: Option<(String, f64)> = None;
    for s in servers(res).into_iter().filter(|s| is_peer(s)) {
        if let Some(v) = median(res, &s, scenario, n, key) {
            let wins = match (&best, better) {
                (None, _) => true,
                (Some((_, b)), Better::Lower) => v < *b,
                (Some((_, b)), Better::Higher) => v > *b,
            };
            if wins {
                best = Some((s, v));
            }
        }
    }
    best
}
