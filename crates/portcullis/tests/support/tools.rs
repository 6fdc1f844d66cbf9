//! Tests that need a program from outside the repository (a browser, `curl`, `openssl`).
//!
//! Nothing skips silently: without the program a local run says so on the terminal, in a
//! `skipped: …` line that the test harness does not swallow, and under CI (the `CI` variable set,
//! as `.ci/run` does) the test fails instead, because CI installs everything the tests look for.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Whether the tests run under CI, where every tool they use must be present.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Whether `program` can be started from `PATH`, the way the tests start it.
pub fn on_path(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether `test` can run: true when nothing is `missing`. Otherwise a local run prints
/// `skipped: <test>: …` and the test returns early; under CI the test fails.
pub fn ready_to_run(test: &str, missing: &[String], install: &str) -> bool {
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(" and ");
    assert!(
        !in_ci(),
        "{test}: {missing} not found; CI must run this test, not skip it ({install}, see .ci/run)"
    );
    // Straight to the process's stderr: the harness captures `eprintln!` output of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: {missing} not found ({install} to run it)"
    );
    false
}

/// [`ready_to_run`] for programs started from `PATH`.
pub fn programs_ready(test: &str, programs: &[&str], install: &str) -> bool {
    let missing: Vec<String> = programs
        .iter()
        .filter(|p| !on_path(p))
        .map(|p| p.to_string())
        .collect();
    ready_to_run(test, &missing, install)
}

/// [`ready_to_run`] for programs started by their absolute path.
pub fn files_ready(test: &str, paths: &[&str], install: &str) -> bool {
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !Path::new(p).is_file())
        .map(|p| p.to_string())
        .collect();
    ready_to_run(test, &missing, install)
}
