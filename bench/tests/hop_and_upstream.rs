//! The floor's hop and the upstream's first-call options, run as processes: `hop` in front of
//! `upstream --plain`, and `upstream --log-handshakes` (with and without `--no-resumption`)
//! behind the load client asking for `/close`, so that every request needs a new connection.

use std::path::Path;

use serde_json::Value;

mod support;

use support::{mtls_args, pki, Server};

/// The load client's report; the test fails with its stderr when it does not run.
fn load(args: &[String]) -> Value {
    support::load(args).unwrap_or_else(|e| panic!("load failed: {e}"))
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
    load_args.extend(mtls_args(pki));
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
