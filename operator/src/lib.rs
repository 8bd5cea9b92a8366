//! The Attaché operator as a library: the offline subcommands (`crd`, `validate`, `render`),
//! the controller with its leader election and metrics (`run`), the admission webhook, and the
//! names the two share (`contract`).
//! `main.rs` only parses arguments and maps the
//! result to an exit code, so everything here is testable without spawning the binary.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod admission;
pub mod check;
pub mod cli;
pub mod contract;
pub mod controller;
pub mod crd;
pub mod inject;
pub mod leader;
pub mod manifests;
pub mod metrics;
pub mod rbac;
pub mod render;
pub mod run;
pub mod validate;

/// Installs ring as rustls' process-wide crypto provider (idempotent): kube's client takes
/// the process's provider when it is built. [`cli::execute`] calls it once for every command.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
