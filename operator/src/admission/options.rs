//! The webhook's command-line options, for `attache-operator run` to flatten into its own.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, ValueEnum};

use super::{
    certs::{self_managed::SelfManaged, CertPolicy},
    quantity,
    settings::{
        is_otlp_endpoint, AccessLog, InjectorSettings, SidecarResources, DEFAULT_IMAGE,
        DEFAULT_RUN_AS_USER,
    },
};

/// Options of the admission webhook (all prefixed `--webhook-` or `--sidecar-`).
#[derive(Debug, Clone, Args)]
#[group(id = "webhook_options")]
pub struct WebhookArgs {
    /// Address of the admission webhook's HTTPS listener (POST /mutate, GET /healthz, /readyz).
    #[arg(long, env = "ATTACHE_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// The operator's namespace: never injected; holds the webhook's Service and Secret.
    #[arg(long, env = "POD_NAMESPACE", default_value = "attache-system")]
    pub webhook_namespace: String,
    /// The webhook's Service (the serving certificate's DNS names).
    #[arg(long, default_value = "attache")]
    pub webhook_service: String,
    /// The Secret holding the self-managed CA and serving certificate.
    #[arg(long, default_value = "attache-webhook-tls")]
    pub webhook_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle the operator keeps.
    #[arg(long, default_value = "attache")]
    pub webhook_configuration: String,
    /// cert-manager mode: serve DIR/tls.crt and DIR/tls.key (reloaded when they change)
    /// instead of managing the certificate and the caBundle.
    #[arg(long, value_name = "DIR", env = "ATTACHE_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// The sidecar image.
    #[arg(long, env = "ATTACHE_SIDECAR_IMAGE", default_value = DEFAULT_IMAGE)]
    pub sidecar_image: String,
    /// The sidecar's imagePullPolicy (Always, IfNotPresent, Never).
    #[arg(long, default_value = "IfNotPresent")]
    pub sidecar_image_pull_policy: String,
    /// The sidecar's log level or tracing filter.
    #[arg(long, default_value = "info")]
    pub sidecar_log_level: String,
    /// The sidecar's access log (one JSON line per request on its stdout): off or json. Pods
    /// override it with the annotation attache.dev/access-log.
    #[arg(long, value_enum, default_value_t = AccessLog::Off)]
    pub sidecar_access_log: AccessLog,
    /// OTLP/HTTP collector the sidecars export traces to (http://HOST:4318); empty: none. Pods
    /// override it with the annotation attache.dev/otlp-endpoint.
    #[arg(long, default_value = "")]
    pub sidecar_otlp_endpoint: String,
    /// The sidecar's CPU request (a quantity, or "none").
    #[arg(long, default_value = "10m")]
    pub sidecar_cpu_request: String,
    /// The sidecar's CPU limit (a quantity, or "none").
    #[arg(long, default_value = "none")]
    pub sidecar_cpu_limit: String,
    /// The sidecar's memory request (a quantity, or "none").
    #[arg(long, default_value = "32Mi")]
    pub sidecar_memory_request: String,
    /// The sidecar's memory limit (a quantity, or "none").
    #[arg(long, default_value = "128Mi")]
    pub sidecar_memory_limit: String,
    /// The sidecar's runAsUser, or "auto" to leave it to the image or platform.
    #[arg(long, default_value_t = DEFAULT_RUN_AS_USER.to_string())]
    pub sidecar_run_as_user: String,
    /// Inject a native sidecar (init container with restartPolicy: Always): "auto" asks the
    /// API server's version (1.29+).
    #[arg(long, value_enum, default_value_t = NativeSidecars::Auto)]
    pub native_sidecars: NativeSidecars,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NativeSidecars {
    Auto,
    Always,
    Never,
}

// === impl WebhookArgs ===

impl WebhookArgs {
    /// The injector settings, once whether the cluster runs native sidecars is known.
    pub fn injector_settings(&self, native_sidecars: bool) -> Result<InjectorSettings, String> {
        let q = |flag: &str, v: &str| -> Result<Option<String>, String> {
            match v.trim() {
                "none" | "" => Ok(None),
                v => quantity::parse(v)
                    .map(|_| Some(v.to_string()))
                    .map_err(|e| format!("--{flag}: {e}")),
            }
        };
        let run_as_user = match self.sidecar_run_as_user.trim() {
            "auto" => None,
            v => match v.parse::<i64>() {
                Ok(uid) if uid > 0 => Some(uid),
                _ => {
                    return Err(format!(
                        "--sidecar-run-as-user: {v:?} is not a non-root UID or \"auto\""
                    ))
                }
            },
        };
        if !["Always", "IfNotPresent", "Never"].contains(&self.sidecar_image_pull_policy.as_str()) {
            return Err(format!(
                "--sidecar-image-pull-policy: {:?} is not Always, IfNotPresent or Never",
                self.sidecar_image_pull_policy
            ));
        }
        Ok(InjectorSettings {
            image: self.sidecar_image.clone(),
            image_pull_policy: Some(self.sidecar_image_pull_policy.clone()),
            resources: SidecarResources {
                cpu_request: q("sidecar-cpu-request", &self.sidecar_cpu_request)?,
                cpu_limit: q("sidecar-cpu-limit", &self.sidecar_cpu_limit)?,
                memory_request: q("sidecar-memory-request", &self.sidecar_memory_request)?,
                memory_limit: q("sidecar-memory-limit", &self.sidecar_memory_limit)?,
            },
            log_level: self.sidecar_log_level.clone(),
            access_log: self.sidecar_access_log,
            otlp_endpoint: match self.sidecar_otlp_endpoint.trim() {
                "" => None,
                url if is_otlp_endpoint(url) => Some(url.to_string()),
                url => {
                    return Err(format!(
                        "--sidecar-otlp-endpoint {url:?}: expected http://HOST:PORT (an OTLP/HTTP collector)"
                    ))
                }
            },
            native_sidecars,
            operator_namespace: Some(self.webhook_namespace.clone()),
            run_as_user,
        })
    }

    /// The self-managed certificate's settings (unused in cert-manager mode).
    pub fn self_managed(&self) -> SelfManaged {
        SelfManaged {
            namespace: self.webhook_namespace.clone(),
            secret_name: self.webhook_secret.clone(),
            service_name: self.webhook_service.clone(),
            webhook_configuration: self.webhook_configuration.clone(),
            policy: CertPolicy::default(),
        }
    }
}

impl Default for WebhookArgs {
    /// The flags' defaults, as `attache-operator run` would see them with none given.
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            args: WebhookArgs,
        }
        Defaults::parse_from(["attache-operator"]).args
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    #[test]
    fn defaults_give_the_documented_settings() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.webhook.webhook_addr.port(), 8443);
        let s = cli.webhook.injector_settings(true).unwrap();
        assert_eq!(s.resources, SidecarResources::default());
        assert_eq!(s.run_as_user, Some(65532));
        assert_eq!(s.operator_namespace.as_deref(), Some("attache-system"));
    }

    #[test]
    fn bad_quantities_are_named_by_flag() {
        let cli = Cli::try_parse_from(["x", "--sidecar-memory-limit", "lots"]).unwrap();
        let e = cli.webhook.injector_settings(true).unwrap_err();
        assert!(e.starts_with("--sidecar-memory-limit"), "{e}");
    }
}
