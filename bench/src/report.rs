//! Results and how they are shown: the JSON results file, the Markdown tables spliced into
//! docs/benchmarks.md, and SVG plots written by hand (no plotting or font libraries needed).
//!
//! The headline is the ratio hubbub / best peer for each target of issue #5, measured in the
//! same run; absolute numbers depend on the machine and are shown beside it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::floor::{FloorGrowth, FloorReport};
use crate::plan::Size;
use crate::servers::ECHO_FLOOR;

/// One measured row: a server, a scenario, a size, and its numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub server: String,
    pub scenario: String,
    pub n: usize,
    pub label: String,
    pub m: BTreeMap<String, f64>,
    pub note: Option<String>,
}

impl Record {
    pub fn get(&self, k: &str) -> Option<f64> {
        self.m.get(k).copied()
    }
}

/// The machine the run was on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub mem_total: String,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        // Count processors in /proc/cpuinfo: the harness itself runs pinned to one core, so
        // available_parallelism() would say 1.
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        Machine {
            cpu,
            cores,
            mem_total,
            kernel,
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub command: String,
    pub size: Size,
    pub started: String,
    pub finished: String,
    pub floor: Option<FloorReport>,
    /// The woken-reader floor at the smallest and largest fan-out room.
    #[serde(default)]
    pub floor_growth: Option<FloorGrowth>,
    pub records: Vec<Record>,
    pub failures: Vec<String>,
}

/// A compact summary of a record for the progress log.
pub fn one_line(r: &Record) -> String {
    let keys = [
        "kib_per_conn",
        "received",
        "lost",
        "p50_ms",
        "p99_ms",
        "cpu_us_per_delivery",
        "floor_multiple",
        "ack_p99_ms",
        "round_trips_per_cpu_s",
        "closed",
        "error_frames",
        "fill_s",
        "gen_cpu_fraction",
    ];
    let mut s = String::new();
    for k in keys {
        if let Some(v) = r.get(k) {
            let _ = write!(s, "{k}={} ", fmt(v));
        }
    }
    if let Some(n) = &r.note {
        let _ = write!(s, "note={n:?}");
    }
    s
}

fn fmt(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Axis tick labels: whole numbers without decimals.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        fmt(v)
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map(fmt).unwrap_or_else(|| "–".into())
}

const HUBBUB: &str = "hubbub";

/// Whether lower or higher is better for a headline metric.
#[derive(Clone, Copy, PartialEq)]
enum Better {
    Lower,
    Higher,
}

/// One headline row: hubbub's value, the best peer's, the ratio and the target.
struct Headline {
    what: String,
    target: String,
    hubbub: Option<f64>,
    best: Option<(String, f64)>,
    /// Target on the ratio hubbub / best peer.
    ratio_target: Option<f64>,
    better: Better,
    /// An absolute bound hubbub's value must also meet.
    absolute: Option<f64>,
}

impl Headline {
    fn ratio(&self) -> Option<f64> {
        self.ratio_target?;
        match (self.hubbub, &self.best) {
            (Some(h), Some((_, b))) if *b > 0.0 => Some(h / b),
            _ => None,
        }
    }

    fn met(&self) -> &'static str {
        let Some(h) = self.hubbub else {
            return "not measured";
        };
        let ratio_ok = match (self.ratio_target, self.ratio()) {
            (Some(t), Some(r)) => match self.better {
                Better::Lower => r <= t,
                Better::Higher => r >= t,
            },
            (Some(_), None) => return "no peer value",
            (None, _) => true,
        };
        let abs_ok = match self.absolute {
            Some(a) => match self.better {
                Better::Lower => h < a,
                Better::Higher => h >= a,
            },
            None => true,
        };
        if ratio_ok && abs_ok { "yes" } else { "**no**" }
    }
}

/// " Fan-out CPU per delivery at N members as a multiple of it: hubbub X×, node-ws Y×, …"
fn woken_multiples(res: &Results, woken_us: f64) -> String {
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
fn floor_growth_line(res: &Results, g: &FloorGrowth) -> String {
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
fn echo_floor_line(res: &Results) -> Option<String> {
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

/// Every record of `server` in `scenario` at size `n`, in the order they ran (several when the
/// scenario runs in rounds).
fn records_at<'a>(
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
fn find<'a>(res: &'a Results, server: &'a str, scenario: &'a str, n: usize) -> Option<&'a Record> {
    records_at(res, server, scenario, n).next_back()
}

/// The servers compared, in the order they ran; the echo floor is a reference, not one of them.
fn servers(res: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in &res.records {
        if r.server != ECHO_FLOOR && !v.contains(&r.server) {
            v.push(r.server.clone());
        }
    }
    v
}

fn sizes(res: &Results, scenario: &str) -> Vec<usize> {
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
fn clean(r: &Record, key: &str) -> Option<f64> {
    if r.get("failed").unwrap_or(0.0) > 0.0 {
        return None;
    }
    r.get(key)
}

/// The median of `key` over every clean record of `server` at (`scenario`, `n`): one record's
/// value, or the middle of repeated rounds (the lower middle of an even count).
fn median(res: &Results, server: &str, scenario: &str, n: usize, key: &str) -> Option<f64> {
    let mut values: Vec<f64> = records_at(res, server, scenario, n)
        .filter_map(|r| clean(r, key))
        .collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len().saturating_sub(1) / 2).copied()
}

/// Best peer value of `key` at (`scenario`, `n`).
fn best_peer(
    res: &Results,
    scenario: &str,
    n: usize,
    key: &str,
    better: Better,
) -> Option<(String, f64)> {
    let mut best: Option<(String, f64)> = None;
    for s in servers(res).into_iter().filter(|s| s != HUBBUB) {
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

/// Highest passing delivery rate of each server in the saturation scenario.
fn saturation(res: &Results, server: &str) -> Option<f64> {
    res.records
        .iter()
        .filter(|r| r.server == server && r.scenario == "saturation" && r.get("pass") == Some(1.0))
        .filter_map(|r| r.get("deliveries_per_s"))
        .fold(None, |acc: Option<f64>, v| {
            Some(acc.map_or(v, |a| a.max(v)))
        })
}

/// Whether the last saturation step of `server` failed (a true ceiling was found) and whether
/// the load generator was near saturation there.
fn saturation_note(res: &Results, server: &str) -> String {
    let steps: Vec<&Record> = res
        .records
        .iter()
        .filter(|r| r.server == server && r.scenario == "saturation")
        .collect();
    match steps.last() {
        None => "not run".into(),
        Some(last) if last.get("pass") == Some(1.0) => {
            "no failing step within the step budget (ceiling is higher)".into()
        }
        Some(last) => format!(
            "failed at {} (p99 {} ms, lost {}, closed {}; generator CPU {})",
            last.label,
            fmt_opt(last.get("p99_ms")),
            fmt_opt(last.get("lost")),
            fmt_opt(last.get("closed")),
            fmt_opt(last.get("gen_cpu_fraction"))
        ),
    }
}

fn headlines(res: &Results) -> Vec<Headline> {
    let mut out = Vec::new();
    let fan = sizes(res, "fanout");
    let fan_ref = fan
        .iter()
        .copied()
        .filter(|&n| n <= 2_000)
        .max()
        .or_else(|| fan.first().copied());
    let fan_big = fan.last().copied();
    let fan_small = fan.first().copied();
    let get = |s: &str, sc: &str, n: usize, k: &str| median(res, s, sc, n, k);
    if let Some(n) = fan_ref {
        out.push(Headline {
            what: format!("CPU µs per delivered message, fan-out {n} members"),
            target: "≤ 0.8× best peer".into(),
            hubbub: get(HUBBUB, "fanout", n, "cpu_us_per_delivery"),
            best: best_peer(res, "fanout", n, "cpu_us_per_delivery", Better::Lower),
            ratio_target: Some(0.8),
            better: Better::Lower,
            absolute: None,
        });
        // Each server's multiple is of the floor measured just before it ran (`floor_us`);
        // older results files only have the run's first floor.
        let beside = get(HUBBUB, "fanout", n, "floor_us");
        let floor = beside.or(res.floor.as_ref().map(|f| f.cpu_us_per_write));
        let when = if beside.is_some() {
            ", measured just before hubbub ran"
        } else {
            ""
        };
        out.push(Headline {
            what: format!(
                "… as a multiple of the kernel floor ({} µs/write{when})",
                fmt_opt(floor)
            ),
            target: "≤ 1.15× floor".into(),
            hubbub: get(HUBBUB, "fanout", n, "floor_multiple"),
            best: best_peer(res, "fanout", n, "floor_multiple", Better::Lower),
            ratio_target: None,
            better: Better::Lower,
            absolute: Some(1.15),
        });
        out.push(Headline {
            what: format!("p99 delivery latency, fan-out {n} members (ms)"),
            target: "≤ best peer and < 50 ms".into(),
            hubbub: get(HUBBUB, "fanout", n, "p99_ms"),
            best: best_peer(res, "fanout", n, "p99_ms", Better::Lower),
            ratio_target: Some(1.0),
            better: Better::Lower,
            absolute: Some(50.0),
        });
    }
    if let Some(n) = fan_big.filter(|b| Some(*b) != fan_ref) {
        out.push(Headline {
            what: format!("p99 delivery latency, fan-out {n} members (ms)"),
            target: "≤ best peer".into(),
            hubbub: get(HUBBUB, "fanout", n, "p99_ms"),
            best: best_peer(res, "fanout", n, "p99_ms", Better::Lower),
            ratio_target: Some(1.0),
            better: Better::Lower,
            absolute: None,
        });
    }
    if let (Some(small), Some(big)) = (fan_small, fan_big.filter(|b| Some(*b) != fan_small)) {
        let growth = |s: &str| match (
            get(s, "fanout", big, "cpu_us_per_delivery"),
            get(s, "fanout", small, "cpu_us_per_delivery"),
        ) {
            (Some(b), Some(a)) if a > 0.0 => Some(b / a),
            _ => None,
        };
        let mut best: Option<(String, f64)> = None;
        for s in servers(res).into_iter().filter(|s| s != HUBBUB) {
            if let Some(g) = growth(&s)
                && best.as_ref().is_none_or(|(_, b)| g < *b)
            {
                best = Some((s, g));
            }
        }
        out.push(Headline {
            what: format!("growth: CPU per delivery at {big} ÷ at {small} members"),
            target: "≤ 1.25".into(),
            hubbub: growth(HUBBUB),
            best,
            ratio_target: None,
            better: Better::Lower,
            absolute: Some(1.25),
        });
    }
    if let Some(&n) = sizes(res, "idle").last() {
        out.push(Headline {
            what: format!("resident KiB per idle connection at {n}"),
            target: "≤ 0.5× best peer and < 10 KiB".into(),
            hubbub: get(HUBBUB, "idle", n, "kib_per_conn"),
            best: best_peer(res, "idle", n, "kib_per_conn", Better::Lower),
            ratio_target: Some(0.5),
            better: Better::Lower,
            absolute: Some(10.0),
        });
    }
    let sat_peer = servers(res)
        .into_iter()
        .filter(|s| s != HUBBUB)
        .filter_map(|s| saturation(res, &s).map(|v| (s, v)))
        .fold(None, |acc: Option<(String, f64)>, (s, v)| match acc {
            Some((_, b)) if b >= v => acc,
            _ => Some((s, v)),
        });
    if let Some(&n) = sizes(res, "saturation").first() {
        out.push(Headline {
            what: format!("saturation: deliveries/s with p99 < 100 ms and no loss ({n} members)"),
            target: "≥ 1.5× best peer".into(),
            hubbub: saturation(res, HUBBUB),
            best: sat_peer,
            ratio_target: Some(1.5),
            better: Better::Higher,
            absolute: None,
        });
    }
    if let Some(&n) = sizes(res, "echo").first() {
        let of = match records_at(res, HUBBUB, "echo", n).count() {
            0 | 1 => String::new(),
            k => format!(", median of {k} rounds"),
        };
        out.push(Headline {
            what: format!("echo round trips per server CPU-second ({n} connections{of})"),
            target: "≥ 1.2× best peer".into(),
            hubbub: get(HUBBUB, "echo", n, "round_trips_per_cpu_s"),
            best: best_peer(res, "echo", n, "round_trips_per_cpu_s", Better::Higher),
            ratio_target: Some(1.2),
            better: Better::Higher,
            absolute: None,
        });
    }
    if let Some(&n) = sizes(res, "acks").first() {
        let r = find(res, HUBBUB, "acks", n);
        out.push(Headline {
            what: format!(
                "p99 post-to-ack at {} posts/s (ms)",
                fmt_opt(r.and_then(|r| r.get("rate_total")))
            ),
            target: "< 20 ms".into(),
            hubbub: r.and_then(|r| r.get("ack_p99_ms")),
            best: None,
            ratio_target: None,
            better: Better::Lower,
            absolute: Some(20.0),
        });
    }
    out
}

/// Render the Markdown results section.
pub fn markdown(res: &Results, svg_rel: &str) -> String {
    let mut md = String::new();
    let m = &res.machine;
    let _ = writeln!(
        md,
        "Run: `{}` ({:?} plan), {} → {}.\n",
        res.command, res.size, res.started, res.finished
    );
    let _ = writeln!(
        md,
        "Machine: {}, {} cores, {} RAM, Linux {}. Server pinned to core 0, load generator to core 1. Absolute numbers are machine-dependent; the ratios are the point.\n",
        m.cpu, m.cores, m.mem_total, m.kernel
    );
    if let Some(f) = &res.floor {
        let _ = writeln!(
            md,
            "Kernel floor: **{:.2} µs** CPU per {}-byte `write()` to a loopback TCP socket ({:.2} µs of it system time), measured over {} writes round-robin to {} connected sockets.\n",
            f.cpu_us_per_write, f.bytes_per_write, f.sys_us_per_write, f.writes, f.sockets
        );
        if let Some(w) = &f.woken {
            let _ = writeln!(
                md,
                "Woken-reader floor: **{:.2} µs** per write for the same loop when the reading ends belong to a process on CPU {} that sleeps in `epoll_wait` and reads everything as it arrives (bursts of {} writes 20 ms apart, {} writes in all), as a room's members do.{}\n",
                w.cpu_us_per_write,
                w.reader_cpus,
                f.sockets,
                w.writes,
                woken_multiples(res, w.cpu_us_per_write)
            );
        }
    }
    if let Some(g) = &res.floor_growth {
        let _ = writeln!(md, "{}\n", floor_growth_line(res, g));
    }
    let foreign = res
        .records
        .iter()
        .filter_map(|r| r.get("foreign_core_share"))
        .fold(0.0, f64::max);
    let load = res
        .records
        .iter()
        .filter_map(|r| r.get("loadavg"))
        .fold(0.0, f64::max);
    if foreign > 0.05 || load > 2.5 {
        let _ = writeln!(
            md,
            "**Caution:** other work shared this machine during the run (highest 1-minute load average {load:.1}; up to {:.0}% of the server's core used by other processes during a phase). CPU per delivery is the server's own CPU time and holds up; latency percentiles are inflated whenever the server had to wait for its core.\n",
            foreign * 100.0
        );
    }
    let _ = writeln!(md, "### Headline: hubbub against the best peer\n");
    let _ = writeln!(
        md,
        "| measure | target | hubbub | best peer | hubbub / best peer | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for h in headlines(res) {
        let best = h
            .best
            .as_ref()
            .map(|(s, v)| format!("{} ({s})", fmt(*v)))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            h.what,
            h.target,
            fmt_opt(h.hubbub),
            best,
            h.ratio()
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into()),
            h.met()
        );
    }
    let _ = writeln!(md);

    let section = |md: &mut String, title: &str, scenario: &str, cols: &[(&str, &str)]| {
        let rows: Vec<&Record> = res
            .records
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(md, "### {title}\n");
        let mut head = String::from("| server | N | |");
        let mut rule = String::from("|---|---|---|");
        for (_, label) in cols {
            let _ = write!(head, " {label} |");
            rule.push_str("---|");
        }
        let _ = writeln!(md, "{head}\n{rule}");
        for r in rows {
            let mut line = format!("| {} | {} | {} |", r.server, r.n, r.label);
            for (k, _) in cols {
                let _ = write!(line, " {} |", fmt_opt(r.get(k)));
            }
            let _ = writeln!(md, "{line}");
        }
        let notes: Vec<String> = res
            .records
            .iter()
            .filter(|r| r.scenario == scenario)
            .filter_map(|r| {
                r.note.as_ref().map(|n| {
                    format!(
                        "- {} N={} {}: {}",
                        r.server,
                        r.n,
                        r.label,
                        n.chars().take(200).collect::<String>()
                    )
                })
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(
                md,
                "\nFirst error or close seen per row:\n\n{}",
                notes.join("\n")
            );
        }
        let _ = writeln!(md);
    };
    section(
        &mut md,
        "Idle connections: memory",
        "idle",
        &[
            ("open", "open"),
            ("failed", "failed"),
            ("kib_per_conn", "KiB/conn"),
            ("rss_kib", "RSS KiB"),
            ("connect_s", "connect s"),
            ("connect_server_cpu_s", "server CPU s while connecting"),
        ],
    );
    let _ = writeln!(
        md,
        "![memory per idle connection]({svg_rel}/idle_memory.svg)\n"
    );
    section(
        &mut md,
        "Fan-out: one room, every member measures",
        "fanout",
        &[
            ("failed", "failed"),
            ("rate_total", "msg/s"),
            ("received", "deliveries"),
            ("lost", "lost"),
            ("duplicates", "extra"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("p999_ms", "p99.9 ms"),
            ("max_ms", "max ms"),
            ("cpu_us_per_delivery", "CPU µs/delivery"),
            ("floor_us", "floor µs"),
            ("floor_multiple", "× floor"),
            ("core_us_per_delivery", "core µs/delivery"),
            ("server_sys_fraction", "sys share"),
            ("fill_s", "room fill s"),
            ("fill_server_cpu_s", "fill CPU s"),
            ("kib_per_conn_in_room", "KiB/member"),
            ("closed", "closed"),
            ("gen_cpu_fraction", "generator CPU"),
            ("foreign_core_share", "foreign load on server core"),
            ("loadavg", "loadavg"),
        ],
    );
    let _ = writeln!(
        md,
        "![p99 latency against room size]({svg_rel}/fanout_p99.svg)\n"
    );
    let _ = writeln!(
        md,
        "![CPU per delivery against room size]({svg_rel}/fanout_cpu.svg)\n"
    );
    let _ = writeln!(md, "![room fill cost]({svg_rel}/fill_cpu.svg)\n");
    section(
        &mut md,
        "Saturation: growing post rate until p99 ≥ 100 ms or loss",
        "saturation",
        &[
            ("rate_total", "msg/s"),
            ("deliveries_per_s", "deliveries/s"),
            ("lost", "lost"),
            ("p99_ms", "p99 ms"),
            ("cpu_us_per_delivery", "CPU µs/delivery"),
            ("server_cpu_s", "server CPU s"),
            ("closed", "closed"),
            ("gen_cpu_fraction", "generator CPU"),
            ("foreign_core_share", "foreign load on server core"),
            ("pass", "pass"),
        ],
    );
    for s in servers(res) {
        let _ = writeln!(md, "- {s}: {}", saturation_note(res, &s));
    }
    let _ = writeln!(md, "\n![saturation]({svg_rel}/saturation.svg)\n");
    section(
        &mut md,
        "Many rooms (hubbub only: the peers have no rooms)",
        "rooms",
        &[
            ("rate_total", "msg/s"),
            ("received", "deliveries"),
            ("lost", "lost"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("cpu_us_per_delivery", "CPU µs/delivery"),
            ("ack_p99_ms", "ack p99 ms"),
            ("error_frames", "errors"),
            ("closed", "closed"),
        ],
    );
    section(
        &mut md,
        "Acks under load (hubbub only)",
        "acks",
        &[
            ("rate_total", "posts/s"),
            ("acks", "acks"),
            ("ack_p50_ms", "ack p50 ms"),
            ("ack_p99_ms", "ack p99 ms"),
            ("ack_max_ms", "ack max ms"),
            ("p99_ms", "delivery p99 ms"),
            ("lost", "lost"),
            ("error_frames", "errors"),
        ],
    );
    section(
        &mut md,
        "Echo",
        "echo",
        &[
            ("round_trips_per_s", "round trips/s"),
            ("round_trips_per_cpu_s", "per CPU-s"),
            ("cpu_us_per_round_trip", "CPU µs/rt"),
            ("server_busy", "server busy"),
            ("p50_ms", "p50 ms"),
            ("p99_ms", "p99 ms"),
            ("server_sys_fraction", "sys share"),
            ("gen_cpu_fraction", "generator CPU"),
        ],
    );
    if let Some(line) = echo_floor_line(res) {
        let _ = writeln!(md, "{line}\n");
    }
    if !res.failures.is_empty() {
        let _ = writeln!(md, "### What failed in this run\n");
        for f in &res.failures {
            let _ = writeln!(md, "- {}", f.chars().take(300).collect::<String>());
        }
        let _ = writeln!(md);
    }
    md
}

/// Series of (n, metric) per server for a scenario.
fn series(res: &Results, scenario: &str, key: &str) -> Vec<(String, Vec<(f64, f64)>)> {
    servers(res)
        .into_iter()
        .map(|s| {
            let pts: Vec<(f64, f64)> = res
                .records
                .iter()
                .filter(|r| r.server == s && r.scenario == scenario)
                .filter_map(|r| clean(r, key).map(|v| (r.n as f64, v)))
                .collect();
            (s, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect()
}

/// Write every plot into `dir`.
pub fn write_svgs(res: &Results, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let floor = res
        .floor
        .as_ref()
        .map(|f| ("kernel floor".to_string(), f.cpu_us_per_write));
    let sat: Vec<(String, Vec<(f64, f64)>)> = servers(res)
        .into_iter()
        .map(|s| {
            let pts = res
                .records
                .iter()
                .filter(|r| r.server == s && r.scenario == "saturation")
                .filter_map(|r| Some((r.get("deliveries_per_s")?, r.get("p99_ms")?)))
                .collect::<Vec<_>>();
            (s, pts)
        })
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let charts = [
        (
            "idle_memory.svg",
            chart(
                "Resident memory per idle connection",
                "connections",
                "KiB per connection",
                &series(res, "idle", "kib_per_conn"),
                None,
            ),
        ),
        (
            "fanout_p99.svg",
            chart(
                "p99 delivery latency, one room",
                "room members",
                "p99 latency (ms)",
                &series(res, "fanout", "p99_ms"),
                None,
            ),
        ),
        (
            "fanout_cpu.svg",
            chart(
                "Server CPU per delivered message",
                "room members",
                "CPU µs per delivery",
                &series(res, "fanout", "cpu_us_per_delivery"),
                floor,
            ),
        ),
        (
            "fill_cpu.svg",
            chart(
                "Server CPU spent while a room stage fills (joins + presence)",
                "room members after the stage",
                "server CPU seconds",
                &series(res, "fanout", "fill_server_cpu_s"),
                None,
            ),
        ),
        (
            "saturation.svg",
            chart(
                "p99 latency against delivery rate",
                "deliveries per second",
                "p99 latency (ms)",
                &sat,
                Some(("100 ms limit".to_string(), 100.0)),
            ),
        ),
    ];
    for (name, svg) in charts {
        std::fs::write(dir.join(name), svg).with_context(|| format!("write {name}"))?;
    }
    Ok(())
}

const COLORS: [&str; 6] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

/// A line chart as SVG text: one polyline with markers per series, optional horizontal
/// reference line, linear axes starting at zero.
pub fn chart(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
    hline: Option<(String, f64)>,
) -> String {
    let (w, h) = (720.0, 420.0);
    let (l, r, t, b) = (70.0, 170.0, 40.0, 50.0);
    let pw = w - l - r;
    let ph = h - t - b;
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .fold(0.0, f64::max)
        .max(1.0);
    let mut ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(0.0, f64::max);
    if let Some((_, y)) = &hline {
        ymax = ymax.max(*y);
    }
    let ymax = nice_ceiling(ymax.max(1e-9));
    let xmax = nice_ceiling(xmax);
    let sx = |x: f64| l + x / xmax * pw;
    let sy = |y: f64| t + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        esc(title)
    );
    for i in 0..=5 {
        let fx = i as f64 / 5.0;
        let (x, y) = (l + fx * pw, t + ph - fx * ph);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{y}" x2="{}" y2="{y}" stroke="#e0e0e0"/>"##,
            l + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            l - 6.0,
            y + 4.0,
            tick(ymax * fx)
        );
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            t + ph + 16.0,
            tick(xmax * fx)
        );
    }
    let _ = writeln!(
        s,
        r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        t + ph,
        l + pw,
        t + ph
    );
    let _ = writeln!(
        s,
        r#"<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>"#,
        t + ph
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        l + pw / 2.0,
        h - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        t + ph / 2.0,
        t + ph / 2.0,
        esc(ylabel)
    );
    if let Some((label, y)) = &hline {
        let yy = sy(*y);
        let _ = writeln!(
            s,
            r##"<line x1="{l}" y1="{yy}" x2="{}" y2="{yy}" stroke="#555" stroke-dasharray="6 4"/>"##,
            l + pw
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#555">{}</text>"##,
            l + pw + 6.0,
            yy + 4.0,
            esc(label)
        );
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let mut pts = pts.clone();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (x, y) in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{c}"/>"#,
                sx(*x),
                sy(*y)
            );
        }
        let ly = t + 20.0 + i as f64 * 20.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="3"/>"#,
            l + pw + 10.0,
            l + pw + 30.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            l + pw + 36.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The next "nice" number (1, 2, 2.5, 5 × 10^k) at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let e = v.log10().floor();
    let base = 10f64.powf(e);
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * base >= v * 0.999_999 {
            return m * base;
        }
    }
    10.0 * base
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Markers in docs/benchmarks.md between which the generated section lives.
pub const BEGIN: &str = "<!-- results:begin (generated by hubbub-bench report; edit around it) -->";
pub const END: &str = "<!-- results:end -->";

/// Replace the generated section of `md_path` (or append it) with `section`.
pub fn splice(md_path: &Path, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(md_path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{BEGIN}\n{section}{END}{}",
            &old[..a],
            &old[b + END.len()..]
        ),
        _ => format!("{old}\n{BEGIN}\n{section}{END}\n"),
    };
    std::fs::write(md_path, new).with_context(|| format!("write {}", md_path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_record(server: &str, per_cpu_s: f64) -> Record {
        Record {
            server: server.into(),
            scenario: "echo".into(),
            n: 50,
            label: String::new(),
            m: BTreeMap::from([("round_trips_per_cpu_s".to_string(), per_cpu_s)]),
            note: None,
        }
    }

    fn echo_results() -> Results {
        Results {
            machine: Machine::default(),
            command: "test".into(),
            size: Size::Smoke,
            started: String::new(),
            finished: String::new(),
            floor: None,
            floor_growth: None,
            records: vec![
                echo_record(HUBBUB, 120.0),
                echo_record("go-gorilla", 100.0),
                echo_record(ECHO_FLOOR, 150.0),
            ],
            failures: Vec::new(),
        }
    }

    #[test]
    fn repeated_rounds_count_by_their_median() {
        let mut res = echo_results();
        // Neither the first round (120) nor the last (300) is the middle one.
        res.records.push(echo_record(HUBBUB, 200.0));
        res.records.push(echo_record(HUBBUB, 300.0));
        let key = "round_trips_per_cpu_s";
        assert_eq!(median(&res, HUBBUB, "echo", 50, key), Some(200.0));
        assert_eq!(median(&res, "go-gorilla", "echo", 50, key), Some(100.0));
        assert_eq!(median(&res, "node-ws", "echo", 50, key), None);
        let md = markdown(&res, "bench");
        assert!(md.contains("(50 connections, median of 3 rounds)"), "{md}");
        assert!(
            md.contains("| 200.0 | 100.0 (go-gorilla) | 2.00× |"),
            "{md}"
        );
    }

    #[test]
    fn the_echo_floor_is_never_the_best_peer() {
        let res = echo_results();
        let best = best_peer(&res, "echo", 50, "round_trips_per_cpu_s", Better::Higher);
        assert_eq!(best, Some(("go-gorilla".to_string(), 100.0)));
        assert!(!servers(&res).contains(&ECHO_FLOOR.to_string()));
    }

    #[test]
    fn the_echo_section_sets_every_server_against_the_floor() {
        let md = markdown(&echo_results(), "bench");
        assert!(
            md.contains("| echo-floor | 50 |"),
            "floor row in the table:\n{md}"
        );
        assert!(
            md.contains("hubbub 0.80, go-gorilla 0.67"),
            "fractions of the floor:\n{md}"
        );
        assert!(
            md.contains("asks for **0.80** of the floor"),
            "what 1.2× the best peer means against the floor:\n{md}"
        );
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(19_000.0), 20_000.0);
        assert_eq!(nice_ceiling(0.22), 0.25);
    }

    #[test]
    fn chart_is_svg_with_every_series() {
        let s = chart(
            "t",
            "x",
            "y",
            &[
                ("a".into(), vec![(1.0, 2.0), (2.0, 3.0)]),
                ("b<".into(), vec![(1.0, 1.0)]),
            ],
            Some(("floor".into(), 1.5)),
        );
        assert!(s.starts_with("<svg"));
        assert!(s.contains("b&lt;"));
        assert_eq!(s.matches("<polyline").count(), 2);
    }
}
