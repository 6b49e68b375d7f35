//! Smoke test of the harness: every scenario of the smoke plan (a few dozen connections, short
//! counted phases, one echo round) against the real hubbub binary (and against the Node and Go
//! peers when they are available), checking that the reports are sane; and the cluster scenario
//! on a private PostgreSQL and Redis when both are installed. Nothing here asserts a speed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The hubbub binary: `HUBBUB_BIN`, else the newer of target/{debug,release}/hubbub (the test
/// suite builds it before running tests; a stale one from an older checkout must not win).
fn hubbub_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("HUBBUB_BIN") {
        return Some(PathBuf::from(p));
    }
    let root = repo_root();
    ["target/debug/hubbub", "target/release/hubbub"]
        .iter()
        .map(|p| root.join(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}

/// Run the smoke plan in one harness invocation and return the parsed results file.
fn run_suite(name: &str, servers: &str, scenarios: Option<&str>, extra: &[&str]) -> Value {
    let dir =
        std::env::temp_dir().join(format!("hubbub-bench-smoke-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("results.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubbub-bench"));
    cmd.current_dir(repo_root())
        .args([
            "suite",
            "--size",
            "smoke",
            "--pin",
            "none",
            "--servers",
            servers,
        ])
        .arg("--out")
        .arg(&out)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .arg("--md")
        .arg(dir.join("bench.md"))
        .args(extra);
    if let Some(s) = scenarios {
        cmd.args(["--scenarios", s]);
    }
    let status = cmd.status().expect("run hubbub-bench suite");
    assert!(status.success(), "suite exited with {status}");
    let text = std::fs::read_to_string(&out).expect("results file");
    let md = std::fs::read_to_string(dir.join("bench.md")).expect("markdown report");
    assert!(md.contains("### Headline"), "report has a headline table");
    for svg in ["idle_memory.svg", "fanout_p99.svg", "fanout_cpu.svg"] {
        assert!(dir.join(svg).exists(), "{svg} written");
    }
    let v: Value = serde_json::from_str(&text).expect("results JSON");
    let _ = std::fs::remove_dir_all(&dir);
    v
}

fn records<'a>(v: &'a Value, server: &str, scenario: &str) -> Vec<&'a Value> {
    v["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["server"] == server && r["scenario"] == scenario)
        .collect()
}

fn metric(r: &Value, k: &str) -> f64 {
    r["m"][k]
        .as_f64()
        .unwrap_or_else(|| panic!("metric {k} missing in {r}"))
}

/// Fan-out rows: deliveries happened, nothing was lost at this load, percentiles present.
fn check_fanout(v: &Value, server: &str, scenario: &str) {
    let rows = records(v, server, scenario);
    assert!(!rows.is_empty(), "{server} {scenario} has rows");
    for r in rows {
        assert!(
            metric(r, "received") > 0.0,
            "{server} {scenario}: deliveries in {r}"
        );
        assert_eq!(
            metric(r, "lost"),
            0.0,
            "{server} {scenario}: no loss in {r}"
        );
        assert_eq!(
            metric(r, "closed"),
            0.0,
            "{server} {scenario}: no closes in {r}"
        );
        let (p50, p99, max) = (
            metric(r, "p50_ms"),
            metric(r, "p99_ms"),
            metric(r, "max_ms"),
        );
        assert!(
            p50 > 0.0 && p50 <= p99 && p99 <= max,
            "{server} {scenario}: percentiles in {r}"
        );
        assert!(metric(r, "cpu_us_per_delivery") > 0.0);
    }
}

fn check_echo(v: &Value, server: &str) {
    let rows = records(v, server, "echo");
    assert_eq!(
        rows.len(),
        1,
        "{server}: one echo row, the smoke plan's one round"
    );
    assert!(metric(rows[0], "round_trips") > 0.0);
    assert!(metric(rows[0], "p99_ms") > 0.0);
}

#[test]
fn every_scenario_runs_against_hubbub() {
    let Some(bin) = hubbub_bin() else {
        eprintln!("SKIP: no hubbub binary (set HUBBUB_BIN or build the hubbub package first)");
        return;
    };
    let v = run_suite(
        "hubbub",
        "hubbub",
        None,
        &["--hubbub-bin", bin.to_str().expect("utf-8 path")],
    );
    assert_eq!(
        v["failures"].as_array().map(Vec::len),
        Some(0),
        "no failures: {}",
        v["failures"]
    );
    assert!(
        v["floor"]["cpu_us_per_write"].as_f64().unwrap_or(0.0) > 0.0,
        "kernel floor measured"
    );
    assert!(
        v["floor"]["woken"]["writes"].as_u64().unwrap_or(0) > 0,
        "woken-reader floor measured: {}",
        v["floor"]
    );
    let growth = &v["floor_growth"];
    assert!(
        growth["small"]["writes"].as_u64().unwrap_or(0) > 0
            && growth["large"]["writes"].as_u64().unwrap_or(0) > 0
            && growth["small_sockets"].as_u64() < growth["large_sockets"].as_u64(),
        "woken floor measured at the smallest and largest fan-out room: {growth}"
    );
    let idle = records(&v, "hubbub", "idle");
    assert_eq!(idle.len(), 1);
    assert_eq!(metric(idle[0], "open"), 20.0, "every idle connection held");
    assert!(metric(idle[0], "kib_per_conn") >= 0.0);
    check_fanout(&v, "hubbub", "fanout");
    for r in records(&v, "hubbub", "fanout") {
        assert!(
            metric(r, "floor_us") > 0.0 && metric(r, "woken_floor_us") > 0.0,
            "floors measured just before the server: {r}"
        );
    }
    check_fanout(&v, "hubbub", "saturation");
    check_fanout(&v, "hubbub", "rooms");
    check_fanout(&v, "hubbub", "acks");
    let acks = records(&v, "hubbub", "acks");
    assert!(
        metric(acks[0], "acks") > 0.0 && metric(acks[0], "ack_p99_ms") > 0.0,
        "acks timed"
    );
    check_echo(&v, "hubbub");
    check_echo(&v, "echo-floor");
}

#[test]
fn peers_run_when_available() {
    let root = repo_root();
    let mut servers = Vec::new();
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if node_ok && root.join("bench/peers/node-ws/node_modules/ws").exists() {
        servers.push("node-ws");
    }
    if node_ok
        && root
            .join("bench/peers/socketio/node_modules/socket.io")
            .exists()
    {
        servers.push("socketio");
    }
    if root.join("target/peers/go-gorilla").exists() {
        servers.push("go-gorilla");
    }
    if servers.is_empty() {
        eprintln!("SKIP: no peer installed (bench/run.sh installs them)");
        return;
    }
    let v = run_suite("peers", &servers.join(","), Some("fanout,echo"), &[]);
    assert_eq!(
        v["failures"].as_array().map(Vec::len),
        Some(0),
        "no failures: {}",
        v["failures"]
    );
    for s in servers {
        check_fanout(&v, s, "fanout");
        check_echo(&v, s);
    }
}

/// What the cluster scenario needs that this machine lacks (scripts/test.sh installs both).
fn cluster_services_missing() -> Option<String> {
    let mut missing = Vec::new();
    let initdb = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|e| e.path().join("bin/initdb").exists()))
        .unwrap_or(false);
    if !initdb {
        missing.push("PostgreSQL (initdb under /usr/lib/postgresql/*/bin)");
    }
    let redis = Command::new("redis-server").arg("--version").output();
    if !redis.is_ok_and(|o| o.status.success()) {
        missing.push("redis-server");
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// The configurations of the cluster scenario and whether each uses PostgreSQL and Redis.
const CLUSTER_CONFIGS: [(&str, bool, bool); 5] = [
    ("sqlite×1", false, false),
    ("pg×1", true, false),
    ("pg+redis×1", true, true),
    ("pg+redis×2", true, true),
    ("pg+redis×3", true, true),
];

#[test]
fn cluster_scenario_runs_every_configuration_on_a_private_postgres_and_redis() {
    let Some(bin) = hubbub_bin() else {
        eprintln!("SKIP: no hubbub binary (set HUBBUB_BIN or build the hubbub package first)");
        return;
    };
    if let Some(missing) = cluster_services_missing() {
        eprintln!("SKIP: cluster smoke: {missing} not installed (scripts/test.sh installs them)");
        return;
    }
    let dir =
        std::env::temp_dir().join(format!("hubbub-bench-smoke-{}-cluster", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("results.json");
    let md_path = dir.join("bench.md");
    // A page with the peer comparison's section already in it: the cluster run must leave it.
    let results_section = "<!-- results:begin (generated by hubbub-bench report; edit around it) -->\nPEER RESULTS\n<!-- results:end -->\n";
    std::fs::write(&md_path, format!("# page\n\n{results_section}")).expect("write page");
    let status = Command::new(env!("CARGO_BIN_EXE_hubbub-bench"))
        .current_dir(repo_root())
        .args([
            "suite",
            "--size",
            "smoke",
            "--pin",
            "none",
            "--servers",
            "hubbub",
        ])
        .args(["--scenarios", "cluster", "--hubbub-bin"])
        .arg(&bin)
        .arg("--out")
        .arg(&out)
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .arg("--md")
        .arg(&md_path)
        .status()
        .expect("run hubbub-bench suite");
    assert!(status.success(), "suite exited with {status}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("results file")).expect("JSON");
    let md = std::fs::read_to_string(&md_path).expect("page");
    let svg = dir.join("cluster_saturation.svg").exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        v["failures"].as_array().map(Vec::len),
        Some(0),
        "no failures: {}",
        v["failures"]
    );
    for (config, postgres, redis) in CLUSTER_CONFIGS {
        check_fanout(&v, config, "cluster_load");
        check_fanout(&v, config, "cluster_saturation");
        let load = records(&v, config, "cluster_load");
        assert_eq!(load.len(), 1, "{config}: one moderate-load row");
        let r = load[0];
        assert_eq!(
            metric(r, "duplicates"),
            0.0,
            "{config}: nothing twice in {r}"
        );
        assert!(metric(r, "ack_p99_ms") > 0.0, "{config}: acks timed in {r}");
        assert!(
            metric(r, "hubbub_cpu_s") > 0.0,
            "{config}: nodes' CPU in {r}"
        );
        assert_eq!(
            r["m"].get("postgres_cpu_s").is_some(),
            postgres,
            "{config}: {r}"
        );
        assert_eq!(r["m"].get("redis_cpu_s").is_some(), redis, "{config}: {r}");
        if postgres {
            assert!(
                metric(r, "postgres_cpu_s") > 0.0,
                "{config}: backends counted in {r}"
            );
        }
        if metric(r, "nodes") > 1.0 {
            assert!(
                metric(r, "cross_deliveries") > 0.0 && metric(r, "local_deliveries") > 0.0,
                "{config}: deliveries across and within nodes in {r}"
            );
        }
    }
    assert!(md.contains("### Cluster"), "cluster section written:\n{md}");
    assert!(
        md.contains(results_section),
        "peer results left as they were:\n{md}"
    );
    assert!(svg, "cluster_saturation.svg written");
}

/// The search benchmark at its smoke size (5,000 generated messages, 100 queries) against the
/// real binary on SQLite: every query kind was asked and answered with a page of results,
/// and a common word is found. Its numbers mean nothing at this size.
#[test]
fn the_search_benchmark_fills_a_store_and_times_every_query_kind() {
    let Some(bin) = hubbub_bin() else {
        eprintln!("SKIP: no hubbub binary (set HUBBUB_BIN or build the hubbub package first)");
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("hubbub-bench-smoke-{}-search", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("search.json");
    let status = Command::new(env!("CARGO_BIN_EXE_hubbub-bench"))
        .current_dir(repo_root())
        .args(["search", "--size", "smoke", "--pin", "none"])
        .arg("--hubbub-bin")
        .arg(&bin)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .arg("--out")
        .arg(&out)
        .status()
        .expect("run hubbub-bench search");
    assert!(status.success(), "search benchmark exited with {status}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("results")).expect("JSON");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(v["messages"], 5_000);
    let latency = &v["backends"][0]["latency"];
    assert_eq!(v["backends"][0]["backend"], "sqlite");
    let kinds = latency.as_object().expect("latency per kind");
    assert_eq!(kinds.len(), 9, "eight kinds and overall: {latency}");
    for (kind, row) in kinds {
        let count = row["count"].as_u64().unwrap_or(0);
        assert!(count > 0, "{kind} asked: {row}");
        let (p50, p99, max) = (
            row["p50_ms"].as_f64().unwrap_or(-1.0),
            row["p99_ms"].as_f64().unwrap_or(-1.0),
            row["max_ms"].as_f64().unwrap_or(-1.0),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{kind}: {row}");
    }
    assert_eq!(latency["overall"]["count"], 100);
    assert!(
        latency["common"]["mean_results"].as_f64().unwrap_or(0.0) > 1.0,
        "a common word is found: {latency}"
    );
}
