//! The binary's command line: bad input is refused with a message naming the problem, before
//! any port is bound.

use std::process::Command;

fn sidecar() -> Command {
    Command::new(env!("CARGO_BIN_EXE_attache-sidecar"))
}

/// `attache-sidecar run --manifest M EXTRA` on ephemeral ports; for runs expected to fail
/// before binding anything.
fn run_manifest(m: &std::path::Path, extra: &[&std::ffi::OsStr]) -> std::process::Output {
    sidecar()
        .args(["run", "--manifest"])
        .arg(m)
        .args(extra)
        .args([
            "--first-port",
            "0",
            "--proxy-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("attache-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn run_without_a_source_explains_the_flags() {
    let out = sidecar().arg("run").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--config-dir") && err.contains("--manifest"),
        "{err}"
    );
}

#[test]
fn invalid_manifest_names_file_and_field() {
    let d = temp_dir("invalid");
    let m = d.join("bad.yaml");
    std::fs::write(
        &m,
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: bad}\n\
         spec:\n  upstream: {url: \"http://plain.example\"}\n",
    )
    .unwrap();
    let out = run_manifest(&m, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("spec.upstream.url"), "{err}");
    assert!(!err.contains("listening"), "no port may be bound: {err}");
}

#[test]
fn missing_secret_is_named() {
    let d = temp_dir("missing");
    let m = d.join("stripe.yaml");
    std::fs::write(
        &m,
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: stripe}\n\
         spec:\n  upstream: {url: \"https://api.stripe.com\"}\n  auth:\n    bearer: {secretKeyRef: {name: stripe-key, key: api-key}}\n",
    )
    .unwrap();
    let out = run_manifest(&m, &["--secrets-dir".as_ref(), d.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("stripe-key") && err.contains("not found"),
        "{err}"
    );
    // Said once, not once per log line and once more per error in the chain.
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        all.matches("Secret \"stripe-key\" not found").count(),
        1,
        "{all}"
    );
}

#[test]
fn a_start_up_error_is_printed_once_with_its_cause_once() {
    let d = temp_dir("once");
    let missing = d.join("nowhere.yaml");
    let out = run_manifest(&missing, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(err.matches("nowhere.yaml").count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
