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

/// Local mode names every problem of every manifest in one run, each once, one line each:
/// an unreadable file, a document that cannot be read, an invalid spec beside it, and each
/// missing Secret key of the integrations that are valid.
#[test]
fn local_mode_names_every_problem_of_the_run_at_once() {
    let d = temp_dir("all-at-once");
    let bad = d.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: bad}\n\
         spec:\n  upstream: {url: \"https://bad.example\"}\n  retry: {maxAtempts: 3}\n---\n\
         apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: ftp}\n\
         spec:\n  upstream: {url: \"ftp://files.example\"}\n",
    )
    .unwrap();
    let bank = d.join("bank.yaml");
    std::fs::write(
        &bank,
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: bank}\n\
         spec:\n  upstream: {url: \"https://api.bank.example\"}\n  \
         auth: {bearer: {secretKeyRef: {name: bank-key, key: token}}}\n  \
         tls: {clientCertificate: {secretName: bank-mtls}}\n",
    )
    .unwrap();
    let secrets = d.join("secrets");
    std::fs::create_dir_all(secrets.join("bank-mtls")).unwrap();
    let out = sidecar()
        .args(["run", "--manifest"])
        .arg(&bad)
        .arg("--manifest")
        .arg(&bank)
        .arg("--manifest")
        .arg(d.join("nowhere.yaml"))
        .arg("--secrets-dir")
        .arg(&secrets)
        .args(["--first-port", "0", "--proxy-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "spec.retry.maxAtempts: unknown field",
        "scheme \"ftp\" is not supported",
        "Secret \"bank-key\" not found",
        "Secret \"bank-mtls\" has no key \"tls.crt\"",
        "Secret \"bank-mtls\" has no key \"tls.key\"",
        "nowhere.yaml",
    ] {
        assert_eq!(err.matches(needle).count(), 1, "{needle:?}:\n{err}");
    }
    assert!(
        err.starts_with("attache-sidecar: configuration: 6 problems:"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 7, "one line per problem:\n{err}");
    assert!(!err.contains("listening"), "no port may be bound: {err}");
}

/// A manifest that needs no Secret, for runs that start.
fn plain_manifest(name: &str) -> std::path::PathBuf {
    let d = temp_dir(name);
    let m = d.join("plain.yaml");
    std::fs::write(
        &m,
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: plain}\n\
         spec:\n  upstream: {url: \"https://api.example.com\"}\n",
    )
    .unwrap();
    m
}

/// Starts `attache-sidecar ARGS` and reads its log until a line contains `needle` or it exits;
/// returns what it logged and stops it.
fn log_until(args: &[&std::ffi::OsStr], needle: &str) -> String {
    use std::io::{BufRead, BufReader};
    let mut child = sidecar()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains(needle) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn admin_addr_takes_a_host_name() {
    let m = plain_manifest("admin-host");
    let port = free_port();
    let admin = format!("localhost:{port}");
    let log = log_until(
        &[
            "run".as_ref(),
            "--manifest".as_ref(),
            m.as_os_str(),
            "--first-port".as_ref(),
            "0".as_ref(),
            "--proxy-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--admin-addr".as_ref(),
            admin.as_ref(),
        ],
        "admin (",
    );
    assert!(
        log.contains(&format!(
            "admin (/metrics, /healthz, /readyz) on http://127.0.0.1:{port}"
        )),
        "{log}"
    );
}

/// Local mode keeps its admin endpoints on the machine. Whether port 15090 is free here or
/// not, the sidecar says which address it took (listening, or the address in its error).
#[test]
fn local_mode_admin_listens_on_loopback_by_default() {
    let m = plain_manifest("admin-default");
    let log = log_until(
        &[
            "run".as_ref(),
            "--manifest".as_ref(),
            m.as_os_str(),
            "--first-port".as_ref(),
            "0".as_ref(),
            "--proxy-addr".as_ref(),
            "127.0.0.1:0".as_ref(),
        ],
        "admin",
    );
    assert!(
        log.contains("on http://127.0.0.1:15090")
            || log.contains("cannot listen on 127.0.0.1:15090 for the admin endpoints"),
        "{log}"
    );
    assert!(!log.contains("0.0.0.0"), "{log}");
}

/// A listener whose address is taken fails the start, naming the flag that moves it.
#[test]
fn address_in_use_names_the_flag_that_moves_the_listener() {
    let m = plain_manifest("in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let addr = format!("127.0.0.1:{port}");
    for (flag, args) in [
        (
            "--first-port",
            [
                "--first-port",
                &port,
                "--proxy-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
            ],
        ),
        (
            "--proxy-addr",
            [
                "--first-port",
                "0",
                "--proxy-addr",
                &addr,
                "--admin-addr",
                "127.0.0.1:0",
            ],
        ),
        (
            "--admin-addr",
            [
                "--first-port",
                "0",
                "--proxy-addr",
                "127.0.0.1:0",
                "--admin-addr",
                &addr,
            ],
        ),
    ] {
        let out = sidecar()
            .args(["run", "--manifest"])
            .arg(&m)
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("cannot listen on {addr}")),
            "{flag}: {err}"
        );
        assert!(
            err.contains(&format!("choose another address with {flag}")),
            "{flag}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    drop(taken);
}
