//! The trust boundary for trace headers, through the real sidecar: by default the third party
//! never sees the app's `traceparent`, `tracestate` or `baggage`; with
//! `spec.telemetry.propagateTraceContext: true` it gets a `traceparent` in the app's trace
//! whose parent is the sidecar's span for that attempt (a new one per attempt), the app's
//! `tracestate`, and still no `baggage`.

use attache_tests::{
    send,
    sidecar::{ca_bundle_ref, xint, LocalSetup},
    TestCa, Upstream,
};
use bytes::Bytes;
use http::Request;
use serde_json::json;

const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

fn app_request(url: String) -> Request<Bytes> {
    Request::get(url)
        .header("traceparent", format!("00-{APP_TRACE}-{APP_SPAN}-01"))
        .header("tracestate", "acme=internal-tenant-42")
        .header("baggage", "user.id=alice,tenant=acme")
        .body(Bytes::new())
        .unwrap()
}

#[tokio::test]
async fn trace_headers_stay_inside_unless_the_integration_propagates_them() {
    let ca = TestCa::new("ca");
    let up = Upstream::ok_with_a_flaky_path(&ca, "/open/flaky").await;
    let mut setup = LocalSetup::trusting(&ca);
    let spec = |base: &str, telemetry: serde_json::Value| {
        json!({
            "upstream": {"url": format!("{}{base}", up.url())},
            "tls": {"caBundleRef": ca_bundle_ref()},
            "retry": {"backoff": {"base": "5ms", "max": "10ms"}},
            "telemetry": telemetry,
        })
    };
    setup.manifest(&[
        xint("a-closed", spec("/closed", json!({}))),
        xint(
            "b-open",
            spec("/open", json!({"propagateTraceContext": true})),
        ),
    ]);
    let sidecar = setup.start().await;

    let resp = send(app_request(format!("{}/x", sidecar.url(0))))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = up.requests_for("/closed/x");
    assert_eq!(seen.len(), 1);
    for h in ["traceparent", "tracestate", "baggage"] {
        assert!(seen[0].header(h).is_none(), "{h} crossed the boundary");
    }

    let resp = send(app_request(format!("{}/flaky", sidecar.url(1))))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let seen = up.requests_for("/open/flaky");
    assert_eq!(seen.len(), 2, "one retry");
    let mut parents = Vec::new();
    for o in &seen {
        let tp = o.header("traceparent").expect("traceparent propagated");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], APP_TRACE, "the app's trace continues: {tp}");
        assert_ne!(
            parts[2], APP_SPAN,
            "the parent is the sidecar's attempt span: {tp}"
        );
        assert_eq!(parts[3], "01");
        parents.push(parts[2].to_string());
        assert_eq!(o.header("tracestate"), Some("acme=internal-tenant-42"));
        assert!(o.header("baggage").is_none(), "baggage never crosses");
    }
    assert_ne!(parents[0], parents[1], "each attempt is its own span");
}
