//! Attaché's egress sidecar: on localhost, it takes an app's plain HTTP requests to a third
//! party and forwards them with TLS/mTLS, credentials and resilience policies added.
//!
//! Map: `config/` (where configs come from, reload), `integration` (one integration ready to
//! serve), `proxy/` (listeners, routing, the request path, error responses), `upstream/`
//! (connections to the third party), `credentials/`, `resilience/` (breaker, limits, retries), `metrics`, `admin`, `app` (start/stop),
//! `demo/`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod app;
pub mod body;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod integration;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod upstream;

/// Installs ring as rustls' process-wide crypto provider (idempotent).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
