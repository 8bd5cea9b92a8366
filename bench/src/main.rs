//! `attache-bench`: the fixed parts of the benchmark in bench/run.py.
//!
//! - `pki --out DIR`: a CA, a server certificate for localhost and a client certificate.
//! - `upstream --certs DIR --addr A`: HTTPS requiring the client certificate, 1 KiB answers
//!   (`--plain`: plain HTTP; `--h2`, `--no-resumption`, `--log-handshakes`: see `upstream`).
//! - `hop --listen A --upstream B`: the floor, one bare hyper hop (plain HTTP both sides).
//! - `load --url U [--rate R]`: the load client (warm keep-alive connections, even pacing,
//!   HDR latencies), one JSON report on stdout.
#![forbid(unsafe_code)]

mod hop;
mod load;
mod pki;
mod stream;
mod upstream;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

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
    /// Serve 1 KiB bodies over mTLS (or plain HTTP with --plain).
    Upstream {
        #[arg(long, required_unless_present = "plain")]
        certs: Option<PathBuf>,
        /// Plain HTTP, no TLS: the app behind the sidecar's webhook listener.
        #[arg(long)]
        plain: bool,
        #[arg(long, default_value = "127.0.0.1:18443")]
        addr: SocketAddr,
        /// Worker threads of the upstream's runtime.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Offer HTTP/2 through ALPN as well as HTTP/1.1.
        #[arg(long, conflicts_with = "plain")]
        h2: bool,
        /// Refuse TLS session resumption (no session cache, no tickets): every handshake is full.
        #[arg(long, conflicts_with = "plain")]
        no_resumption: bool,
        /// Print `handshake full|resumed VERSION ALPN` for every TLS handshake.
        #[arg(long, conflicts_with = "plain")]
        log_handshakes: bool,
    },
    /// The floor: a bare hyper hop, plain HTTP in and out, one current-thread runtime.
    Hop {
        #[arg(long, default_value = "127.0.0.1:18003")]
        listen: SocketAddr,
        /// A plain HTTP upstream (`upstream --plain`).
        #[arg(long)]
        upstream: SocketAddr,
    },
    /// Load a target and print latency percentiles and throughput as JSON.
    Load(load::LoadArgs),
    /// Read a stream through a target: per-event latency (`/events`) or throughput (`/bulk`).
    Stream(stream::StreamArgs),
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().cmd {
        Cmd::Pki { out } => pki::write(&out),
        Cmd::Upstream {
            certs,
            plain,
            addr,
            threads,
            h2,
            no_resumption,
            log_handshakes,
        } => {
            let opts = upstream::UpstreamOptions {
                h2,
                no_resumption,
                log_handshakes,
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            match certs {
                Some(certs) if !plain => rt.block_on(upstream::upstream(certs, addr, opts)),
                _ => rt.block_on(upstream::plain(addr)),
            }
        }
        Cmd::Hop { listen, upstream } => hop::run(listen, upstream),
        Cmd::Load(args) => {
            let report = load::run(args)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Cmd::Stream(args) => {
            let report = stream::run(args)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
