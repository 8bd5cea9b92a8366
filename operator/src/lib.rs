//! The Attaché operator as a library; `main.rs` only parses arguments and maps the result to
//! an exit code, so everything here is testable without spawning the binary. ARCHITECTURE.md
//! at the repository's root walks through the reconcile and admission paths.
//!
//! - [`cli`]: the subcommands and their arguments (`run`, `crd`, `validate`, `render`,
//!   `inject`, `check`); [`run`]: the long-running process (controller, webhook, `/metrics`,
//!   `/healthz`, `/readyz`) and its shutdown.
//! - [`controller`]: reconciles ExternalIntegrations into the generated ConfigMap and Secret,
//!   status, Events and pod counts; [`leader`]: Lease-based leader election.
//! - [`admission`]: the mutating webhook (selection rules, the sidecar and its patch, the
//!   serving certificate in `certs`); [`inject`]: the same mutation offline.
//! - [`contract`]: the names the controller and the webhook share.
//! - [`global`]: Redis for `rateLimit.scope: global` (settings, reachability, condition).
//! - [`render`]: spec + Secrets into sidecar config files; [`validate`]: the CRD's schema and
//!   rules offline; [`manifests`]: reading YAML/JSON inputs; [`crd`]: the CRD, generated.
//! - [`check`]: the health questions `attache-operator check` asks a cluster.
//! - [`rbac`]: every API call the operator makes, as RBAC sees it; [`metrics`]: its families.
//! - [`relisted`]: an index kept from a watch's events (the webhook's and the controller's).
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admission;
pub mod check;
pub mod cli;
pub mod contract;
pub mod controller;
pub mod crd;
pub mod global;
pub mod inject;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod rbac;
pub mod relisted;
pub mod render;
pub mod run;
pub mod validate;

/// Installs ring as rustls' process-wide crypto provider (idempotent): kube's client takes
/// the process's provider when it is built. [`cli::execute`] calls it once for every command.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
