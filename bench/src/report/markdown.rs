//! The Markdown results section: the run and machine, the floors, the headline table, one table
//! per scenario with the plots beside it, and what failed; spliced into docs/benchmarks.md
//! between two markers.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::floors::{echo_floor_line, floor_growth_line, woken_multiples};
use super::headline::{headlines, saturation_note};
use super::query::servers;
use super::{Record, Results, fmt, fmt_opt};
use super::{accounts, cluster};

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
    md.push_str(&accounts::section(res));

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
    md.push_str(&cluster::section(res, svg_rel));
    if !res.failures.is_empty() {
        let _ = writeln!(md, "### What failed in this run\n");
        for f in &res.failures {
            let _ = writeln!(md, "- {}", f.chars().take(300).collect::<String>());
        }
        let _ = writeln!(md);
    }
    md
}

/// The cluster scenario run alone: the run and machine, its section and what failed.
fn cluster_markdown(res: &Results, svg_rel: &str) -> String {
    let m = &res.machine;
    let mut md = format!(
        "Run: `{}` ({:?} plan), {} → {}. Machine: {}, {} cores, {} RAM, Linux {}.\n\n",
        res.command, res.size, res.started, res.finished, m.cpu, m.cores, m.mem_total, m.kernel
    );
    md.push_str(&cluster::section(res, svg_rel));
    if !res.failures.is_empty() {
        let _ = writeln!(md, "What failed in this run:\n");
        for f in &res.failures {
            let _ = writeln!(md, "- {}", f.chars().take(300).collect::<String>());
        }
        let _ = writeln!(md);
    }
    md
}

/// Markers in docs/benchmarks.md between which the generated section lives.
const BEGIN: &str = "<!-- results:begin (generated by hubbub-bench report; edit around it) -->";
const END: &str = "<!-- results:end -->";
/// Markers of the cluster scenario's section, when it ran alone.
const CLUSTER_BEGIN: &str =
    "<!-- cluster:begin (generated by hubbub-bench report; edit around it) -->";
const CLUSTER_END: &str = "<!-- cluster:end -->";

/// Render `res` into `md_path`: a run of the cluster scenario alone between the cluster
/// markers, any other run between the results markers (the other part is left as it was).
pub fn render_into(md_path: &Path, res: &Results, svg_rel: &str) -> Result<()> {
    if cluster::cluster_only(res) {
        splice(
            md_path,
            &cluster_markdown(res, svg_rel),
            CLUSTER_BEGIN,
            CLUSTER_END,
        )
    } else {
        splice(md_path, &markdown(res, svg_rel), BEGIN, END)
    }
}

/// Replace the part of `md_path` between `begin` and `end` (or append it) with `section`.
fn splice(md_path: &Path, section: &str, begin: &str, end: &str) -> Result<()> {
    let old = std::fs::read_to_string(md_path).unwrap_or_default();
    let new = match (old.find(begin), old.find(end)) {
        (Some(a), Some(b)) if b > a => format!(
            "{}{begin}\n{section}{end}{}",
            &old[..a],
            &old[b + end.len()..]
        ),
        _ => format!("{old}\n{begin}\n{section}{end}\n"),
    };
    std::fs::write(md_path, new).with_context(|| format!("write {}", md_path.display()))
}
