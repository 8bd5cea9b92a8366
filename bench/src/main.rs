//! `attache-bench`: the fixed parts of the benchmark in bench/run.py.
//!
//! - `pki --out DIR`: a CA, a server certificate for localhost and a client certificate.
//! - `upstream --certs DIR --addr A`: HTTPS requiring the client certificate, 1 KiB answers.
//! - `load --url U [--rate R]`: the load client (warm keep-alive connections, even pacing,
//!   HDR latencies), one JSON report on stdout.
#![forbid(unsafe_code)]

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
        } => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .enable_all()
                .build()?;
            match certs {
                Some(certs) if !plain => rt.block_on(upstream::upstream(certs, addr)),
                _ => rt.block_on(upstream::plain(addr)),
            }
        }
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
