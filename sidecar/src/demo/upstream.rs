//! The demo's "third party": HTTPS on loopback, requires a client certificate and an API key,
//! and misbehaves on a fixed schedule (errors, slowness, throttling) so that every run shows
//! the same story.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::pki::DemoPki;

/// When the third party is down, counted from its first request.
pub const OUTAGE: std::ops::Range<Duration> =
    Duration::from_millis(2500)..Duration::from_millis(2900);

/// What the fake third party saw.
#[derive(Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub handshakes_rejected: AtomicU64,
    pub failures_served: AtomicU64,
    pub throttles_served: AtomicU64,
    /// Idempotency key → (times seen, times charged). A retried payment shares one key; the
    /// provider charges a key once, like real payment APIs do.
    pub keys: Mutex<HashMap<String, (u32, u32)>>,
    /// Set at the first request: the misbehaviour schedule runs on time since then.
    pub started: std::sync::OnceLock<std::time::Instant>,
}

pub struct DemoUpstream {
    pub addr: SocketAddr,
    pub stats: Arc<UpstreamStats>,
}

/// Starts the fake; `api_key` is the only credential it accepts.
pub async fn start(pki: &DemoPki, api_key: &str) -> anyhow::Result<DemoUpstream> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let chain = CertificateDer::pem_slice_iter(pki.server_cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(pki.server_key_pem.as_bytes())?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(UpstreamStats::default());
    let expected = Arc::new(format!("Bearer {api_key}"));
    let s = stats.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let (stats, expected) = (s.clone(), expected.clone());
            tokio::spawn(async move {
                let tls = match acceptor.accept(tcp).await {
                    Ok(t) => t,
                    Err(_) => {
                        stats.handshakes_rejected.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                let svc = hyper::service::service_fn(move |req| {
                    let (stats, expected) = (stats.clone(), expected.clone());
                    async move { Ok::<_, Infallible>(handle(req, &stats, &expected).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Ok(DemoUpstream { addr, stats })
}

async fn handle(
    req: Request<Incoming>,
    stats: &UpstreamStats,
    expected: &str,
) -> Response<Full<Bytes>> {
    let n = stats.requests.fetch_add(1, Ordering::Relaxed);
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let _ = req.into_body().collect().await;
    if !authorized {
        stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        return reply(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid api key"}"#,
            None,
        );
    }
    let elapsed = stats.started.get_or_init(std::time::Instant::now).elapsed();
    // A fixed schedule: scattered errors and slowness, one throttle, and an outage window.
    let resp = match n {
        _ if OUTAGE.contains(&elapsed) => {
            stats.failures_served.fetch_add(1, Ordering::Relaxed);
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                r#"{"error":"maintenance"}"#,
                None,
            )
        }
        30 => {
            stats.throttles_served.fetch_add(1, Ordering::Relaxed);
            reply(
                StatusCode::TOO_MANY_REQUESTS,
                r#"{"error":"slow down"}"#,
                Some("1"),
            )
        }
        _ if n % 20 == 7 => {
            stats.failures_served.fetch_add(1, Ordering::Relaxed);
            reply(StatusCode::BAD_GATEWAY, r#"{"error":"flaky"}"#, None)
        }
        _ if n % 37 == 5 => {
            tokio::time::sleep(Duration::from_millis(800)).await;
            reply(
                StatusCode::OK,
                r#"{"status":"succeeded","slow":true}"#,
                None,
            )
        }
        _ => {
            tokio::time::sleep(Duration::from_millis(3)).await;
            reply(StatusCode::OK, r#"{"status":"succeeded"}"#, None)
        }
    };
    if let Some(k) = key {
        let mut keys = stats.keys.lock().expect("not poisoned");
        let entry = keys.entry(k).or_default();
        entry.0 += 1;
        if resp.status().is_success() {
            entry.1 += 1;
        }
    }
    resp
}

fn reply(
    status: StatusCode,
    body: &'static str,
    retry_after: Option<&'static str>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().expect("static"),
    );
    if let Some(ra) = retry_after {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, ra.parse().expect("static"));
    }
    r
}
