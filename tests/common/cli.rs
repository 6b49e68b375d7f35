//! The real `hubbub` binary run as a command that exits (`copy`, `export`, `import`, `migrate`,
//! or a `serve` refused at start), and what its output says: for tests/copy.rs and
//! tests/database_flag.rs.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

use super::free_port;

/// Runs the binary with `args`, stdin from the file `input` (none: empty), its log at `info` on
/// stderr and without a `HUBBUB_DB` of the caller's, and waits for it to exit.
pub fn run_hubbub(args: &[&str], input: Option<&Path>) -> Output {
    let stdin = match input {
        Some(path) => Stdio::from(std::fs::File::open(path).unwrap()),
        None => Stdio::null(),
    };
    Command::new(env!("CARGO_BIN_EXE_hubbub"))
        .args(args)
        .env("HUBBUB_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env_remove("HUBBUB_DB")
        .stdin(stdin)
        .output()
        .unwrap()
}

/// What the run wrote to stdout.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What the run wrote to stderr (its log).
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run succeeded, showing its output otherwise.
pub fn succeeded(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// Asserts the run failed and its log says `expected`.
pub fn failed_saying(output: &Output, expected: &str) {
    let log = stderr(output);
    assert!(!output.status.success(), "expected a failure: {log}");
    assert!(log.contains(expected), "expected {expected:?} in: {log}");
}

/// A PostgreSQL URL with a password, on a loopback port nothing listens on (one just released).
pub struct UnreachablePostgres {
    /// The port in [`UnreachablePostgres::url`].
    pub port: u16,
    /// `postgres://hub:hunter2@127.0.0.1:PORT/chat`.
    pub url: String,
}

impl UnreachablePostgres {
    /// A URL on a port just released.
    pub fn new() -> UnreachablePostgres {
        let port = free_port();
        UnreachablePostgres {
            port,
            url: format!("postgres://hub:hunter2@127.0.0.1:{port}/chat"),
        }
    }

    /// Asserts the run failed saying `what` and then this URL with its password masked, shows
    /// the refused connection as the cause, and never shows the password.
    pub fn assert_refused_naming_it(&self, output: &Output, what: &str) {
        let port = self.port;
        failed_saying(
            output,
            &format!("{what} postgres://hub:***@127.0.0.1:{port}/chat"),
        );
        let log = stderr(output);
        assert!(
            log.contains("Connection refused"),
            "the cause is shown: {log}"
        );
        assert!(
            !log.contains("hunter2"),
            "the password never appears: {log}"
        );
    }
}
