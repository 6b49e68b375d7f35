//! The cluster section (issue 18): hubbub's five configurations side by side, the issue's
//! targets and whether they are met, and the saturation plot. A run of the cluster scenario
//! alone is spliced between its own markers in docs/benchmarks.md, so it never replaces the
//! results of the peer comparison.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Record, Results, fmt, fmt_opt};

/// Scenario names of the cluster rows (see `scenario::cluster`).
const LOAD: &str = "cluster_load";
const SATURATION: &str = "cluster_saturation";

/// The configuration every several-node one is compared with: one node on the same stack.
const ONE_NODE: &str = "pg+redis×1";
/// The default single node, what the CPU target compares the cluster with.
const SINGLE: &str = "sqlite×1";

/// The targets.
const CROSS_P99_TARGET_MS: f64 = 1.0;
const CPU_RATIO_TARGET: f64 = 1.5;

/// Whether a record belongs to the cluster scenario.
pub(super) fn is_cluster(r: &Record) -> bool {
    r.scenario == LOAD || r.scenario == SATURATION
}

/// Whether the run was the cluster scenario alone.
pub fn cluster_only(res: &Results) -> bool {
    !res.records.is_empty() && res.records.iter().all(is_cluster)
}

/// The configurations in the order they ran.
fn configs(res: &Results) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for r in res.records.iter().filter(|r| is_cluster(r)) {
        if !v.contains(&r.server) {
            v.push(r.server.clone());
        }
    }
    v
}

/// The moderate-load rows of a configuration, one per round.
fn load_rows<'a>(res: &'a Results, config: &'a str) -> impl Iterator<Item = &'a Record> {
    res.records
        .iter()
        .filter(move |r| r.server == config && r.scenario == LOAD)
}

/// The moderate load of a configuration: each metric the median of its rounds (the lower
/// middle of an even count).
fn load(res: &Results, config: &str) -> Option<Record> {
    let rows: Vec<&Record> = load_rows(res, config).collect();
    let first = rows.first()?;
    let mut m = BTreeMap::new();
    for key in rows.iter().flat_map(|r| r.m.keys()) {
        if m.contains_key(key) {
            continue;
        }
        let mut values: Vec<f64> = rows.iter().filter_map(|r| r.get(key)).collect();
        values.sort_by(f64::total_cmp);
        if let Some(&v) = values.get(values.len().saturating_sub(1) / 2) {
            m.insert(key.clone(), v);
        }
    }
    Some(Record {
        m,
        label: format!("median of {} rounds", rows.len()),
        ..(*first).clone()
    })
}

/// The lowest and highest of a moderate-load metric over a configuration's rounds.
fn load_range(res: &Results, config: &str, key: &str) -> Option<(f64, f64)> {
    load_rows(res, config)
        .filter_map(|r| r.get(key))
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((f64::min(lo, v), f64::max(hi, v))),
        })
}

fn steps<'a>(res: &'a Results, config: &'a str) -> impl Iterator<Item = &'a Record> {
    res.records
        .iter()
        .filter(move |r| r.server == config && r.scenario == SATURATION)
}

/// Highest deliveries/s of a passing saturation step.
fn ceiling(res: &Results, config: &str) -> Option<f64> {
    steps(res, config)
        .filter(|r| r.get("pass") == Some(1.0))
        .filter_map(|r| r.get("deliveries_per_s"))
        .reduce(f64::max)
}

/// `a / b` of a moderate-load metric of two configurations.
fn ratio(res: &Results, a: &str, b: &str, key: &str) -> Option<f64> {
    let (x, y) = (load(res, a)?.get(key)?, load(res, b)?.get(key)?);
    (y > 0.0).then(|| x / y)
}

/// Saturation curves (deliveries/s, p99 ms) per configuration, for the plot.
pub(super) fn saturation_series(res: &Results) -> Vec<(String, Vec<(f64, f64)>)> {
    configs(res)
        .into_iter()
        .map(|c| {
            let pts = steps(res, &c)
                .filter_map(|r| Some((r.get("deliveries_per_s")?, r.get("p99_ms")?)))
                .collect();
            (c, pts)
        })
        .filter(|(_, p): &(String, Vec<(f64, f64)>)| !p.is_empty())
        .collect()
}

/// The cluster section, or nothing when the run has no cluster rows.
pub fn section(res: &Results, svg_rel: &str) -> String {
    let configs = configs(res);
    let mut md = String::new();
    if configs.is_empty() {
        return md;
    }
    let _ = writeln!(md, "### Cluster: one node and several, side by side\n");
    setup(&mut md, res);
    table(&mut md, res, &configs);
    cross_node(&mut md, res, &configs);
    targets(&mut md, res, &configs);
    saturation_notes(&mut md, res, &configs);
    let _ = writeln!(
        md,
        "![p99 against delivery rate per configuration]({svg_rel}/cluster_saturation.svg)\n"
    );
    md
}

/// What ran and how it was pinned.
fn setup(md: &mut String, res: &Results) {
    let Some(first) = res.records.iter().find(|r| r.scenario == LOAD) else {
        return;
    };
    let rounds = load_rows(res, &first.server).count();
    let pin = match first.get("server_core") {
        Some(c) => format!(
            "Every server process of a configuration (its hubbub nodes, the postmaster and all its children, redis-server) is pinned to core {c:.0} and shares it; the load generator runs on the other core. So a configuration's throughput is what one core does for all of it, and adding nodes adds work to that core, never cores."
        ),
        None => "Nothing was pinned (`--pin none`).".to_string(),
    };
    let _ = writeln!(
        md,
        "One room of {} members spread round-robin over the configuration's nodes, {} of them posting (so posts come from every node). Moderate load: {} posts/s, in {rounds} round(s) that each go over every configuration in turn; each moderate-load figure below is the median of its rounds. Saturation: the post rate grows per step until p99 ≥ 100 ms or any loss or close. {pin} CPU per delivery counts every process of the configuration: the hubbub nodes, plus PostgreSQL and Redis where it uses them.\n",
        first.n,
        whole(first.get("senders")),
        whole(first.get("rate_total")),
    );
}

/// A count or a rate as a whole number, or a dash.
fn whole(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |v| format!("{v:.0}"))
}

/// One row per configuration: ceiling, moderate-load latency and CPU with its split.
fn table(md: &mut String, res: &Results, configs: &[String]) {
    let _ = writeln!(
        md,
        "| configuration | nodes | deliveries/s at p99 < 100 ms | p99 delivery ms | p99 ack ms | CPU µs/delivery, all (rounds' range) | hubbub | postgres | redis | deliveries per CPU-second | × {ONE_NODE} | × {SINGLE} | lost / closed (all steps) |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for c in configs {
        let l = load(res, c);
        let l = l.as_ref();
        let get = |k: &str| fmt_opt(l.and_then(|r| r.get(k)));
        let cpu = match load_range(res, c, "cpu_us_per_delivery") {
            Some((lo, hi)) if hi > lo => {
                format!("{} ({}–{})", get("cpu_us_per_delivery"), fmt(lo), fmt(hi))
            }
            _ => get("cpu_us_per_delivery"),
        };
        let (lost, closed) = res
            .records
            .iter()
            .filter(|r| &r.server == c && is_cluster(r))
            .fold((0.0, 0.0), |(a, b), r| {
                (
                    a + r.get("lost").unwrap_or(0.0),
                    b + r.get("closed").unwrap_or(0.0),
                )
            });
        let times = |base: &str| {
            ratio(res, c, base, "cpu_us_per_delivery")
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            md,
            "| {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            whole(l.and_then(|r| r.get("nodes"))),
            fmt_opt(ceiling(res, c)),
            get("p99_ms"),
            get("ack_p99_ms"),
            cpu,
            get("hubbub_cpu_us_per_delivery"),
            get("postgres_cpu_us_per_delivery"),
            get("redis_cpu_us_per_delivery"),
            whole(per_cpu_second(l)),
            times(ONE_NODE),
            times(SINGLE),
            fmt(lost),
            fmt(closed),
        );
    }
    let _ = writeln!(md);
}

/// Deliveries one CPU-second of all the configuration's processes carries at the moderate load
/// (1e6 / CPU µs per delivery): what one core would carry if CPU were the only limit, the
/// per-core figure that compares across machines and with other servers' published numbers.
fn per_cpu_second(load: Option<&Record>) -> Option<f64> {
    let us = load?.get("cpu_us_per_delivery")?;
    (us > 0.0).then(|| 1e6 / us)
}

/// Cross-node against same-node deliveries within each several-node run.
fn cross_node(md: &mut String, res: &Results, configs: &[String]) {
    let lines: Vec<String> = configs
        .iter()
        .filter_map(|c| {
            let l = load(res, c)?;
            let (cross, local) = (l.get("cross_p99_ms")?, l.get("local_p99_ms")?);
            Some(format!(
                "- {c}: posts from another node p99 **{}** ms (p50 {}), from the member's own node p99 {} ms (p50 {}): crossing added **{} ms** to p99 ({} and {} deliveries)",
                fmt(cross),
                fmt_opt(l.get("cross_p50_ms")),
                fmt(local),
                fmt_opt(l.get("local_p50_ms")),
                fmt(cross - local),
                fmt_opt(l.get("cross_deliveries")),
                fmt_opt(l.get("local_deliveries")),
            ))
        })
        .collect();
    if !lines.is_empty() {
        let _ = writeln!(
            md,
            "At the moderate load, deliveries that crossed nodes (through Redis) against those that did not, in the same run:\n\n{}\n",
            lines.join("\n")
        );
    }
}

/// The targets, measured and judged.
fn targets(md: &mut String, res: &Results, configs: &[String]) {
    let _ = writeln!(md, "| target (issue 18) | measured | met |");
    let _ = writeln!(md, "|---|---|---|");
    let p99 = |c: &str| load(res, c).and_then(|r| r.get("p99_ms"));
    let added = p99("pg+redis×2").zip(p99(ONE_NODE)).map(|(a, b)| a - b);
    let _ = writeln!(
        md,
        "| cross-node delivery adds < {CROSS_P99_TARGET_MS} ms to p99 at moderate load | p99 pg+redis×2 − pg+redis×1 (two phases, minutes apart): {} ms | {} |",
        fmt_opt(added),
        met(added.map(|a| a < CROSS_P99_TARGET_MS))
    );
    let within =
        load(res, "pg+redis×2").and_then(|r| Some(r.get("cross_p99_ms")? - r.get("local_p99_ms")?));
    let _ = writeln!(
        md,
        "| … the same, within one phase | pg+redis×2, p99 of deliveries from the other node − from the member's own: {} ms | {} |",
        fmt_opt(within),
        met(within.map(|a| a < CROSS_P99_TARGET_MS))
    );
    for c in configs
        .iter()
        .filter(|c| load(res, c).and_then(|r| r.get("nodes")).unwrap_or(0.0) > 1.0)
    {
        let r = ratio(res, c, SINGLE, "cpu_us_per_delivery");
        let _ = writeln!(
            md,
            "| {c}: CPU per delivery, Redis and PostgreSQL included, < {CPU_RATIO_TARGET}× a single node's ({SINGLE}) | {} | {} |",
            r.map(|x| format!("{x:.2}×")).unwrap_or_else(|| "–".into()),
            met(r.map(|x| x < CPU_RATIO_TARGET))
        );
    }
    let passed_loss: f64 = res
        .records
        .iter()
        .filter(|r| r.scenario == LOAD || (r.scenario == SATURATION && r.get("pass") == Some(1.0)))
        .map(|r| r.get("lost").unwrap_or(0.0) + r.get("duplicates").unwrap_or(0.0))
        .sum();
    let _ = writeln!(
        md,
        "| no loss (nor duplicate) at the moderate load and at every saturation step under the limit | {} lost or extra | {} |",
        fmt(passed_loss),
        met(Some(passed_loss == 0.0))
    );
    let _ = writeln!(md);
}

fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// How each configuration's search ended.
fn saturation_notes(md: &mut String, res: &Results, configs: &[String]) {
    for c in configs {
        let last = steps(res, c).last();
        let note = match last {
            None => "no saturation step".to_string(),
            Some(r) if r.get("pass") == Some(1.0) => format!(
                "every step passed up to {} (the ceiling is higher; generator CPU {})",
                r.label,
                fmt_opt(r.get("gen_cpu_fraction"))
            ),
            Some(r) => format!(
                "failed at {} (p99 {} ms, lost {}, closed {}; generator CPU {}, server processes busy {} of a core)",
                r.label,
                fmt_opt(r.get("p99_ms")),
                fmt_opt(r.get("lost")),
                fmt_opt(r.get("closed")),
                fmt_opt(r.get("gen_cpu_fraction")),
                fmt_opt(r.get("server_cores_busy")),
            ),
        };
        let _ = writeln!(md, "- {c}: {note}");
    }
    let _ = writeln!(md);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::plan::Size;
    use crate::report::Machine;

    fn row(config: &str, scenario: &str, m: &[(&str, f64)]) -> Record {
        Record {
            server: config.into(),
            scenario: scenario.into(),
            n: 204,
            label: "x".into(),
            m: m.iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            note: None,
        }
    }

    fn results(records: Vec<Record>) -> Results {
        Results {
            machine: Machine::default(),
            command: "test".into(),
            size: Size::Smoke,
            started: String::new(),
            finished: String::new(),
            floor: None,
            floor_growth: None,
            records,
            failures: Vec::new(),
        }
    }

    fn load_row(config: &str, nodes: f64, p99: f64, cpu: f64) -> Record {
        row(
            config,
            LOAD,
            &[
                ("nodes", nodes),
                ("p99_ms", p99),
                ("cpu_us_per_delivery", cpu),
                ("lost", 0.0),
            ],
        )
    }

    #[test]
    fn targets_are_judged_against_one_node_and_the_single_sqlite_node() {
        let mut two = load_row("pg+redis×2", 2.0, 6.5, 14.0);
        two.m.insert("cross_p99_ms".into(), 7.5);
        two.m.insert("local_p99_ms".into(), 6.0);
        let res = results(vec![
            load_row(SINGLE, 1.0, 5.0, 10.0),
            load_row(ONE_NODE, 1.0, 6.0, 20.0),
            two,
        ]);
        let md = section(&res, "bench");
        assert!(
            md.contains("(two phases, minutes apart): 0.50 ms | yes |"),
            "{md}"
        );
        assert!(
            md.contains("from the member's own: 1.50 ms | **no** |"),
            "cross 7.5 − local 6.0 within the phase:\n{md}"
        );
        assert!(md.contains("| 1.40× | yes |"), "CPU 14 / 10:\n{md}");
        assert!(md.contains("| pg+redis×2 | 2 |"), "{md}");
        assert!(
            md.contains("| 71429 |"),
            "1e6 / 14 µs per CPU-second:\n{md}"
        );
        assert!(
            md.contains("| 0.70× | 1.40× |"),
            "ratios to both bases:\n{md}"
        );
    }

    #[test]
    fn the_moderate_load_is_each_metrics_median_over_the_rounds() {
        let res = results(vec![
            load_row(SINGLE, 1.0, 5.0, 10.0),
            load_row(SINGLE, 1.0, 50.0, 12.0),
            load_row(SINGLE, 1.0, 6.0, 30.0),
        ]);
        let l = load(&res, SINGLE).expect("rows");
        assert_eq!(l.get("p99_ms"), Some(6.0));
        assert_eq!(l.get("cpu_us_per_delivery"), Some(12.0));
        assert_eq!(
            load_range(&res, SINGLE, "cpu_us_per_delivery"),
            Some((10.0, 30.0))
        );
        let md = section(&res, "bench");
        assert!(
            md.contains("| 12.0 (10.0–30.0) |"),
            "median and range:\n{md}"
        );
        assert!(md.contains("in 3 round(s)"), "{md}");
    }

    #[test]
    fn the_ceiling_is_the_best_passing_step_and_loss_in_a_passing_step_fails_the_target() {
        let res = results(vec![
            load_row(SINGLE, 1.0, 5.0, 10.0),
            row(
                SINGLE,
                SATURATION,
                &[("pass", 1.0), ("deliveries_per_s", 1000.0), ("lost", 0.0)],
            ),
            row(
                SINGLE,
                SATURATION,
                &[("pass", 1.0), ("deliveries_per_s", 2000.0), ("lost", 3.0)],
            ),
            row(
                SINGLE,
                SATURATION,
                &[("pass", 0.0), ("deliveries_per_s", 4000.0), ("lost", 9.0)],
            ),
        ]);
        assert_eq!(ceiling(&res, SINGLE), Some(2000.0));
        let md = section(&res, "bench");
        assert!(md.contains("| 3.00 lost or extra | **no** |"), "{md}");
        assert!(cluster_only(&res));
    }
}
