//! `attache-bench`: the fixed parts of the benchmark in bench/run.py.
//!
//! - `pki --out DIR`: a CA, a server certificate for localhost and a client certificate.
//! - `upstream --certs DIR --addr A`: an HTTPS server that requires the client certificate and
//!   answers every request with a 1 KiB body, as cheaply as hyper allows, so that what the
//!   benchmark measures is the proxy in front of it.
#![forbid(unsafe_code)]

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Response};
use hyper_util::rt::TokioIo;
use rustls::{server::WebPkiClientVerifier, RootCertStore, ServerConfig};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Parser)]
#[command(name = "attache-bench")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write ca.crt, server.crt/key, client.crt/key into DIR.
    Pki {
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve 1 KiB bodies over mTLS.
    Upstream {
        #[arg(long)]
        certs: PathBuf,
        #[arg(long, default_value = "127.0.0.1:18443")]
        addr: SocketAddr,
        /// Worker threads of the upstream's runtime.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().cmd {
        Cmd::Pki { out } => pki(&out),
        Cmd::Upstream {
            certs,
            addr,
            threads,
        } => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()?
            .block_on(upstream(certs, addr)),
    }
}

fn pki(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    let pki = attache_sidecar::demo::pki::DemoPki::generate()?;
    for (name, pem) in [
        ("ca.crt", &pki.ca_pem),
        ("server.crt", &pki.server_cert_pem),
        ("server.key", &pki.server_key_pem),
        ("client.crt", &pki.client_cert_pem),
        ("client.key", &pki.client_key_pem),
    ] {
        std::fs::write(out.join(name), pem).with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

async fn upstream(certs: PathBuf, addr: SocketAddr) -> anyhow::Result<()> {
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
    println!("listening on {addr}");
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let (acceptor, body) = (acceptor.clone(), body.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |_req| {
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
