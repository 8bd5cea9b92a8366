//! TLS origination by the real `attache-sidecar` binary: the app speaks plain HTTP on localhost,
//! the sidecar speaks verified TLS (or mTLS) to an upstream whose certificate comes from a
//! throwaway rcgen CA given as `tls.caBundleRef`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use attache_tests::{
    assert_sidecar_error_for, ca_bundle_ref, xint, Action, LocalSetup, TestCa, Upstream,
};
use bytes::Bytes;
use http::Request;
use serde_json::json;

#[tokio::test]
async fn tls_is_originated_to_an_upstream_trusted_through_ca_bundle_ref() {
    let ca = TestCa::new("private ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    // The same CA also as a ConfigMap (`kind: ConfigMap`), which local mode reads from the
    // same folder.
    setup.secret("ca-configmap", "bundle.pem", &ca.cert_pem);
    setup.manifest(&[
        xint(
            "by-configmap",
            json!({
                "upstream": {"url": format!("{}/cm", up.url())},
                "tls": {"caBundleRef": {"kind": "ConfigMap", "name": "ca-configmap", "key": "bundle.pem"}},
            }),
        ),
        xint(
            "by-secret",
            json!({
                "upstream": {"url": format!("{}/v1", up.url())},
                "tls": {"caBundleRef": ca_bundle_ref(), "minVersion": "1.2"},
            }),
        ),
    ]);
    let sidecar = setup.start().await;

    let req = Request::post(format!("{}/charges?amount=5", sidecar.url(1)))
        .header("content-type", "application/json")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "connection-scoped")
        .header("x-app-header", "kept")
        .body(Bytes::from_static(br#"{"amount":5}"#))
        .unwrap();
    let resp = attache_tests::send(req).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.header("x-attache-attempts"), Some("1"));
    assert!(resp.header("x-attache-error").is_none());
    let echo = resp.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path_and_query"], "/v1/charges?amount=5");
    assert_eq!(echo["body"], r#"{"amount":5}"#);
    assert_eq!(
        echo["headers"]["host"],
        format!("localhost:{}", up.addr().port()),
        "Host is the upstream's, not the sidecar's: {echo}"
    );
    assert_eq!(echo["headers"]["x-app-header"], "kept");
    assert!(
        echo["headers"].get("x-hop").is_none(),
        "a header named by Connection is hop-by-hop: {echo}"
    );
    assert_eq!(echo["client_cert_cn"], serde_json::Value::Null);

    let resp = sidecar.get(0, "/ping").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["path_and_query"], "/cm/ping");
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn an_upstream_certificate_from_an_untrusted_ca_is_upstream_tls() {
    let trusted = TestCa::new("the ca we trust");
    let impostor = TestCa::new("someone else's ca");
    let up = Upstream::echo(&impostor).await;
    let mut setup = LocalSetup::trusting(&trusted);
    setup.manifest(&[xint(
        "strict",
        json!({
            "upstream": {"url": up.url()},
            "tls": {"caBundleRef": ca_bundle_ref()},
        }),
    )]);
    let sidecar = setup.start().await;

    let resp = sidecar.get(0, "/secret-data").await;
    assert_sidecar_error_for(&resp, 502, "upstream_tls", "strict");
    assert_eq!(up.count(), 0, "no request may reach an unverified upstream");
    // The upstream notices the aborted handshake on its own schedule: poll.
    let deadline = Instant::now() + Duration::from_secs(10);
    while up.handshake_failures() == 0 {
        assert!(
            Instant::now() < deadline,
            "the upstream saw no aborted handshake"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The upstream negotiates TLS 1.3 and (unless `http1_only`) HTTP/2, as most real APIs do. In
/// TLS 1.3 the client's handshake completes before the server checks its certificate, so a
/// refusal arrives as an alert on the first read, not as a handshake error: it must still be
/// reported as `upstream_tls`.
async fn mtls_serves_with_the_client_certificate_and_refuses_without(http1_only: bool) {
    let ca = TestCa::new("bank ca");
    let mut builder = Upstream::builder()
        .tls(ca.localhost_cert())
        .require_client_cert(&ca.cert_pem)
        .default_action(Action::echo());
    if http1_only {
        builder = builder.http1_only();
    }
    let up = builder.start().await;
    // A whole-second notAfter, so the expiry metric can be compared exactly.
    let not_after = SystemTime::now() + Duration::from_secs(90 * 86_400);
    let not_after_secs = not_after.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let not_after = UNIX_EPOCH + Duration::from_secs(not_after_secs);
    let client = ca.client_cert_valid_until("attache-payments", not_after);
    let mut setup = LocalSetup::trusting(&ca);
    setup.tls_secret("bank-mtls", &client);
    setup.manifest(&[
        xint(
            "with-cert",
            json!({
                "upstream": {"url": up.url()},
                "tls": {"caBundleRef": ca_bundle_ref(), "clientCertificate": {"secretName": "bank-mtls"}},
            }),
        ),
        xint(
            "without-cert",
            json!({
                "upstream": {"url": up.url()},
                "tls": {"caBundleRef": ca_bundle_ref()},
            }),
        ),
    ]);
    let sidecar = setup.start().await;

    let resp = sidecar.get(0, "/accounts").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["client_cert_cn"], "attache-payments");

    let resp = sidecar.get(1, "/accounts").await;
    assert_sidecar_error_for(&resp, 502, "upstream_tls", "without-cert");
    assert_eq!(
        up.requests().len(),
        1,
        "only the request with a client certificate was served"
    );

    let expiry = sidecar
        .metric(
            "attache_client_certificate_expiry_timestamp_seconds",
            &[("integration", "with-cert")],
        )
        .await;
    assert_eq!(expiry, Some(not_after_secs as f64));
}

#[tokio::test]
async fn mtls_upstream_serves_with_the_client_certificate_and_refuses_without() {
    mtls_serves_with_the_client_certificate_and_refuses_without(false).await;
}

#[tokio::test]
async fn mtls_upstream_over_http1_serves_with_the_client_certificate_and_refuses_without() {
    mtls_serves_with_the_client_certificate_and_refuses_without(true).await;
}

#[tokio::test]
async fn min_version_and_server_name_are_honoured() {
    let ca = TestCa::new("ca");
    // Offers TLS 1.2 only: an integration requiring 1.3 must refuse it.
    let old = Upstream::builder()
        .tls(ca.localhost_cert())
        .tls12_only()
        .default_action(Action::echo())
        .start()
        .await;
    // Its certificate names only api.bank.example: reachable by IP with an SNI override.
    let named = Upstream::builder()
        .tls(ca.server_cert(&["api.bank.example"]))
        .default_action(Action::echo())
        .start()
        .await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[
        xint(
            "a-tls12-ok",
            json!({
                "upstream": {"url": old.url()},
                "tls": {"caBundleRef": ca_bundle_ref(), "minVersion": "1.2"},
            }),
        ),
        xint(
            "b-tls13-only",
            json!({
                "upstream": {"url": old.url()},
                "tls": {"caBundleRef": ca_bundle_ref(), "minVersion": "1.3"},
            }),
        ),
        xint(
            "c-sni",
            json!({
                "upstream": {"url": format!("https://127.0.0.1:{}", named.addr().port())},
                "tls": {"caBundleRef": ca_bundle_ref(), "serverName": "api.bank.example"},
            }),
        ),
        xint(
            "d-no-sni",
            json!({
                "upstream": {"url": format!("https://127.0.0.1:{}", named.addr().port())},
                "tls": {"caBundleRef": ca_bundle_ref()},
            }),
        ),
    ]);
    let sidecar = setup.start().await;
    let get = |i: usize| sidecar.get(i, "/x");

    assert_eq!(get(0).await.status, 200);
    assert_sidecar_error_for(&get(1).await, 502, "upstream_tls", "b-tls13-only");
    assert_eq!(old.count(), 1);

    let resp = get(2).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_sidecar_error_for(&get(3).await, 502, "upstream_tls", "d-no-sni");
    assert_eq!(named.count(), 1);
}

/// An mTLS upstream (TLS 1.3, HTTP/2 unless `http1_only`) that resets a fresh connection after
/// reading the request, then answers: the reset is a `reset` (retried for a GET and a keyed
/// POST, never for an unkeyed POST), not a certificate refusal.
async fn reset_after_the_request_is_a_reset_not_a_tls_refusal(http1_only: bool) {
    let ca = TestCa::new("bank ca");
    let mut builder = Upstream::builder()
        .tls(ca.localhost_cert())
        .require_client_cert(&ca.cert_pem)
        .default_action(Action::respond(200, "ok"));
    if http1_only {
        builder = builder.http1_only();
    }
    let up = builder.start().await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.tls_secret("bank-mtls", &ca.client_cert("attache-payments"));
    setup.manifest(&[xint(
        "bank",
        json!({
            "upstream": {"url": up.url()},
            "tls": {"caBundleRef": ca_bundle_ref(), "clientCertificate": {"secretName": "bank-mtls"}},
            "retry": {"maxAttempts": 3, "backoff": {"base": "5ms", "max": "20ms"},
                      "idempotencyKey": {"header": "Idempotency-Key"}},
            "circuitBreaker": {"consecutiveFailures": 100},
        }),
    )]);
    let sidecar = setup.start().await;
    let metric = |result: &'static str| {
        let s = &sidecar;
        async move {
            s.metric(
                "attache_upstream_attempts_total",
                &[("integration", "bank"), ("result", result)],
            )
            .await
            .unwrap_or(0.0)
        }
    };

    up.script(
        "/accounts",
        vec![
            Action::ResetBeforeResponse,
            Action::respond(200, "accounts"),
        ],
    );
    let resp = sidecar.get(0, "/accounts").await;
    assert_eq!(
        (resp.status, resp.header("x-attache-attempts")),
        (200, Some("2")),
        "{:?} {}",
        resp.headers,
        resp.text()
    );

    // A keyed POST is retried too; an unkeyed one was sent, so it is not.
    up.script(
        "/charges",
        vec![
            Action::ResetBeforeResponse,
            Action::respond(201, "charged"),
            Action::ResetBeforeResponse,
            Action::respond(201, "charged twice?"),
        ],
    );
    let keyed = Request::post(format!("{}/charges", sidecar.url(0)))
        .header("idempotency-key", "pay-1")
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    let resp = attache_tests::send(keyed).await.unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let unkeyed = Request::post(format!("{}/charges", sidecar.url(0)))
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    let resp = attache_tests::send(unkeyed).await.unwrap();
    assert_sidecar_error_for(&resp, 502, "upstream_connect", "bank");
    assert_eq!(up.requests_for("/charges").len(), 3);

    assert_eq!(metric("tls_error").await, 0.0);
    assert_eq!(metric("reset").await, 3.0);
    let retried = sidecar
        .metric(
            "attache_retries_total",
            &[("integration", "bank"), ("reason", "reset")],
        )
        .await;
    assert_eq!(retried, Some(2.0));
}

#[tokio::test]
async fn mtls_reset_after_the_request_is_a_reset_not_a_tls_refusal() {
    reset_after_the_request_is_a_reset_not_a_tls_refusal(false).await;
}

#[tokio::test]
async fn mtls_over_http1_reset_after_the_request_is_a_reset_not_a_tls_refusal() {
    reset_after_the_request_is_a_reset_not_a_tls_refusal(true).await;
}

/// The other side of the same rule: a certificate the upstream does not trust is refused
/// during (TLS 1.2) or right after (TLS 1.3) the handshake, and stays `upstream_tls`.
#[tokio::test]
async fn a_client_certificate_the_upstream_does_not_trust_is_upstream_tls() {
    for http1_only in [false, true] {
        let ca = TestCa::new("bank ca");
        let stranger = TestCa::new("someone else's ca");
        let mut builder = Upstream::builder()
            .tls(ca.localhost_cert())
            .require_client_cert(&ca.cert_pem)
            .default_action(Action::respond(200, "ok"));
        if http1_only {
            builder = builder.http1_only();
        }
        let up = builder.start().await;
        let mut setup = LocalSetup::trusting(&ca);
        setup.tls_secret("bank-mtls", &stranger.client_cert("attache-payments"));
        setup.manifest(&[xint(
            "bank",
            json!({
                "upstream": {"url": up.url()},
                "tls": {"caBundleRef": ca_bundle_ref(), "clientCertificate": {"secretName": "bank-mtls"}},
            }),
        )]);
        let sidecar = setup.start().await;
        let resp = sidecar.get(0, "/accounts").await;
        assert_sidecar_error_for(&resp, 502, "upstream_tls", "bank");
        assert_eq!(up.count(), 0);
    }
}

/// A new upstream connection (here: after the upstream closed the last one, as an idle one is
/// after 55 s) resumes the TLS session the sidecar kept, seen from the upstream's side: no
/// certificate exchange, a cheaper first call. The latencies are printed, not asserted.
#[tokio::test]
async fn a_reconnect_resumes_the_tls_session() {
    let ca = TestCa::new("resumption ca");
    // HTTP/1.1: `Connection: close` ends the connection after each answer.
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .http1_only()
        .default_action(Action::respond(200, "ok").with_header("connection", "close"))
        .start()
        .await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(
        "api",
        json!({"upstream": {"url": up.url()}, "tls": {"caBundleRef": ca_bundle_ref()}}),
    )]);
    let sidecar = setup.start().await;
    let mut took = Vec::new();
    for _ in 0..4 {
        let started = Instant::now();
        let resp = attache_tests::get(&sidecar.url(0)).await.unwrap();
        took.push(started.elapsed());
        assert_eq!(resp.status, 200);
        // Let the closed connection leave the pool before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "measurement: first call on a new connection: full handshake {:?}, resumed {:?}",
        took[0],
        &took[1..]
    );
    assert_eq!(
        up.connection_count(),
        4,
        "every request needed a new connection"
    );
    assert_eq!(
        up.resumed_handshakes(),
        3,
        "every reconnect after the first resumed the session"
    );
}

/// A reload that changes nothing the upstream client is made of (here the API key) keeps
/// the client: the next call goes out on the pooled connection, no new handshake. A reload
/// that does change it (here `timeouts.connect`) gets a new client, whose first call
/// connects again with a full handshake.
#[tokio::test]
async fn a_reload_keeps_pooled_connections_unless_the_tls_inputs_change() {
    let ca = TestCa::new("reload pool ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .http1_only()
        .default_action(Action::respond(200, "ok"))
        .start()
        .await;
    let mut setup = LocalSetup::trusting(&ca);
    let spec = |connect: &str| {
        json!({
            "upstream": {"url": up.url()},
            "auth": {"bearer": {"secretKeyRef": {"name": "key", "key": "token"}}},
            "tls": {"caBundleRef": ca_bundle_ref()},
            "timeouts": {"connect": connect},
        })
    };
    setup.secret("key", "token", "tok-1");
    setup.manifest(&[xint("api", spec("2s"))]);
    let sidecar = setup.start().await;
    let call = |want: &'static str| {
        let url = sidecar.url(0);
        let up = &up;
        async move {
            // The new value reaches the upstream once the reload is done.
            for _ in 0..200 {
                let resp = attache_tests::get(&url).await.unwrap();
                assert_eq!(resp.status, 200);
                let last = up.requests().last().cloned().expect("a request");
                if last.header("authorization") == Some(want) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            panic!("{want} never reached the upstream");
        }
    };
    call("Bearer tok-1").await;
    assert_eq!(up.connection_count(), 1);

    setup.secret("key", "token", "tok-2");
    call("Bearer tok-2").await;
    assert_eq!(
        up.connection_count(),
        1,
        "a reload that only rotated the API key opened a new upstream connection"
    );

    setup.secret("key", "token", "tok-3");
    setup.manifest(&[xint("api", spec("3s"))]);
    call("Bearer tok-3").await;
    assert_eq!(
        up.connection_count(),
        2,
        "a new connect timeout means a new client"
    );
    assert_eq!(
        up.resumed_handshakes(),
        0,
        "a new client has no sessions to resume"
    );
}
