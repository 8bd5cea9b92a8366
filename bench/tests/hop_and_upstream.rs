//! The floor's hop and the upstream's first-call options, run as processes: `hop` in front of
//! `upstream --plain`, and `upstream --log-handshakes` (with and without `--no-resumption`)
//! behind the load client asking for `/close`, so that every request needs a new connection.

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_attache-bench");

/// An `attache-bench` server on a free port (it prints `listening on ADDR` first), killed on
/// drop; the rest of its stdout stays readable.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: SocketAddr,
}

impl Server {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start attache-bench");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an address");
        Self {
            child,
            stdout,
            addr,
        }
    }

    /// Stops the server and returns what it printed after the listening line.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        rest
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pki() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("pki");
    let status = Command::new(BIN)
        .args(["pki", "--out"])
        .arg(&out)
        .status()
        .expect("run pki");
    assert!(status.success());
    (dir, out)
}

fn load(args: &[String]) -> Value {
    let out = Command::new(BIN)
        .arg("load")
        .args(args)
        .output()
        .expect("run load");
    assert!(
        out.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {report}"))
}

#[test]
fn the_hop_forwards_every_request_to_the_plain_upstream() {
    let upstream = Server::start(&["upstream", "--plain", "--addr", "127.0.0.1:0"]);
    let up = upstream.addr.to_string();
    let hop = Server::start(&["hop", "--listen", "127.0.0.1:0", "--upstream", &up]);
    let url = format!("http://{}/", hop.addr);
    let r = load(&[
        "--url".into(),
        url,
        "--connections".into(),
        "3".into(),
        "--requests".into(),
        "60".into(),
    ]);
    assert_eq!(count(&r, "ok"), 60, "{r}");
    assert_eq!(count(&r, "failed"), 0, "{r}");
}

#[test]
fn the_hop_answers_502_when_the_upstream_is_gone() {
    // A port nothing listens on: bind one, note it, close it.
    let gone = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let hop = Server::start(&["hop", "--listen", "127.0.0.1:0", "--upstream", &gone]);
    let r = load(&[
        "--url".into(),
        format!("http://{}/", hop.addr),
        "--connections".into(),
        "1".into(),
        "--requests".into(),
        "2".into(),
    ]);
    assert_eq!(count(&r, "failed"), 2, "{r}");
    assert_eq!(r["errors"]["status 502"].as_u64(), Some(2), "{r}");
}

/// Five requests to `/close` through the load client (one connection, which it renews after
/// every close with the same TLS client config); returns the upstream's handshake lines.
fn handshakes_of_five_closing_requests(pki: &Path, extra: &[&str]) -> Vec<String> {
    let certs = pki.display().to_string();
    let mut args = vec![
        "upstream",
        "--addr",
        "127.0.0.1:0",
        "--certs",
        &certs,
        "--log-handshakes",
    ];
    args.extend(extra);
    let upstream = Server::start(&args);
    let mut load_args: Vec<String> = [
        "--url",
        &format!("https://localhost:{}/close", upstream.addr.port()),
        "--connections",
        "1",
        "--requests",
        "5",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (flag, file) in [
        ("--cacert", "ca.crt"),
        ("--cert", "client.crt"),
        ("--key", "client.key"),
    ] {
        load_args.push(flag.into());
        load_args.push(pki.join(file).display().to_string());
    }
    let r = load(&load_args);
    assert_eq!(count(&r, "ok"), 5, "{r}");
    upstream.stop().lines().map(str::to_string).collect()
}

#[test]
fn closing_answers_force_new_connections_which_resume_the_session() {
    let (_dir, pki) = pki();
    let lines = handshakes_of_five_closing_requests(&pki, &[]);
    // The warm-up connection, then one new connection per request after the first.
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], "handshake full TLSv1.3 http/1.1", "{lines:?}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l == "handshake resumed TLSv1.3 http/1.1"),
        "{lines:?}"
    );
}

#[test]
fn without_resumption_every_handshake_is_full() {
    let (_dir, pki) = pki();
    let lines = handshakes_of_five_closing_requests(&pki, &["--no-resumption"]);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines.iter().all(|l| l == "handshake full TLSv1.3 http/1.1"),
        "{lines:?}"
    );
}
