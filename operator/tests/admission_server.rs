//! The webhook's HTTPS server end to end: a real TLS client that trusts only the CA bundle (as
//! the API server does), a real AdmissionReview body, HTTP/1.1 and HTTP/2, the metrics.

use std::{sync::Arc, time::SystemTime};

use attache_operator::admission::{
    certs::{CertPolicy, CertResolver},
    AdmissionResult, InjectorSettings, StaticView,
};
use base64::Engine as _;
use serde_json::Value;

mod admission_support;
use admission_support::*;

fn view() -> Arc<StaticView> {
    Arc::new(
        StaticView::default()
            .with_namespace("shop", [])
            .with_integrations("shop", ["stripe", "twilio"]),
    )
}

#[tokio::test]
async fn answers_an_admission_review_over_https() {
    let material = material_at(SystemTime::now(), &CertPolicy::default());
    let certs = serving(&material);
    let mut server = start(view(), certs, InjectorSettings::default()).await;

    let (mut client, _) = connect_h1(server.addr, &material.ca_bundle).await;
    let request = review_value("shop");
    let body = serde_json::to_vec(&request).unwrap();
    let resp = client.send_request(post_mutate(body)).await.unwrap();
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/json"
    );
    let (status, bytes) = body_of(resp).await;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], request["request"]["uid"]);
    assert_eq!(response["allowed"], true);
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = request["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(pod["spec"]["initContainers"][0]["name"], "attache-sidecar");
    assert_eq!(
        pod["metadata"]["annotations"]["attache.dev/injected-integrations"],
        "stripe,twilio"
    );

    // The same connection serves the probes, and refuses what it does not know.
    for (path, want) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/nope", 404),
        ("/mutate", 405),
    ] {
        let (status, _) = send(&mut client, get(path)).await;
        assert_eq!(status, want, "{path}");
    }
    // Garbage in: 400, and the API server applies the failure policy.
    let (status, _) = send(&mut client, post_mutate(b"{\"kind\": 42".to_vec())).await;
    assert_eq!(status, 400);

    assert_eq!(server.metrics.count(AdmissionResult::Injected), 1);
    assert_eq!(server.metrics.count(AdmissionResult::Error), 1);
    server.stop.take().unwrap().send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test]
async fn speaks_http2_when_the_client_offers_it() {
    let material = material_at(SystemTime::now(), &CertPolicy::default());
    let certs = serving(&material);
    let server = start(view(), certs, InjectorSettings::default()).await;
    let mut client = connect_h2(server.addr, &material.ca_bundle).await;
    // Several admissions at once on one HTTP/2 connection, as the API server multiplexes them.
    let mut pending = Vec::new();
    for _ in 0..8 {
        let body = serde_json::to_vec(&review_value("shop")).unwrap();
        pending.push(client.send_request(post_mutate(body)));
    }
    for p in pending {
        let (status, bytes) = body_of(p.await.unwrap()).await;
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(answer["response"]["patch"].is_string());
    }
    assert_eq!(server.metrics.count(AdmissionResult::Injected), 8);
}

#[tokio::test]
async fn without_a_certificate_handshakes_fail() {
    let certs = Arc::new(CertResolver::default());
    let server = start(view(), certs, InjectorSettings::default()).await;
    let material = material_at(SystemTime::now(), &CertPolicy::default());
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(leaf_der(
            &material.ca_bundle,
        )))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let result = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await;
    assert!(result.is_err(), "no certificate, no handshake");
}

/// Admission runs on its own thread: it is answered while the runtime that started it (the
/// operator's, busy with reconciliations at scale) cannot run anything at all.
#[tokio::test(flavor = "current_thread")]
async fn answers_while_the_operators_runtime_is_blocked() {
    let material = material_at(SystemTime::now(), &CertPolicy::default());
    let certs = serving(&material);
    let mut server = start(view(), certs, InjectorSettings::default()).await;

    let (addr, ca) = (server.addr, material.ca_bundle.clone());
    let client = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let answered = async {
                let (mut client, _) = connect_h1(addr, &ca).await;
                let body = serde_json::to_vec(&review_value("shop")).unwrap();
                send(&mut client, post_mutate(body)).await.0
            };
            tokio::time::timeout(std::time::Duration::from_secs(10), answered).await
        })
    });
    // Joining blocks this runtime's only thread until the client has its answer (or gives up).
    let status = client.join().unwrap();
    assert_eq!(
        status,
        Ok(200),
        "no answer while the caller's runtime was blocked"
    );
    assert_eq!(server.metrics.count(AdmissionResult::Injected), 1);
    server.stop.take().unwrap().send(()).unwrap();
    server.task.await.unwrap();
}
