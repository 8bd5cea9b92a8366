//! The plain-HTTP admin listener every replica serves (`--metrics-addr`, :8080):
//! `GET /metrics`, `GET /healthz` (the process is alive), `GET /readyz` (every registered
//! readiness check passes).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::metrics::{self, Metrics};

type Check = Arc<dyn Fn() -> bool + Send + Sync>;

/// Named readiness checks; `/readyz` is 200 when all pass. Clones share the checks.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<(String, Check)>>>,
}

// === impl Readiness ===

impl Readiness {
    /// Adds a check, e.g. the webhook's "serving certificate loaded".
    pub fn add(&self, name: impl Into<String>, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.lock().push((name.into(), Arc::new(check)));
    }

    /// The names of the failing checks.
    pub fn failing(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, check)| !check())
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, Check)>> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.lock().iter().map(|(n, _)| n.clone()).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

/// Binds the admin listener (so a taken port fails the start, before anything else runs).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    readiness: Readiness,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let metrics = metrics.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = respond(&req, &metrics, &readiness);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection");
            }
        });
    }
}

/// Answers one admin request.
pub fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), metrics, readiness)
}

fn route(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match path {
        "/metrics" => match metrics.encode() {
            Ok(body) => {
                let mut r = text(StatusCode::OK, body);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                r
            }
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode metrics\n".into(),
            ),
        },
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let failing = readiness.failing();
            if failing.is_empty() {
                text(StatusCode::OK, "ok\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {}\n", failing.join(", ")),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt;

    use super::*;

    async fn get(path: &str, metrics: &Metrics, readiness: &Readiness) -> (StatusCode, String) {
        let r = route(&Method::GET, path, metrics, readiness);
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn routes() {
        let m = Metrics::new();
        let r = Readiness::default();
        assert_eq!(get("/healthz", &m, &r).await.0, StatusCode::OK);
        assert_eq!(get("/readyz", &m, &r).await.0, StatusCode::OK);
        let (status, body) = get("/metrics", &m, &r).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("attache_operator_leader"), "{body}");
        assert_eq!(get("/nope", &m, &r).await.0, StatusCode::NOT_FOUND);
        assert_eq!(
            route(&Method::POST, "/metrics", &m, &r).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[tokio::test]
    async fn readyz_names_failing_checks() {
        let m = Metrics::new();
        let r = Readiness::default();
        let webhook = Arc::new(AtomicBool::new(false));
        let w = webhook.clone();
        r.add("webhook", move || w.load(Ordering::Relaxed));
        let (status, body) = get("/readyz", &m, &r).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("webhook"));
        webhook.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz", &m, &r).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            Metrics::new(),
            Readiness::default(),
            stopped,
        ));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        stop.send_replace(true);
        server.await.unwrap();
    }
}
