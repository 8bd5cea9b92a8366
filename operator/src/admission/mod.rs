//! Sidecar injection: the mutating admission webhook for pods.
//!
//! - [`mutate`]: the pure decision, pod + namespace + its integrations + settings → a JSON patch,
//!   a denial, or nothing to do. Every injection rule the README states lives there.
//! - [`review`]: one AdmissionReview body in, one out (no I/O), built on [`mutate`].
//! - [`view`]: what the webhook knows about the cluster (namespace labels, integrations), read
//!   from in-memory caches kept by watches, so an admission never calls the API server.
//! - [`server`]: the HTTPS server (`POST /mutate`, `GET /healthz`) and [`serve`], its entry point.
//! - [`certs`]: the serving certificate, self-managed (CA + cert in a Secret, caBundle patched
//!   into the MutatingWebhookConfiguration, renewed before expiry) or read from a directory
//!   (cert-manager), hot-swapped into the running server.
//!
//! # Annotations and labels
//!
//! On pods (all optional):
//!
//! | key | value | effect |
//! |---|---|---|
//! | `attache.dev/inject` | `"true"` / `"false"` | opt in / out (overrides the namespace label) |
//! | `attache.dev/integrations` | `"stripe,twilio"` | the integrations the pod may use (default: all of its namespace's) |
//! | `attache.dev/native-sidecar` | `"true"` / `"false"` | force the native (init container) or the regular-container form |
//! | `attache.dev/sidecar-image` | image reference | replace the operator's sidecar image for this pod |
//! | `attache.dev/sidecar-log-level` | e.g. `debug` | the sidecar's `ATTACHE_LOG_LEVEL` |
//! | `attache.dev/access-log` | `"json"` / `"off"` | the sidecar's access log on its stdout (`ATTACHE_ACCESS_LOG`) |
//! | `attache.dev/otlp-endpoint` | `http://HOST:4318` | where the sidecar exports traces (`ATTACHE_OTLP_ENDPOINT`) |
//! | `attache.dev/sidecar-cpu-request` | quantity | resources of the sidecar; `"none"` removes the entry |
//! | `attache.dev/sidecar-cpu-limit` | quantity | |
//! | `attache.dev/sidecar-memory-request` | quantity | |
//! | `attache.dev/sidecar-memory-limit` | quantity | |
//! | `attache.dev/sidecar-run-as-user` | UID, or `"auto"` | the sidecar's `runAsUser` (`auto`: leave it to the image or the platform, e.g. OpenShift) |
//!
//! On namespaces: the label `attache.dev/inject=enabled` opts every pod in.
//!
//! Written by the webhook on every injected pod (a contract with the controller, which counts
//! the pods using each integration by them): the label `attache.dev/injected: "true"` and the
//! annotation `attache.dev/injected-integrations: "a,b"` (sorted names). These, the generated
//! objects' names and the app's environment variables are defined in [`crate::contract`].

pub mod certs;
pub mod metrics;
pub mod mutate;
pub mod options;
mod patch;
pub mod quantity;
pub mod review;
pub mod server;
pub mod settings;
mod sidecar;
pub mod view;

pub use metrics::{AdmissionMetrics, AdmissionResult};
pub use mutate::{mutate, Decision, Injection, PodContext, Skip};
pub use options::WebhookArgs;
pub use server::{serve, serve_on_own_thread, ServeError, Webhook, WebhookServer};
pub use settings::{native_sidecars_supported, AccessLog, InjectorSettings, SidecarResources};
pub use view::{ClusterView, KubeView, StaticView};

/// Pod annotation: `"true"` opts the pod in, `"false"` out.
pub const ANNOTATION_INJECT: &str = "attache.dev/inject";
/// Namespace label: [`NAMESPACE_INJECT_ENABLED`] opts every pod of the namespace in.
pub const LABEL_NAMESPACE_INJECT: &str = "attache.dev/inject";
pub const NAMESPACE_INJECT_ENABLED: &str = "enabled";
/// Pod annotation: comma-separated ExternalIntegration names.
pub const ANNOTATION_INTEGRATIONS: &str = "attache.dev/integrations";
/// Pod annotation: `"true"` / `"false"` overrides whether the sidecar is a native sidecar.
pub const ANNOTATION_NATIVE_SIDECAR: &str = "attache.dev/native-sidecar";
pub const ANNOTATION_SIDECAR_IMAGE: &str = "attache.dev/sidecar-image";
pub const ANNOTATION_SIDECAR_LOG_LEVEL: &str = "attache.dev/sidecar-log-level";
/// Pod annotation: `"json"` / `"off"`, the sidecar's access log.
pub const ANNOTATION_ACCESS_LOG: &str = "attache.dev/access-log";
/// Pod annotation: the OTLP/HTTP collector of the sidecar's traces.
pub const ANNOTATION_OTLP_ENDPOINT: &str = "attache.dev/otlp-endpoint";
pub const ANNOTATION_SIDECAR_CPU_REQUEST: &str = "attache.dev/sidecar-cpu-request";
pub const ANNOTATION_SIDECAR_CPU_LIMIT: &str = "attache.dev/sidecar-cpu-limit";
pub const ANNOTATION_SIDECAR_MEMORY_REQUEST: &str = "attache.dev/sidecar-memory-request";
pub const ANNOTATION_SIDECAR_MEMORY_LIMIT: &str = "attache.dev/sidecar-memory-limit";
pub const ANNOTATION_SIDECAR_RUN_AS_USER: &str = "attache.dev/sidecar-run-as-user";

/// The injected container's name.
pub const SIDECAR_CONTAINER: &str = "attache-sidecar";
/// Where the sidecar reads its integrations: one mounted folder per integration.
pub const CONFIG_ROOT: &str = "/etc/attache/integrations";
/// The first integration's listener; the others follow in name order.
pub const FIRST_PORT: u16 = attache_api::config::ports::FIRST_INTEGRATION;
pub const PROXY_PORT: u16 = attache_api::config::ports::PROXY;
pub const ADMIN_PORT: u16 = attache_api::config::ports::ADMIN;
/// The admin port's name, for Prometheus and for probes.
pub const ADMIN_PORT_NAME: &str = "attache-admin";
/// The webhook listener (inbound webhooks), declared when an integration has `webhooks`.
pub const WEBHOOK_PORT: u16 = attache_api::config::ports::WEBHOOKS;
/// Its port name, for a Service's `targetPort`.
pub const WEBHOOK_PORT_NAME: &str = "attache-webhooks";
/// Integration listeners stop below the proxy port.
pub const MAX_INTEGRATIONS: usize = (PROXY_PORT - FIRST_PORT) as usize;

/// Namespaces that are never injected, whatever they say.
pub const KUBE_SYSTEM: &str = "kube-system";
