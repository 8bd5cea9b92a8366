//! Attaché's egress sidecar: on localhost, it takes an app's plain HTTP requests to a third
//! party and forwards them with TLS/mTLS, credentials and resilience policies added.
//! ARCHITECTURE.md at the repository's root walks through a request, and lists each name
//! the README promises (codes, headers, metrics) with the module that defines it.
//!
//! Map (lower layers last; `upstream`, `credentials` and `resilience` never import `proxy`):
//!
//! - `main`, [`cli`]: arguments; [`app`]: starts the listeners, the reload loop and the admin
//!   endpoint, and stops them on SIGTERM; [`admin`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`config`]: where configs come from (`dir`: the operator's rendered folders, `local`:
//!   manifests + a secrets folder) and `watch`, which notices their changes.
//! - [`integration`]: one integration ready to serve (config, client, credentials, policies,
//!   metrics), and the `Snapshot` of all of them that a reload swaps whole.
//! - [`proxy`]: the app-facing side: `listener` and `connections` (accept, limits), routing,
//!   `request_path` (`forward`: the steps in order), `prepare`, `attempt`, `respond`,
//!   `headers` (hygiene) and `errors` (the one place errors become responses).
//! - [`resilience`]: per-integration policy state and pure decisions: `breaker`, `ratelimit`
//!   (limit + provider holds), `bulkhead`, `budget`, `retry` (the `Retrying` state machine),
//!   `backoff`, `retry_after`, `replay` (the replay buffer), `tokens` (an LLM token budget).
//! - [`cache`]: `spec.cache`, stored GET/HEAD answers (RFC 9111 rules from
//!   `http-cache-semantics`), bounded by bytes.
//! - [`llm`]: LLM providers: token usage read from streaming answers, request estimates,
//!   the providers' limit headers.
//! - [`credentials`]: header, query and OAuth2 client-credentials injection (`oauth2`: the
//!   token cache).
//! - [`upstream`]: connections to the third party: `connector` (TCP + TLS), `tls` (rustls
//!   config), `pool` (kept-alive connections), `failure` (what a failed attempt means).
//! - [`webhooks`]: the inbound side: the third party's signed callbacks, verified (`verify`,
//!   one module per provider), checked for replays (`replay`) and forwarded to the app.
//! - [`explain`]: `attache-sidecar explain`, what would be sent for one request.
//! - [`telemetry`]: the access log, traces (W3C `traceparent`, OTLP export) and the trust
//!   boundary for trace headers toward the third party.
//! - [`metrics`]: the Prometheus families and the per-integration handle with typed labels.
//! - [`body`], [`clock`]: the body type and overflow-free deadlines.
//! - `demo`: `attache-sidecar demo`, the whole data path against a local flaky third party
//!   (the `demo` feature, on by default).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admin;
pub mod app;
pub mod body;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
#[cfg(feature = "demo")]
pub mod demo;
pub mod explain;
pub mod integration;
pub mod llm;
pub mod metrics;
pub mod proxy;
pub mod resilience;
pub mod telemetry;
pub mod upstream;
pub mod webhooks;

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
