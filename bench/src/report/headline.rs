//! The headline table: for each target of issue #5, hubbub's value, the best peer's, their
//! ratio and whether the target is met.

use super::Results;
use super::query::{Better, HUBBUB, best_peer, find, is_peer, median, records_at, servers, sizes};
use super::{Record, fmt_opt};

/// One headline row: hubbub's value, the best peer's, the ratio and the target.
pub(super) struct Headline {
    pub(super) what: String,
    pub(super) target: String,
    pub(super) hubbub: Option<f64>,
    pub(super) best: Option<(String, f64)>,
    /// Target on the ratio hubbub / best peer.
    pub(super) ratio_target: Option<f64>,
    pub(super) better: Better,
    /// An absolute bound hubbub's value must also meet.
    pub(super) absolute: Option<f64>,
}

impl Headline {
    pub(super) fn ratio(&self) -> Option<f64> {
        self.ratio_target?;
        match (self.hubbub, &self.best) {
            (Some(h), Some((_, b))) if *b > 0.0 => Some(h / b),
            _ => None,
        }
    }

    pub(super) fn met(&self) -> &'static str {
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

/// Highest passing delivery rate of each server in the saturation scenario.
pub(super) fn saturation(res: &Results, server: &str) -> Option<f64> {
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
pub(super) fn saturation_note(res: &Results, server: &str) -> String {
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

pub(super) fn headlines(res: &Results) -> Vec<Headline> {
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
        for s in servers(res).into_iter().filter(|s| is_peer(s)) {
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
        .filter(|s| is_peer(s))
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
