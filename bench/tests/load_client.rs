//! The benchmark's load client, run as a process against real servers: the mTLS upstream of
//! `attache-bench upstream`, and small raw HTTP servers that misbehave on purpose.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    thread,
};

use serde_json::Value;

mod support;

use support::{load, mtls_args, pki, Server};

fn n(report: &Value, field: &str) -> f64 {
    report[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} missing in {report}"))
}

#[test]
fn fixed_rate_over_mtls_sends_the_scheduled_number_of_requests() {
    let (_dir, pki) = pki();
    let up = Server::upstream(&pki);
    let url = format!("https://localhost:{}/", up.addr.port());
    let mut args = vec![
        "--url",
        &url,
        "--rate",
        "200",
        "--seconds",
        "1",
        "--warmup",
        "0.2",
        "--connections",
        "4",
    ];
    let tls = mtls_args(&pki);
    args.extend(tls.iter().map(String::as_str));
    let r = load(&args).expect("load runs");
    // 200/s over a 1 s window: the pacer computes every due time from the start, so the count
    // is exact but for the edges of the window.
    let requests = n(&r, "requests");
    assert!((190.0..=210.0).contains(&requests), "requests {requests}");
    assert_eq!(n(&r, "failed"), 0.0, "{r}");
    assert_eq!(n(&r, "ok"), requests);
    let (p50, p99, max) = (n(&r, "p50_us"), n(&r, "p99_us"), n(&r, "max_us"));
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{r}");
}

#[test]
fn request_budget_is_exact_in_the_closed_loop() {
    let (_dir, pki) = pki();
    let up = Server::upstream(&pki);
    let url = format!("https://localhost:{}/", up.addr.port());
    let tls = mtls_args(&pki);
    let mut args = vec!["--url", &url, "--requests", "37", "--connections", "3"];
    args.extend(tls.iter().map(String::as_str));
    let r = load(&args).expect("load runs");
    assert_eq!(n(&r, "requests"), 37.0, "{r}");
    assert_eq!(n(&r, "ok"), 37.0, "{r}");
}

#[test]
fn a_missing_client_certificate_is_a_transport_failure_not_a_success() {
    let (_dir, pki) = pki();
    let up = Server::upstream(&pki);
    let url = format!("https://localhost:{}/", up.addr.port());
    let ca = pki.join("ca.crt").display().to_string();
    // The upstream requires a client certificate: without one, the handshake (TLS 1.3: the
    // first read) fails, and the client must say so rather than report latencies.
    match load(&[
        "--url",
        &url,
        "--requests",
        "3",
        "--connections",
        "1",
        "--cacert",
        &ca,
    ]) {
        Err(stderr) => assert!(!stderr.is_empty()),
        Ok(r) => {
            assert_eq!(n(&r, "ok"), 0.0, "{r}");
            assert!(n(&r, "failed") >= 1.0, "{r}");
        }
    }
}

/// A raw HTTP/1.1 server answering every request with `head` (+ empty body), on a thread.
fn raw_server(head: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut pending = Vec::new();
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => pending.extend_from_slice(&buf[..k]),
                    }
                    while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                        pending.drain(..end + 4);
                        if conn.write_all(head.as_bytes()).is_err() {
                            return;
                        }
                        if head.contains("Connection: close") {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn non_success_statuses_are_failures_by_status() {
    let addr = raw_server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
    let url = format!("http://{addr}/");
    let r = load(&["--url", &url, "--requests", "20", "--connections", "2"]).expect("load runs");
    assert_eq!(n(&r, "failed"), 20.0, "{r}");
    assert_eq!(r["errors"]["status 503"], 20, "{r}");
}

#[test]
fn connections_the_server_closes_are_replaced_without_losing_requests() {
    let addr = raw_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    let url = format!("http://{addr}/");
    let r = load(&["--url", &url, "--requests", "25", "--connections", "2"]).expect("load runs");
    assert_eq!(n(&r, "ok"), 25.0, "{r}");
    assert_eq!(n(&r, "failed"), 0.0, "{r}");
}

#[test]
fn bad_input_is_named() {
    let err = load(&["--url", "ftp://127.0.0.1:1/", "--requests", "1"]).unwrap_err();
    assert!(err.contains("scheme"), "{err}");
    let err = load(&["--url", "https://localhost:1/", "--requests", "1"]).unwrap_err();
    assert!(err.contains("--cacert"), "{err}");
    // Nothing listens on port 1: the error names where it tried to connect.
    let err = load(&["--url", "http://127.0.0.1:1/", "--requests", "1"]).unwrap_err();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    let err = load(&["--url", "http://127.0.0.1:1/", "-H", "no-colon"]).unwrap_err();
    assert!(err.contains("no-colon"), "{err}");
}
