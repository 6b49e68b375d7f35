//! The plots, as SVG written by hand (no plotting or font libraries needed).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::cluster;
use super::query::{clean, servers};
use super::{Results, fmt};

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

/// Write every plot into `dir`: the cluster plot when the run has cluster rows, and the peer
/// comparison's plots unless the run was the cluster scenario alone (which must not blank
/// them).
pub fn write_svgs(res: &Results, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let cluster = cluster::saturation_series(res);
    if !cluster.is_empty() {
        let svg = chart(
            "Cluster: p99 latency against delivery rate",
            "deliveries per second",
            "p99 latency (ms)",
            &cluster,
            Some(("100 ms limit".to_string(), 100.0)),
        );
        let name = "cluster_saturation.svg";
        std::fs::write(dir.join(name), svg).with_context(|| format!("write {name}"))?;
    }
    if cluster::cluster_only(res) {
        return Ok(());
    }
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
fn chart(
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

/// Axis tick labels: whole numbers without decimals.
fn tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        fmt(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
