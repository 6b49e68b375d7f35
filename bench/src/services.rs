//! The services the cluster scenario runs hubbub on: a private PostgreSQL and a private Redis,
//! started with the project's own scripts (`scripts/pg.sh`, `scripts/redis.sh`: own data
//! directory and loopback port, no system service), pinned and prioritised like the servers,
//! and stopped through the same scripts, which signal exactly the PIDs in their PID files.
//!
//! Their PIDs are read from those PID files so that their CPU time can be counted with the
//! hubbub nodes' (PostgreSQL's backends are found at each sample as the postmaster's children).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::servers::ServerPaths;

/// The newest installed PostgreSQL's binaries, as scripts/pg.sh picks them.
fn postgres_bin() -> Option<PathBuf> {
    let mut bins: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, e.path().join("bin")))
        })
        .collect();
    bins.sort();
    bins.pop().map(|(_, bin)| bin)
}

/// Which of the two services a script starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Postgres,
    Redis,
}

impl Kind {
    fn script(self) -> &'static str {
        match self {
            Kind::Postgres => "pg.sh",
            Kind::Redis => "redis.sh",
        }
    }

    /// The PID file the script's server writes, relative to its directory.
    fn pid_file(self) -> &'static str {
        match self {
            Kind::Postgres => "data/postmaster.pid",
            Kind::Redis => "redis.pid",
        }
    }
}

/// A running private service: stopped (by its script, by PID) when dropped.
pub struct Service {
    kind: Kind,
    script: PathBuf,
    dir: PathBuf,
    /// The URL the script printed (`postgres://postgres@127.0.0.1:PORT/hubbub`,
    /// `redis://127.0.0.1:PORT`).
    pub url: String,
    /// The server's PID (PostgreSQL: the postmaster; its backends are its children).
    pub pid: u32,
    stopped: bool,
}

impl Service {
    /// Start `kind` with its script from `scripts_dir` in a fresh directory under `work_dir`,
    /// through `paths`' launcher (so it runs on the servers' core at their niceness).
    pub fn start(
        kind: Kind,
        paths: &ServerPaths,
        scripts_dir: &Path,
        work_dir: &Path,
    ) -> Result<Service> {
        let script = scripts_dir.join(kind.script());
        if !script.exists() {
            bail!("{} is missing", script.display());
        }
        let dir = work_dir.join(kind.script().trim_end_matches(".sh"));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let out = launched(paths, &script)
            .arg("start")
            .arg(&dir)
            .output()
            .with_context(|| format!("run {} start", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut service = Service {
            kind,
            script,
            dir,
            url,
            pid: 0,
            stopped: false,
        };
        // From here on a failure still stops the server (Drop).
        service.pid = read_pid(&service.dir.join(kind.pid_file()))?;
        Ok(service)
    }

    /// A fresh, empty database on this PostgreSQL, and its URL: each cluster configuration
    /// starts from no history.
    pub fn fresh_database(&self, name: &str) -> Result<String> {
        if self.kind != Kind::Postgres {
            bail!("only PostgreSQL has databases");
        }
        let (base, _) = self
            .url
            .rsplit_once('/')
            .context("PostgreSQL URL without a database")?;
        let port = base
            .rsplit_once(':')
            .map(|(_, p)| p)
            .context("PostgreSQL URL without a port")?;
        let psql = postgres_bin()
            .map(|b| b.join("psql"))
            .unwrap_or_else(|| PathBuf::from("psql"));
        let out = Command::new(psql)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                port,
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .output()
            .context("run psql")?;
        if !out.status.success() {
            bail!(
                "CREATE DATABASE {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(format!("{base}/{name}"))
    }

    /// Stop the server through its script (which signals the PID in its PID file and waits).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let status = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!(
                "[bench] {} stop failed for {} (PID {})",
                self.script.display(),
                self.dir.display(),
                self.pid
            );
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `bash SCRIPT` behind the servers' launcher (`nice -n N taskset -c C`).
fn launched(paths: &ServerPaths, script: &Path) -> Command {
    let launcher = paths.launcher();
    let mut cmd = match launcher.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg("bash");
            c
        }
        None => Command::new("bash"),
    };
    cmd.arg(script);
    cmd
}

/// The PID on the first line of a PID file.
fn read_pid(path: &Path) -> Result<u32> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no PID in {}", path.display()))
}
