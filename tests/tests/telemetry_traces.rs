//! Traces through the real sidecar (`--otlp-endpoint`), received by an OTLP/HTTP receiver in
//! this test (a small hyper server decoding the protobuf): the app's trace continues, the
//! request span's parent is the app's span, each upstream attempt is a span under it with its
//! number, status, retry reason, rate-gate time and breaker state; a request without a
//! `traceparent` starts a trace; a collector that is down costs spans (counted), not requests.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use attache_tests::{
    free_port, send,
    sidecar::{ca_bundle_ref, xint, LocalSetup},
    TestCa, Upstream,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value::Value as Any,
    trace::v1::Span,
};
use prost::Message;
use serde_json::json;

const APP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const APP_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP receiver: every span POSTed to /v1/traces.
struct Receiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let store = store.clone();
                let svc = service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export =
                            ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                        for rs in export.resource_spans {
                            for ss in rs.scope_spans {
                                store.lock().unwrap().extend(ss.spans);
                            }
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc),
                );
            }
        });
        Receiver { addr, spans }
    }

    /// Waits until at least `n` spans arrived (batches leave the sidecar within about 1 s).
    async fn wait(&self, n: usize) -> Vec<Span> {
        for _ in 0..200 {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= n {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} spans, got {:#?}", self.spans.lock().unwrap());
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn int(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Any::IntValue(v) => Some(*v),
        _ => None,
    }
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attr(span, key)? {
        Any::StringValue(v) => Some(v),
        _ => None,
    }
}

#[tokio::test]
async fn one_span_per_request_and_per_attempt_in_the_apps_trace() {
    let ca = TestCa::new("ca");
    let up = Upstream::ok_with_a_flaky_path(&ca, "/v1/flaky").await;
    let receiver = Receiver::start().await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(
        "api",
        json!({
            "upstream": {"url": up.url()},
            "tls": {"caBundleRef": ca_bundle_ref()},
            "retry": {"backoff": {"base": "5ms", "max": "10ms"}},
        }),
    )]);
    let endpoint = format!("http://{}", receiver.addr);
    let sidecar = setup.start_with(&["--otlp-endpoint", &endpoint]).await;

    let req = Request::get(format!("{}/v1/flaky?k=v", sidecar.url(0)))
        .header("traceparent", format!("00-{APP_TRACE}-{APP_SPAN}-01"))
        .body(Bytes::new())
        .unwrap();
    assert_eq!(send(req).await.unwrap().status, 200);
    let spans = receiver.wait(3).await;
    assert_eq!(
        spans.len(),
        3,
        "one request span and two attempt spans: {spans:#?}"
    );
    for s in &spans {
        assert_eq!(hex(&s.trace_id), APP_TRACE, "the app's trace continues");
    }
    let request = spans
        .iter()
        .find(|s| hex(&s.parent_span_id) == APP_SPAN)
        .expect("the request span's parent is the app's span");
    assert_eq!(text(request, "attache.integration"), Some("api"));
    assert_eq!(
        text(request, "url.path"),
        Some("/v1/flaky"),
        "no query string"
    );
    assert_eq!(int(request, "http.response.status_code"), Some(200));
    assert_eq!(int(request, "attache.attempts"), Some(2));
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id == request.span_id)
        .collect();
    assert_eq!(
        attempts.len(),
        2,
        "one span per attempt, under the request's"
    );
    attempts.sort_by_key(|s| int(s, "attache.attempt"));
    let (first, second) = (attempts[0], attempts[1]);
    assert_eq!(int(first, "attache.attempt"), Some(1));
    assert_eq!(int(first, "http.response.status_code"), Some(503));
    assert_eq!(text(first, "attache.retry_reason"), None);
    assert_eq!(int(second, "attache.attempt"), Some(2));
    assert_eq!(int(second, "http.response.status_code"), Some(200));
    assert_eq!(text(second, "attache.retry_reason"), Some("503"));
    for a in [first, second] {
        assert_eq!(text(a, "attache.circuit_state"), Some("closed"));
        assert!(matches!(
            attr(a, "attache.rate_gate_wait_ms"),
            Some(Any::DoubleValue(_))
        ));
        assert!(a.start_time_unix_nano >= request.start_time_unix_nano);
        assert!(a.end_time_unix_nano <= request.end_time_unix_nano);
    }
    assert!(second.start_time_unix_nano >= first.end_time_unix_nano);

    // No traceparent: a new trace, whose request span is a root.
    receiver.spans.lock().unwrap().clear();
    let resp = send(
        Request::get(format!("{}/v1/items", sidecar.url(0)))
            .body(Bytes::new())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    let spans = receiver.wait(2).await;
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("a root span");
    assert_ne!(hex(&root.trace_id), APP_TRACE);
    assert_eq!(root.trace_id.len(), 16);
    assert!(spans.iter().all(|s| s.trace_id == root.trace_id));
}

#[tokio::test]
async fn a_collector_that_is_down_costs_spans_not_requests() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(
        "api",
        json!({"upstream": {"url": up.url()}, "tls": {"caBundleRef": ca_bundle_ref()}}),
    )]);
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let sidecar = setup.start_with(&["--otlp-endpoint", &endpoint]).await;
    for _ in 0..3 {
        let resp = send(Request::get(sidecar.url(0)).body(Bytes::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, 200);
    }
    let dropped = sidecar
        .wait_metric(
            "attache_telemetry_dropped_total",
            &[("kind", "span")],
            6.0,
            Duration::from_secs(10),
        )
        .await;
    assert!(dropped.is_ok(), "{dropped:?}");
}
