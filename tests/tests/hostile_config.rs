//! Config inputs that are not what they claim, through the real sidecar: a FIFO or an
//! oversized manifest is refused at start with a message naming it (never read until OOM or
//! hung on), a FIFO secret is refused too, and a large unrelated file in the watched folders
//! does not make the idle reload poll expensive.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use attache_tests::resilience_harness::{spec, NAME};
use attache_tests::sidecar::TempDir;
use attache_tests::{bin_path, xint, Action, LocalSetup, Proc, TestCa, Upstream};
use serde_json::json;

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().expect("mkfifo");
    assert!(ok.success());
}

/// `attache-sidecar run ARGS` on free ports; returns its exit status and output, or panics if
/// it is still running after 10 s (it hung).
async fn run_to_exit(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut all: Vec<&std::ffi::OsStr> = vec!["run".as_ref()];
    all.extend_from_slice(args);
    all.extend(
        [
            "--first-port",
            "0",
            "--proxy-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s: &&str| std::ffi::OsStr::new(*s)),
    );
    let mut proc = Proc::spawn(&bin_path("attache-sidecar"), &all);
    match proc.wait_exit(Duration::from_secs(10)).await {
        Some(status) => (status.code().unwrap_or(-1), proc.output()),
        None => panic!("the sidecar did not exit within 10 s:\n{}", proc.output()),
    }
}

#[tokio::test]
async fn a_fifo_or_oversized_manifest_is_refused_at_start() {
    let dir = TempDir::new("hostile-config");
    let fifo = dir.path().join("manifest.yaml");
    mkfifo(&fifo);
    let (code, out) = run_to_exit(&["--manifest".as_ref(), fifo.as_os_str()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("manifest.yaml") && out.contains("not a regular file"),
        "{out}"
    );

    // A valid manifest padded past 1 MiB with a comment.
    let big = dir.path().join("big.yaml");
    let mut text = attache_tests::sidecar::manifest_text(&[xint(
        NAME,
        spec("https://localhost:1", json!({})),
    )]);
    text.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    std::fs::write(&big, text).unwrap();
    let (code, out) = run_to_exit(&["--manifest".as_ref(), big.as_os_str()]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("big.yaml") && out.contains("larger than 1048576 bytes"),
        "{out}"
    );
}

#[tokio::test]
async fn a_fifo_secret_is_refused_not_waited_on() {
    let ca = TestCa::new("hostile config ca");
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(
        NAME,
        json!({
            "upstream": {"url": "https://localhost:1"},
            "auth": {"bearer": {"secretKeyRef": {"name": "tok", "key": "token"}}},
            "tls": {"caBundleRef": attache_tests::ca_bundle_ref()},
        }),
    )]);
    std::fs::create_dir_all(setup.secrets_dir().join("tok")).unwrap();
    mkfifo(&setup.secrets_dir().join("tok").join("token"));
    let mut proc = setup.spawn();
    let status = proc.wait_exit(Duration::from_secs(10)).await;
    let out = proc.output();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test]
async fn a_large_file_in_the_secrets_folder_keeps_the_idle_sidecar_idle() {
    let ca = TestCa::new("hostile config ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::respond(200, "ok"))
        .start()
        .await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(NAME, spec(&up.url(), json!({})))]);
    // 64 MiB nobody references, next to the real secrets.
    std::fs::create_dir_all(setup.secrets_dir().join("backup")).unwrap();
    std::fs::write(
        setup.secrets_dir().join("backup").join("dump"),
        vec![b'x'; 64 << 20],
    )
    .unwrap();
    let sidecar = setup.start().await;
    let before = cpu_seconds(sidecar.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(sidecar.pid()) - before;
    eprintln!("measurement: idle sidecar with a 64 MiB file in its secrets folder: {used:.2} CPU s in 3 s");
    assert!(used < 0.3, "{used:.2} CPU seconds in 3 s of idling");
    let resp = sidecar.get(0, "/still-serving").await;
    assert_eq!(resp.status, 200);
}

#[tokio::test]
async fn local_mode_refuses_unknown_fields_and_bad_names_naming_each() {
    let dir = TempDir::new("strict-manifest");
    let m = dir.path().join("careless.yaml");
    std::fs::write(
        &m,
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\n\
         metadata: {name: \"../../etc/passwd\"}\n\
         spec:\n  upstream: {url: \"https://api.example.com\"}\n\
         \x20 apiKey: {secretKeyRef: {name: k, key: api-key}}\n\
         \x20 retry: {maxAtempts: 5}\n",
    )
    .unwrap();
    let (code, out) = run_to_exit(&["--manifest".as_ref(), m.as_os_str()]).await;
    assert_eq!(code, 1, "{out}");
    for needle in [
        "careless.yaml",
        "metadata.name",
        "spec.apiKey: unknown field",
        "spec.retry.maxAtempts: unknown field",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    assert!(!out.contains("listening"), "nothing may be served:\n{out}");
}
