//! Attaché's egress sidecar: on localhost, it takes an app's plain HTTP requests to a third
//! party and forwards them with TLS/mTLS, credentials and resilience policies added.
//!
//! Map: `config/` (where configs come from, reload), `integration` (one integration ready to
//! serve), `proxy/` (listeners, routing, the request path, error responses), `upstream/`
//! (connections to the third party), `credentials/`, `resilience/` (breaker, limits, retries), `metrics`, `admin`, `app` (start/stop),
//! `demo/` (`attache-sidecar demo`, the `demo` feature, on by default).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
#[cfg(feature = "demo")]
pub mod demo;
pub mod integration;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod upstream;

// The connection pool's tests use the demo's PKI (part of it), also in a build without the demo.
#[cfg(all(test, not(feature = "demo")))]
#[allow(dead_code)]
mod demo {
    pub mod pki;
}

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
