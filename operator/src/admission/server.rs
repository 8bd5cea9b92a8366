//! The webhook's HTTPS server: `POST /mutate` (AdmissionReview v1), `GET /healthz`,
//! `GET /readyz`.
//!
//! TLS is rustls with the certificate taken from a [`CertResolver`] at every handshake, so a
//! renewed certificate is served without a restart. HTTP/1.1 and HTTP/2 (the API server uses
//! either). Each admission is answered from memory ([`ClusterView`]).

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::{future::BoxFuture, FutureExt};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use kube::Client;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::{
    certs::{dir, CertResolver},
    metrics::AdmissionMetrics,
    options::{NativeSidecars, WebhookArgs},
    review::review,
    settings::{native_sidecars_supported, InjectorSettings},
    view::{ClusterView, KubeView},
};

/// Largest AdmissionReview accepted (the API server's own request limit is 3 MiB; the review
/// carries the object twice at most).
const MAX_BODY: usize = 16 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, how long open connections may take to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the server needs; cheap to share.
#[derive(Clone)]
pub struct WebhookServer {
    pub settings: Arc<InjectorSettings>,
    pub view: Arc<dyn ClusterView>,
    pub certs: Arc<CertResolver>,
    pub metrics: AdmissionMetrics,
}

/// What stops the webhook.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid webhook option {0}")]
    Option(String),
    #[error("cannot run the webhook's thread: {0}")]
    Thread(#[source] std::io::Error),
}

// === impl WebhookServer ===

impl WebhookServer {
    /// Ready to answer admissions: caches synced and a certificate to present.
    pub fn is_ready(&self) -> bool {
        self.view.is_ready() && self.certs.has_certificate()
    }

    /// Serves on `listener` until `shutdown` completes, then lets open connections finish.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        let mut tls =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(self.certs.clone());
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        let mut shutdown = std::pin::pin!(shutdown);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admission webhook listening");
        }
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let server = self.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
                let service = service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.handle(req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("admission webhook: connections still open after the drain timeout");
        }
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::POST, "/mutate") => {
                let started = std::time::Instant::now();
                let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                    Ok(b) => b.to_bytes(),
                    Err(e) => {
                        self.metrics.record(super::AdmissionResult::Error);
                        return plain(
                            StatusCode::BAD_REQUEST,
                            format!("cannot read the body: {e}"),
                        );
                    }
                };
                let reviewed = review(&body, self.view.as_ref(), &self.settings);
                self.metrics.record(reviewed.result);
                self.metrics.observe_duration(started.elapsed());
                let status = StatusCode::from_u16(reviewed.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let content_type = if status == StatusCode::OK {
                    "application/json"
                } else {
                    "text/plain; charset=utf-8"
                };
                response(status, content_type, Bytes::from(reviewed.body))
            }
            (&Method::GET, "/healthz") => plain(StatusCode::OK, "ok".into()),
            (&Method::GET, "/readyz") if self.is_ready() => plain(StatusCode::OK, "ok".into()),
            (&Method::GET, "/readyz") => plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: caches not synced or no serving certificate yet".into(),
            ),
            (_, "/mutate") => plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "POST an AdmissionReview".into(),
            ),
            _ => plain(StatusCode::NOT_FOUND, "not found".into()),
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", Bytes::from(text))
}

fn response(status: StatusCode, content_type: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// The webhook inside `attache-operator run`, put together from its options: settings
/// (asking the API server whether native sidecars run, unless told), the caches, the
/// certificate (self-managed or from a directory). [`Webhook::server`] gives the readiness
/// check to the operator's `/readyz`; [`Webhook::serve`] runs it.
pub struct Webhook {
    server: WebhookServer,
    addr: SocketAddr,
    background: Vec<BoxFuture<'static, ()>>,
}

// === impl Webhook ===

impl Webhook {
    pub async fn new(
        client: Client,
        args: &WebhookArgs,
        metrics: AdmissionMetrics,
    ) -> Result<Self, ServeError> {
        let native = match args.native_sidecars {
            NativeSidecars::Always => true,
            NativeSidecars::Never => false,
            NativeSidecars::Auto => detect_native_sidecars(&client).await,
        };
        let settings = args.injector_settings(native).map_err(ServeError::Option)?;
        tracing::info!(native_sidecars = native, image = %settings.image, "sidecar injector settings");
        let certs = Arc::new(CertResolver::default());
        let cert_task: BoxFuture<'static, ()> = match &args.webhook_cert_dir {
            Some(d) => {
                if let Err(e) = dir::load(d, &certs) {
                    tracing::warn!(error = %e, "no serving certificate yet");
                }
                dir::watch(d.clone(), certs.clone(), dir::DEFAULT_POLL).boxed()
            }
            None => args
                .self_managed()
                .run(client.clone(), certs.clone())
                .boxed(),
        };
        let (view, watches) = KubeView::watch(client);
        Ok(Self {
            server: WebhookServer {
                settings: Arc::new(settings),
                view: Arc::new(view),
                certs,
                metrics,
            },
            addr: args.webhook_addr,
            background: vec![cert_task, watches.boxed()],
        })
    }

    pub fn server(&self) -> &WebhookServer {
        &self.server
    }

    /// Serves until `shutdown` completes.
    ///
    /// The HTTPS server runs on a thread and runtime of its own ([`serve_on_own_thread`]);
    /// the watches that keep its caches and the certificate's renewal stay on the caller's.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let addr = self.addr;
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| ServeError::Bind { addr, source })?;
        let served = serve_on_own_thread(self.server, listener, shutdown)?;
        let background = futures::future::join_all(self.background);
        tokio::select! {
            r = served => r,
            _ = background => Ok(()),
        }
    }
}

/// Runs `server` on `listener` on a new thread with a single-threaded runtime, until
/// `shutdown` completes; the returned future gives its result.
///
/// Why: admission sits in the path of every pod creation, and the API server waits for it.
/// On the operator's shared runtime an admission queues behind reconciliations and watch
/// decoding (a burst of them at 10,000 integrations); on its own thread it waits only for
/// other admissions, and the kernel schedules that mostly idle thread promptly.
pub fn serve_on_own_thread(
    server: WebhookServer,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<impl Future<Output = Result<(), ServeError>>, ServeError> {
    let addr = listener.local_addr().map_err(ServeError::Thread)?;
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("admission".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(ServeError::Thread)
                .and_then(|runtime| {
                    runtime.block_on(async move {
                        let listener = TcpListener::from_std(listener)
                            .map_err(|source| ServeError::Bind { addr, source })?;
                        server.run(listener, shutdown).await
                    })
                });
            let _ = done_tx.send(served);
        })
        .map_err(ServeError::Thread)?;
    Ok(async move {
        done.await.unwrap_or_else(|_| {
            Err(ServeError::Thread(std::io::Error::other(
                "the admission thread ended without a result (it panicked)",
            )))
        })
    })
}

/// Runs the admission webhook of `attache-operator run` until `shutdown` completes: HTTPS on
/// `args.webhook_addr`, caches kept by watches, the serving certificate managed or loaded as
/// `args` say. Count admissions in `metrics` (register it in the operator's registry).
pub async fn serve(
    client: Client,
    args: WebhookArgs,
    metrics: AdmissionMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    Webhook::new(client, &args, metrics)
        .await?
        .serve(shutdown)
        .await
}

/// Native sidecars are on by default from Kubernetes 1.29. An API server that cannot be asked
/// (after a few tries) gets the regular-container form, which works everywhere.
async fn detect_native_sidecars(client: &Client) -> bool {
    for attempt in 1..=5 {
        match client.apiserver_version().await {
            Ok(info) => {
                let native = native_sidecars_supported(&info);
                tracing::info!(version = %info.git_version, native, "API server version");
                return native;
            }
            Err(e) => {
                tracing::warn!(attempt, error = %e, "cannot read the API server's version");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    tracing::warn!("assuming no native sidecars: the sidecar will be a regular container");
    false
}
