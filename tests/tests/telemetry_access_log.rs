//! `--access-log json` through the real sidecar: one JSON line on stdout per request with
//! the README's fields, for a request answered by the upstream, one retried, one the sidecar
//! answered itself (with its `code`), and one the proxy listener could not route; no header
//! value, query value or credential ever appears in a line; and without the flag, no line.

use std::time::Duration;

use attache_tests::{
    client::send_via_proxy,
    send,
    sidecar::{ca_bundle_ref, xint, LocalSetup, Sidecar},
    TestCa, Upstream,
};
use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};

const QUERY_KEY: &str = "canary-query-credential-7f3a";
const APP_QUERY: &str = "canary-app-query-value-91c2";
const APP_HEADER: &str = "canary-app-header-value-5d0e";
const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The README's fields, in order.
const FIELDS: [&str; 12] = [
    "time",
    "integration",
    "method",
    "path",
    "status",
    "code",
    "attempts",
    "duration_ms",
    "upstream_ms",
    "retry_reasons",
    "trace_id",
    "request_id",
];

async fn start(up: &Upstream, ca: &TestCa, extra: &[&str]) -> (LocalSetup, Sidecar) {
    let mut setup = LocalSetup::trusting(ca);
    setup.secret("vendor-query", "key", QUERY_KEY);
    setup.manifest(&[xint(
        "api",
        json!({
            "upstream": {"url": up.url()},
            "tls": {"caBundleRef": ca_bundle_ref()},
            "auth": {"queryParam": {
                "name": "api_key",
                "secretKeyRef": {"name": "vendor-query", "key": "key"},
            }},
            "retry": {"maxAttempts": 3, "backoff": {"base": "5ms", "max": "20ms"}},
        }),
    )]);
    let sidecar = setup.start_with(extra).await;
    (setup, sidecar)
}

/// The access-log lines in the sidecar's output (its text logs go to stderr, interleaved).
fn access_lines(sidecar: &Sidecar) -> Vec<Value> {
    sidecar
        .output()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("request_id").is_some())
        .collect()
}

/// Waits until `n` lines were written (the writer thread flushes as soon as it is idle).
async fn wait_lines(sidecar: &Sidecar, n: usize) -> Vec<Value> {
    for _ in 0..250 {
        let lines = access_lines(sidecar);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "expected {n} access-log lines; output:\n{}",
        sidecar.output()
    );
}

fn get(url: String) -> Request<Bytes> {
    Request::get(url)
        .header("authorization", format!("Bearer {APP_HEADER}"))
        .header("x-app-note", APP_HEADER)
        .header("traceparent", format!("00-{APP_TRACE}-00f067aa0ba902b7-01"))
        .body(Bytes::new())
        .unwrap()
}

#[tokio::test]
async fn one_line_per_request_with_the_readme_fields_and_nothing_sent_by_the_app() {
    let ca = TestCa::new("ca");
    let up = Upstream::ok_with_a_flaky_path(&ca, "/v1/flaky").await;
    let (_setup, sidecar) = start(&up, &ca, &["--access-log", "json"]).await;
    let base = sidecar.url(0);

    let ok = send(get(format!("{base}/v1/items?user={APP_QUERY}")))
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let retried = send(get(format!("{base}/v1/flaky?user={APP_QUERY}")))
        .await
        .unwrap();
    assert_eq!(retried.status, 200);
    // TRACE is refused by the sidecar before any attempt.
    let refused = send(
        Request::builder()
            .method("TRACE")
            .uri(format!("{base}/v1/echo?user={APP_QUERY}"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let refused_code = refused
        .header("x-attache-error")
        .expect("sidecar error")
        .to_string();
    let unrouted = send_via_proxy(
        sidecar.proxy_addr,
        Request::get(format!("http://unknown.example/v1/x?user={APP_QUERY}"))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    let unrouted_code = unrouted
        .header("x-attache-error")
        .expect("sidecar error")
        .to_string();
    let unrouted_status = unrouted.status;

    let lines = wait_lines(&sidecar, 4).await;
    assert_eq!(lines.len(), 4, "one line per request: {lines:#?}");
    for line in &lines {
        let keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = FIELDS.to_vec();
        expected.sort_unstable();
        let mut got = keys.clone();
        got.sort_unstable();
        assert_eq!(got, expected, "exactly the README's fields: {line}");
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(line["request_id"].as_str().unwrap().len(), 16);
        assert_eq!(line["trace_id"].as_str().unwrap().len(), 32);
    }
    // Nothing the app sent as data, nor the credential, in any line or anywhere in stdout.
    let output = sidecar.output();
    for canary in [QUERY_KEY, APP_QUERY, APP_HEADER, "user=", "api_key"] {
        assert!(!output.contains(canary), "{canary:?} leaked:\n{output}");
    }

    let (ok, retried, refused, unrouted) = (&lines[0], &lines[1], &lines[2], &lines[3]);
    assert_eq!(ok["integration"], "api");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/v1/items");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["code"], Value::Null);
    assert_eq!(ok["attempts"], 1);
    assert_eq!(ok["retry_reasons"], json!([]));
    assert_eq!(ok["trace_id"], APP_TRACE, "the app's trace continues");
    assert!(ok["upstream_ms"].as_f64().unwrap() <= ok["duration_ms"].as_f64().unwrap());

    assert_eq!(retried["path"], "/v1/flaky");
    assert_eq!(retried["status"], 200);
    assert_eq!(retried["attempts"], 2);
    assert_eq!(retried["retry_reasons"], json!(["503"]));
    assert_ne!(retried["request_id"], ok["request_id"]);

    assert_eq!(refused["integration"], "api");
    assert_eq!(refused["method"], "TRACE");
    assert_eq!(refused["code"], refused_code.as_str());
    assert_eq!(refused["attempts"], 0);
    assert_ne!(
        refused["trace_id"], APP_TRACE,
        "no traceparent: a new trace"
    );

    assert_eq!(unrouted["integration"], "");
    assert_eq!(unrouted["path"], "/v1/x");
    assert_eq!(unrouted["status"], u64::from(unrouted_status));
    assert_eq!(unrouted["code"], unrouted_code.as_str());
}

#[tokio::test]
async fn off_by_default() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let (_setup, sidecar) = start(&up, &ca, &[]).await;
    let resp = send(get(format!("{}/v1/items", sidecar.url(0))))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(access_lines(&sidecar).is_empty(), "{}", sidecar.output());
}
