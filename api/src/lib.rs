//! The `ExternalIntegration` API: types, defaults, validation and rendering into the
//! sidecar's config. No I/O happens here, so the operator, its offline CLI and the sidecar's
//! local mode share one definition of what a spec means. The one exception, [`fs`] (a
//! secret source over a folder of files), is compiled only with the `fs` feature.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod bytesize;
pub mod config;
pub mod defaults;
pub mod duration;
#[cfg(feature = "fs")]
pub mod fs;
pub mod global;
pub mod manifest;
pub mod names;
pub mod render;
pub mod secret;
pub mod spec;
pub mod validate;
pub mod webhooks;

pub use config::SidecarConfig;
pub use duration::KubeDuration;
pub use render::{
    render, render_at, RenderError, RenderOptions, Rendered, SecretSource, SourceError,
};
pub use secret::SecretBytes;
pub use spec::{ExternalIntegration, ExternalIntegrationSpec, ExternalIntegrationStatus};
pub use validate::{check_spec, validate_spec, CheckedSpec, FieldError};
