//! The Attaché operator as a library: the offline subcommands (`crd`, `validate`, `render`) and,
//! later, the controller and admission webhook. `main.rs` only parses arguments and maps the
//! result to an exit code, so everything here is testable without spawning the binary.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod cli;
pub mod crd;
pub mod manifests;
pub mod render;
pub mod validate;
