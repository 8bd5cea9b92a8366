//! The names the controller and the admission webhook share, and that users, dashboards and
//! scripts see (README, "Install with Helm" and "Your first integration"; ARCHITECTURE.md lists where each is defined).
//!
//! The webhook writes some of them on every pod it injects and the controller reads them back
//! (it counts the pods of each integration by them); the controller generates the objects
//! `attache-NAME` that the webhook mounts into pods. Defined once here so the two cannot drift
//! apart, and so neither side imports the other.

/// The name of an integration's generated ConfigMap and Secret: `attache-NAME`.
pub fn generated_name(integration: &str) -> String {
    format!("{GENERATED_NAME_PREFIX}{integration}")
}

/// What [`generated_name`] puts before the integration's name.
pub const GENERATED_NAME_PREFIX: &str = "attache-";

/// Label on everything the operator generates; the controller's watches select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`], and the controller's name in Events.
pub const MANAGED_BY: &str = "attache-operator";
/// Label naming the integration an object was generated for.
pub const INTEGRATION_LABEL: &str = "attache.dev/integration";

/// The field manager of every write the controller makes: the generated objects and the
/// integrations' status, all server-side applied.
pub const FIELD_MANAGER: &str = "attache-operator";

/// Label on every injected pod, value `"true"`.
pub const INJECTED_LABEL: &str = "attache.dev/injected";
/// Annotation on every injected pod: its integrations, sorted, comma-separated.
pub const INJECTED_INTEGRATIONS_ANNOTATION: &str = "attache.dev/injected-integrations";

/// The app's environment: the HTTP proxy listener's URL.
pub const PROXY_URL_ENV: &str = "ATTACHE_PROXY_URL";
/// The app's environment: `ATTACHE_<NAME>_URL`, an integration's listener URL (shared with the
/// sidecar's local mode, which prints it).
pub use attache_api::config::url_env_name;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones() {
        assert_eq!(generated_name("stripe"), "attache-stripe");
        assert_eq!(url_env_name("bank-api"), "ATTACHE_BANK_API_URL");
        assert_eq!(MANAGED_BY_LABEL, "app.kubernetes.io/managed-by");
        assert_eq!(INJECTED_LABEL, "attache.dev/injected");
    }
}
