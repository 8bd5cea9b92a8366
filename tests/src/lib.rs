#![forbid(unsafe_code)]
//! Test kit for Attaché's end-to-end tests: a throwaway PKI, a scriptable fault-injecting
//! upstream, a harness for our binaries, and small HTTP client helpers. Everything uses real
//! sockets and real TLS, so tests exercise what production does.

pub mod client;
pub mod pki;
pub mod process;
pub mod redis;
pub mod resilience_harness;
pub mod sidecar;
pub mod upstream;
pub mod webhooks;

pub use client::{get, send, HttpClient, Response};
pub use pki::{init_crypto, write_file, CertPair, TestCa};
pub use process::{bin_path, free_port, free_port_range, free_ports, wait_http_ok, Proc};
pub use redis::RedisServer;
pub use sidecar::{
    assert_no_failures, assert_sidecar_error_for, ca_bundle_ref, metric_value, render_volume,
    write_atomic, xint, ConfigDir, LocalSetup, SecretFiles, Sidecar, TempDir, Traffic,
};
pub use upstream::{Action, Observed, Upstream, UpstreamBuilder};
