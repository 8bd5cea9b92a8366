//! Slow, idle and too many clients, through the real sidecar (README, "Listeners"):
//! a request head must arrive within `--header-timeout`, idle keep-alive connections
//! close after `--idle-timeout`, each listener holds at most `--max-connections`, and the admin
//! listener keeps answering when the others are full, even at the open-files limit.

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{spec, NAME};
use attache_tests::sidecar::Sidecar;
use attache_tests::{xint, Action, HttpClient, LocalSetup, TestCa, Upstream};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An upstream answering 200 "ok" and a sidecar in front of it, started with `flags`
/// (through `wrapper`, if any).
async fn start(wrapper: &[&str], flags: &[&str]) -> (Upstream, LocalSetup, Sidecar) {
    let ca = TestCa::new("listener limits ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::respond(200, "ok"))
        .start()
        .await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(NAME, spec(&up.url(), json!({})))]);
    let sidecar = setup.start_under(wrapper, flags).await;
    (up, setup, sidecar)
}

/// Reads until the peer closes (EOF or reset) and returns how long that took, or `None` if it
/// was still open after `limit`. Whatever the sidecar sent is discarded.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Sends one complete GET on `stream` and reads its response (head and `content-length`
/// body); returns the status line.
async fn exchange(stream: &mut TcpStream, path: &str) -> String {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response within 10 s")
            .expect("read");
        assert!(
            n > 0,
            "closed before a complete response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text.lines().next().unwrap_or_default().to_string();
            }
        }
    }
}

async fn healthz(sidecar: &Sidecar) -> Result<u16, String> {
    HttpClient::new()
        .with_timeout(Duration::from_secs(2))
        .get(&sidecar.admin_url("/healthz"))
        .await
        .map(|r| r.status)
        .map_err(|e| format!("{e:#}"))
}

#[tokio::test]
async fn a_request_head_must_arrive_within_the_header_timeout() {
    let (_up, _setup, sidecar) =
        start(&[], &["--header-timeout", "1s", "--idle-timeout", "5s"]).await;

    // Slowloris: a header line every 200 ms, never the blank line that ends the head.
    let mut slow = TcpStream::connect(sidecar.addr(0)).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let (mut rd, mut wr) = slow.into_split();
    let dripping = tokio::spawn(async move {
        for i in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if wr
                .write_all(format!("x-drip-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(6), rd.read(&mut buf)).await {
            Err(_) => break None,
            Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    };
    dripping.abort();
    eprintln!("measurement: slow head closed after {closed:?}");
    let closed = closed.expect("a head dripped for 6 s was still being read");
    assert!(closed < Duration::from_secs(3), "closed after {closed:?}");

    // A connection that says nothing at all gets the same bound.
    let mut silent = TcpStream::connect(sidecar.addr(0)).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(6)).await;
    eprintln!("measurement: silent connection closed after {closed:?}");
    let closed = closed.expect("a silent connection stayed open 6 s");
    assert!(closed >= Duration::from_millis(800) && closed < Duration::from_secs(3));

    // The proxy and admin listeners too.
    for addr in [sidecar.proxy_addr, sidecar.admin_addr] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
        let closed = closed_within(&mut s, Duration::from_secs(6)).await;
        assert!(
            closed.is_some_and(|c| c < Duration::from_secs(3)),
            "{addr}: {closed:?}"
        );
    }
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let (_up, _setup, sidecar) =
        start(&[], &["--header-timeout", "1s", "--idle-timeout", "3s"]).await;
    let mut conn = TcpStream::connect(sidecar.addr(0)).await.unwrap();
    assert_eq!(exchange(&mut conn, "/one").await, "HTTP/1.1 200 OK");
    // Idle for longer than the header timeout: still open, and it serves the next request.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(exchange(&mut conn, "/two").await, "HTTP/1.1 200 OK");
    let closed = closed_within(&mut conn, Duration::from_secs(8)).await;
    eprintln!("measurement: idle keep-alive connection closed after {closed:?}");
    let closed = closed.expect("an idle connection stayed open 8 s");
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_secs(5),
        "closed after {closed:?}, idle timeout 3s"
    );
}

#[tokio::test]
async fn each_listener_holds_at_most_max_connections_and_admin_keeps_answering() {
    let (_up, _setup, sidecar) = start(&[], &["--max-connections", "5"]).await;
    let mut held = Vec::new();
    for i in 0..5 {
        let mut c = TcpStream::connect(sidecar.addr(0)).await.unwrap();
        assert_eq!(
            exchange(&mut c, &format!("/held-{i}")).await,
            "HTTP/1.1 200 OK"
        );
        held.push(c);
    }
    // One more: closed at once, without a response.
    let mut extra = TcpStream::connect(sidecar.addr(0)).await.unwrap();
    let _ = extra
        .write_all(b"GET /extra HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let closed = closed_within(&mut extra, Duration::from_secs(5)).await;
    assert!(
        closed.is_some_and(|c| c < Duration::from_secs(1)),
        "{closed:?}"
    );
    // The others still work, the admin listener answers, and so does the proxy listener.
    assert_eq!(exchange(&mut held[0], "/again").await, "HTTP/1.1 200 OK");
    assert_eq!(healthz(&sidecar).await, Ok(200));
    // A freed slot is taken again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(sidecar.addr(0)).await.unwrap();
        let _ = c
            .write_all(b"GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await {
            if n > 0 {
                assert!(
                    buf.starts_with(b"HTTP/1.1 200"),
                    "{:?}",
                    String::from_utf8_lossy(&buf)
                );
                break;
            }
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sidecar.output().contains("connection limit reached"));
}

#[tokio::test]
async fn admin_keeps_answering_at_the_open_files_limit() {
    // 256 descriptors in all: without a budget, 300 idle app connections exhaust them and the
    // probes can no longer connect.
    let (_up, _setup, mut sidecar) = start(&["prlimit", "--nofile=256:256", "--"], &[]).await;
    let mut conns = Vec::new();
    for _ in 0..300 {
        match TcpStream::connect(sidecar.addr(0)).await {
            Ok(c) => conns.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        assert_eq!(
            healthz(&sidecar).await,
            Ok(200),
            "/healthz with 300 app connections open"
        );
    }
    let metrics = HttpClient::new()
        .with_timeout(Duration::from_secs(2))
        .get(&sidecar.admin_url("/metrics"))
        .await
        .expect("/metrics answers");
    assert_eq!(metrics.status, 200);
    drop(conns);
    // Once the clients are gone, requests are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let resp = HttpClient::new()
            .with_timeout(Duration::from_secs(2))
            .get(&format!("{}/after", sidecar.url(0)))
            .await;
        if resp.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no service after the flood: {resp:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sidecar.try_status().is_none(), "{}", sidecar.output());
}
