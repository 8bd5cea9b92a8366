//! Requests the sidecar must refuse rather than forward with the integration's credentials
//! (TRACE, dot-segments that climb out of the base path, a missing or repeated Host), and the
//! documented limits on header counts, through the real sidecar.

use std::time::Duration;

use attache_tests::resilience_harness::{assert_sidecar_error, Rig};
use attache_tests::{ca_bundle_ref, xint, Action, LocalSetup, TestCa, Upstream};
use bytes::Bytes;
use http::Request;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `raw` (a whole HTTP/1.x request) on a fresh connection; returns the response text.
async fn raw_exchange(addr: std::net::SocketAddr, raw: &str) -> String {
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn trace_is_refused_and_never_reaches_the_upstream() {
    let ca = TestCa::new("hostile ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.secret("k", "api-key", "sk_live_never_echoed");
    setup.manifest(&[xint(
        "api",
        json!({
            "upstream": {"url": up.url()},
            "auth": {"apiKey": {"header": "X-Api-Key", "secretKeyRef": {"name": "k", "key": "api-key"}}},
            "tls": {"caBundleRef": ca_bundle_ref()},
        }),
    )]);
    let sidecar = setup.start().await;
    let req = Request::builder()
        .method("TRACE")
        .uri(format!("{}/debug", sidecar.url(0)))
        .body(Bytes::new())
        .unwrap();
    let resp = attache_tests::send(req).await.unwrap();
    attache_tests::assert_sidecar_error_for(&resp, 400, "bad_request", "api");
    assert!(!resp.text().contains("sk_live"), "{}", resp.text());
    // Through the proxy listener too.
    let raw = format!(
        "TRACE http://localhost:{}/debug HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        up.addr().port(),
        up.addr().port()
    );
    let text = raw_exchange(sidecar.proxy_addr, &raw).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("x-attache-error: bad_request"), "{text}");
    assert_eq!(up.count(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn dot_segments_never_leave_the_base_path() {
    let ca = TestCa::new("hostile ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(
        "api",
        json!({
            "upstream": {"url": format!("{}/v1/tenant-a", up.url())},
            "tls": {"caBundleRef": ca_bundle_ref()},
        }),
    )]);
    let sidecar = setup.start().await;
    for path in [
        "/../tenant-b/accounts",
        "/x/../../tenant-b",
        "/%2e%2e/tenant-b",
        "/%2E%2e/%2e%2e/admin",
        "/..;/tenant-b",
        "/./accounts",
    ] {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let text = raw_exchange(sidecar.addr(0), &raw).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{path}: {text}");
        assert!(
            text.contains("x-attache-error: bad_request"),
            "{path}: {text}"
        );
    }
    assert_eq!(
        up.count(),
        0,
        "nothing reached the upstream: {:?}",
        up.requests()
    );
    // Dots inside names are fine.
    let resp = sidecar.get(0, "/.well-known/a..b/...").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["path_and_query"],
        "/v1/tenant-a/.well-known/a..b/..."
    );
}

#[tokio::test]
async fn a_missing_or_repeated_host_is_400() {
    let rig = Rig::start(Action::respond(200, "ok"), json!({})).await;
    let addr = rig.sidecar.addr(0);
    for (what, raw) in [
        ("no Host", "GET /a HTTP/1.1\r\nConnection: close\r\n\r\n"),
        (
            "two Hosts",
            "GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
        ),
        (
            "invalid Host",
            "GET /a HTTP/1.1\r\nHost: a b@c/\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let text = raw_exchange(addr, raw).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{what}: {text}");
        assert!(
            text.contains("x-attache-error: bad_request"),
            "{what}: {text}"
        );
    }
    assert_eq!(rig.up().count(), 0);
    // HTTP/1.0 may omit it; one Host is fine.
    let text = raw_exchange(addr, "GET /b HTTP/1.0\r\n\r\n").await;
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    let text = raw_exchange(
        addr,
        "GET /c HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test]
async fn header_limits_are_the_documented_ones() {
    for http1_only in [false, true] {
        let ca = TestCa::new("hostile ca");
        let mut b = Upstream::builder()
            .tls(ca.localhost_cert())
            .default_action(Action::respond(200, "ok"));
        if http1_only {
            b = b.http1_only();
        }
        let up = b.start().await;
        let url = up.url();
        let rig = Rig::start_at(ca, Some(up), &url, json!({"retry": {"maxAttempts": 1}})).await;
        let addr = rig.sidecar.addr(0);
        // A request with more than 100 header fields: 431 from the listener itself.
        let mut raw =
            String::from("GET /many HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for i in 0..101 {
            raw.push_str(&format!("x-h-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        let text = raw_exchange(addr, &raw).await;
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        // Upstream responses with more than 100 header fields.
        for n in [90, 101, 150] {
            let mut many = Action::respond(200, "wide");
            for i in 0..n {
                many = many.with_header(&format!("x-r-{i}"), "v");
            }
            let key = format!("/wide-{n}");
            rig.up().script(&key, vec![many]);
            let text = raw_exchange(
                addr,
                &format!("GET {key} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
            )
            .await;
            let head = text.split("\r\n\r\n").next().unwrap_or_default();
            eprintln!(
                "measurement: http1_only={http1_only} {n} response headers -> {:?}",
                head.lines().next()
            );
            if n <= 100 || !http1_only {
                // HTTP/2 bounds the bytes (16 KiB), not the count.
                assert!(text.starts_with("HTTP/1.1 200"), "{n}: {head}");
                assert!(text.ends_with("wide"), "{n}: {text}");
            } else {
                assert!(text.starts_with("HTTP/1.1 502"), "{n}: {head}");
                assert!(text.contains("x-attache-error: upstream_connect"), "{head}");
                assert!(text.contains("response head is too large"), "{text}");
            }
        }
        // HTTP/2: more than 16 KiB of header fields.
        if !http1_only {
            let big = "v".repeat(2048);
            let mut huge = Action::respond(200, "huge");
            for i in 0..12 {
                huge = huge.with_header(&format!("x-big-{i}"), &big);
            }
            rig.up().script("/huge", vec![huge]);
            let resp = rig.get("/huge").await;
            assert_sidecar_error(&resp, 502, "upstream_connect");
        }
    }
}
