//! Results and how they are shown: the JSON results file, the Markdown tables spliced into
//! docs/benchmarks.md, and SVG plots written by hand (no plotting or font libraries needed).
//!
//! The headline is the ratio hubbub / best peer for each target of issue #5, measured in the
//! same run; absolute numbers depend on the machine and are shown beside it.
//!
//! One module per part of the report: [`query`] (looking records up), [`headline`] (the
//! headline table), [`floors`] (the kernel- and echo-floor lines), [`markdown`] (the whole
//! Markdown section, its scenario tables and the splice into docs/benchmarks.md), [`cluster`]
//! (the cluster scenario's section, spliced between markers of its own when it ran alone) and
//! [`svg`] (the plots).

mod accounts;
mod cluster;
mod floors;
mod headline;
mod markdown;
mod query;
mod svg;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::floor::{FloorGrowth, FloorReport};
use crate::plan::Size;

pub use markdown::render_into;
pub use svg::write_svgs;

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

/// A number with as many decimals as its size deserves (0, 1 or 2).
pub(super) fn fmt(v: f64) -> String {
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

/// A number, or a dash when it was not measured.
pub(super) fn fmt_opt(v: Option<f64>) -> String {
    v.map(fmt).unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::markdown::markdown;
    use super::query::{Better, HUBBUB, best_peer, median, servers};
    use super::*;
    use crate::servers::ECHO_FLOOR;

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
}
