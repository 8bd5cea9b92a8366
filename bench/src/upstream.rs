//! The benchmark's upstream: HTTPS that requires a client certificate and answers every request
//! with a 1 KiB body, as cheaply as hyper allows, so that what is measured is the proxy in front.
//! Two paths stream instead (see `stream`): `/events?n=N&every_ms=M` (server-sent events, each
//! stamped with the time it was sent) and `/bulk?mib=M` (M MiB of event lines, as fast as the
//! reader takes them). Paths under `/cacheable` answer the 1 KiB with `max-age=3600`.

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{server::conn::http1, service::service_fn, Response};
use hyper_util::rt::TokioIo;
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
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

/// Serves until the process is killed.
pub async fn upstream(certs: PathBuf, addr: SocketAddr) -> anyhow::Result<()> {
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
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
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
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let body = body.clone();
                async move {
                    if let Some(streamed) = crate::stream::respond(req.uri()) {
                        return Ok::<_, Infallible>(streamed);
                    }
                    let mut resp = Response::new(Full::new(body).map_err(|e| match e {}).boxed());
                    // `/cacheable...`: the same 1 KiB, which a cache may keep for an hour.
                    if req.uri().path().starts_with("/cacheable") {
                        resp.headers_mut().insert(
                            http::header::CACHE_CONTROL,
                            http::HeaderValue::from_static("max-age=3600"),
                        );
                    }
                    Ok(resp)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
