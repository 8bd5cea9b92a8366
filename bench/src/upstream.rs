//! The benchmark's upstream: HTTPS that requires a client certificate and answers every request
//! with a 1 KiB body, as cheaply as hyper allows, so that what is measured is the proxy in front.
//! Two paths stream instead (see `stream`): `/events?n=N&every_ms=M` (server-sent events, each
//! stamped with the time it was sent) and `/bulk?mib=M` (M MiB of event lines, as fast as the
//! reader takes them). Paths under `/cacheable` answer the 1 KiB with `max-age=3600`.
//! Options for the first-call benchmark: HTTP/2 through ALPN, no session resumption, a line per
//! handshake saying whether it resumed, and `/close` paths that end the connection.

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
    Response,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::graceful::GracefulConnection,
};
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::{net::TcpListener, sync::Notify};
use tokio_rustls::TlsAcceptor;

/// Plain HTTP, the same 1 KiB answer: the app that the sidecar's webhook listener forwards to.
pub async fn plain(addr: SocketAddr) -> anyhow::Result<()> {
    let body = Bytes::from(vec![b'x'; 1024]);
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |_req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// How the mTLS upstream behaves beyond the 1 KiB answer (bench/first_call.py uses these).
#[derive(Debug, Clone, Copy, Default)]
pub struct UpstreamOptions {
    /// Offer HTTP/2 through ALPN (and serve it when the client picks it).
    pub h2: bool,
    /// No TLS session resumption: no session cache, no tickets, so every handshake is full.
    pub no_resumption: bool,
    /// Print one line per TLS handshake: `handshake full|resumed VERSION ALPN`.
    pub log_handshakes: bool,
}

/// Serves until the process is killed. Paths under `/close` answer as usual, then close the
/// connection (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY), so that the client's next
/// request needs a new connection.
pub async fn upstream(
    certs: PathBuf,
    addr: SocketAddr,
    opts: UpstreamOptions,
) -> anyhow::Result<()> {
    let read = |n: &str| std::fs::read(certs.join(n)).with_context(|| format!("reading {n}"));
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("ca.crt")?) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let chain =
        CertificateDer::pem_slice_iter(&read("server.crt")?).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(&read("server.key")?)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    cfg.alpn_protocols = if opts.h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    if opts.no_resumption {
        // rustls' defaults keep sessions in memory and send TLS 1.3 tickets naming them.
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
    }
    let acceptor = TlsAcceptor::from(Arc::new(cfg));
    let body = Bytes::from(vec![b'x'; 1024]);
    let listener = TcpListener::bind(addr).await?;
    // The bound address (the caller may have asked for port 0), for scripts and tests to read.
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, body) = (acceptor.clone(), body.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let session = tls.get_ref().1;
            let h2 = session.alpn_protocol() == Some(b"h2");
            if opts.log_handshakes {
                let kind = match session.handshake_kind() {
                    Some(rustls::HandshakeKind::Resumed) => "resumed",
                    _ => "full",
                };
                let version = match session.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                    _ => "TLS?",
                };
                let alpn = if h2 { "h2" } else { "http/1.1" };
                println!("handshake {kind} {version} {alpn}");
            }
            let close = Arc::new(Notify::new());
            let on_close = close.clone();
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (body, on_close) = (body.clone(), on_close.clone());
                async move {
                    if let Some(streamed) = crate::stream::respond(req.uri()) {
                        return Ok::<_, Infallible>(streamed);
                    }
                    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
                    let path = req.uri().path();
                    // `/cacheable...`: the same 1 KiB, which a cache may keep for an hour.
                    if path.starts_with("/cacheable") {
                        resp.headers_mut().insert(
                            http::header::CACHE_CONTROL,
                            http::HeaderValue::from_static("max-age=3600"),
                        );
                    }
                    if path.starts_with("/close") {
                        if req.version() == http::Version::HTTP_2 {
                            on_close.notify_one();
                        } else {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                http::HeaderValue::from_static("close"),
                            );
                        }
                    }
                    Ok(resp)
                }
            });
            let io = TokioIo::new(tls);
            if h2 {
                let conn = http2::Builder::new(TokioExecutor::new()).serve_connection(io, svc);
                let _ = close_when_asked(conn, close).await;
            } else {
                let _ = http1::Builder::new().serve_connection(io, svc).await;
            }
        });
    }
}

/// Drives an HTTP/2 connection; once `close` is notified (an answer to `/close` went out),
/// shuts it down gracefully: GOAWAY, the streams in flight finish, then the socket closes.
async fn close_when_asked<C: GracefulConnection>(
    conn: C,
    close: Arc<Notify>,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => return r,
        _ = close.notified() => conn.as_mut().graceful_shutdown(),
    }
    conn.await
}
