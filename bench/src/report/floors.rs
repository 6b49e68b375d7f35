//! The lines that set the servers against the floors: the woken-reader floor's multiples, its
//! growth with room size, and the echo floor.

use std::fmt::Write as _;

use super::query::{Better, best_peer, clean, find, median, servers, sizes};
use super::{Results, fmt};
use crate::floor::FloorGrowth;
use crate::servers::ECHO_FLOOR;

/// " Fan-out CPU per delivery at N members as a multiple of it: hubbub X×, node-ws Y×, …"
pub(super) fn woken_multiples(res: &Results, woken_us: f64) -> String {
    let Some(n) = res
        .records
        .iter()
        .filter(|r| r.scenario == "fanout" && r.n <= 2_000)
        .map(|r| r.n)
        .max()
    else {
        return String::new();
    };
    let parts: Vec<String> = servers(res)
        .iter()
        .filter_map(|s| {
            let r = find(res, s, "fanout", n)?;
            let cpu = clean(r, "cpu_us_per_delivery")?;
            // The woken floor measured just before this server ran, when the run has it.
            let woken = r.get("woken_floor_us").unwrap_or(woken_us);
            (woken > 0.0).then(|| format!("{s} {:.2}×", cpu / woken))
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    let beside = res
        .records
        .iter()
        .any(|r| r.scenario == "fanout" && r.get("woken_floor_us").is_some());
    let of = if beside {
        "of the woken floor measured just before each server ran"
    } else {
        "of it"
    };
    format!(
        " Fan-out CPU per delivery at {n} members as a multiple {of}: {}.",
        parts.join(", ")
    )
}

/// "Woken-reader floor against room size: …", with every server's fan-out CPU per delivery as
/// a multiple of the floor at the same size.
pub(super) fn floor_growth_line(res: &Results, g: &FloorGrowth) -> String {
    let (small, large) = (g.small.cpu_us_per_write, g.large.cpu_us_per_write);
    let mut line = format!(
        "Woken-reader floor against room size: **{:.2} µs** per write to {} sockets, **{:.2} µs** to {} ({} writes each): the kernel's own cost per delivery grows **{:.2}×** between the fan-out scenario's smallest and largest room.",
        small,
        g.small_sockets,
        large,
        g.large_sockets,
        g.small.writes.min(g.large.writes),
        g.ratio()
    );
    let parts: Vec<String> = servers(res)
        .iter()
        .filter_map(|s| {
            let at = |n: usize, floor: f64| {
                find(res, s, "fanout", n)
                    .and_then(|r| clean(r, "cpu_us_per_delivery"))
                    .filter(|_| floor > 0.0)
                    .map(|cpu| cpu / floor)
            };
            let (a, b) = (at(g.small_sockets, small)?, at(g.large_sockets, large)?);
            Some(format!("{s} {a:.2}× → {b:.2}×"))
        })
        .collect();
    if !parts.is_empty() {
        line.push_str(&format!(
            " Fan-out CPU per delivery as a multiple of the woken floor at the same size, {} → {} members: {}.",
            g.small_sockets,
            g.large_sockets,
            parts.join(", ")
        ));
    }
    line
}

/// "echo-floor is the least …": every server's echo round trips per CPU-second as a fraction
/// of the echo floor's, and what the 1.2× target asks of it.
pub(super) fn echo_floor_line(res: &Results) -> Option<String> {
    let &n = sizes(res, "echo").first()?;
    let key = "round_trips_per_cpu_s";
    let floor = median(res, ECHO_FLOOR, "echo", n, key)?;
    let parts: Vec<String> = servers(res)
        .iter()
        .filter_map(|s| {
            let v = median(res, s, "echo", n, key)?;
            Some(format!("{s} {:.2}", v / floor))
        })
        .collect();
    let mut line = format!(
        "`echo-floor` is a reference, not a peer: `hubbub-bench echo-floor`, one thread on one edge-triggered `epoll` with no runtime and no allocation per frame, the least a WebSocket echo server can cost here ({} round trips per CPU-second; medians over the rounds). Each server as a fraction of it: {}.",
        fmt(floor),
        parts.join(", ")
    );
    if let Some((peer, best)) = best_peer(res, "echo", n, key, Better::Higher) {
        let _ = write!(
            line,
            " The target (≥ 1.2× {peer}) asks for **{:.2}** of the floor; the floor itself is {:.2}× {peer}.",
            1.2 * best / floor,
            floor / best
        );
    }
    Some(line)
}
