//! `attache-sidecar demo` through the binary (the `demo` feature, on by default).
#![cfg(feature = "demo")]

use std::process::Command;

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attache-sidecar"))
}

#[test]
fn demo_runs_and_reports_what_happened() {
    let out = sidecar()
        .args(["demo", "--requests", "120"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "What the app saw",
        "What the third party saw",
        "What the sidecar did",
        "attache_upstream_attempts_total",
        "requests without valid key       0",
    ] {
        assert!(
            stdout.contains(needle),
            "{needle:?} missing from demo output:\n{stdout}"
        );
    }
    assert_story_adds_up(&stdout);
    // The direct call without a client certificate must fail, and say why.
    assert!(
        stdout.contains(
            "no client certificate:  refused: the third party requires a client certificate"
        ),
        "{stdout}"
    );
}

/// The first line of "In short": the requests outside and during the outage add up to all of
/// them, and so do the successes.
fn assert_story_adds_up(stdout: &str) {
    let line = stdout
        .lines()
        .find(|l| l.contains("payments succeeded:"))
        .unwrap_or_else(|| panic!("no summary line in:\n{stdout}"));
    let n: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [ok, total, ok_outside, outside, ok_during, during] = n[..] else {
        panic!("unexpected summary line: {line}");
    };
    assert_eq!(outside + during, total, "{line}");
    assert_eq!(ok_outside + ok_during, ok, "{line}");
}

#[test]
fn demo_tells_only_the_story_that_happened() {
    let out = sidecar()
        .args(["demo", "--requests", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_story_adds_up(&stdout);
    assert!(
        stdout.contains("1 of 1 payments succeeded: 1 of 1 outside the outage, 0 of 0 during it"),
        "{stdout}"
    );
    assert!(
        stdout.contains("The run ended before the outage"),
        "{stdout}"
    );
    for untrue in ["circuit opened", "The 429", "retried 1 payment"] {
        assert!(
            !stdout.contains(untrue),
            "{untrue:?} did not happen:\n{stdout}"
        );
    }
}
