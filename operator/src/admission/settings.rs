//! What the operator decides for every injected sidecar (pods may override some of it with
//! annotations, see [`super`]).

use k8s_openapi::apimachinery::pkg::version::Info;

/// The sidecar image, as the release workflow publishes it (the chart's default too).
pub const DEFAULT_IMAGE: &str = concat!(
    "ghcr.io/attache-dev/attache-sidecar:",
    env!("CARGO_PKG_VERSION")
);
/// The UID the sidecar runs as unless a pod says otherwise (the image's user, distroless
/// `nonroot`).
pub const DEFAULT_RUN_AS_USER: i64 = 65532;

/// Injector settings, the same for every pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorSettings {
    pub image: String,
    /// `Always`, `IfNotPresent`, `Never`; `None` leaves the cluster's default.
    pub image_pull_policy: Option<String>,
    pub resources: SidecarResources,
    /// The sidecar's `ATTACHE_LOG_LEVEL`.
    pub log_level: String,
    /// The sidecar's `ATTACHE_ACCESS_LOG`.
    pub access_log: AccessLog,
    /// The sidecar's `ATTACHE_OTLP_ENDPOINT` (OTLP/HTTP collector); `None`: no traces.
    pub otlp_endpoint: Option<String>,
    /// The cluster runs native sidecars (init containers with `restartPolicy: Always`,
    /// Kubernetes 1.29+); otherwise the sidecar is a regular container placed first.
    pub native_sidecars: bool,
    /// The operator's own namespace, never injected.
    pub operator_namespace: Option<String>,
    pub run_as_user: Option<i64>,
}

/// The sidecar's access log (`attache-sidecar run --access-log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccessLog {
    #[default]
    Off,
    Json,
}

impl AccessLog {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessLog::Off => "off",
            AccessLog::Json => "json",
        }
    }

    /// An annotation's value: `off` or `json`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(AccessLog::Off),
            "json" => Some(AccessLog::Json),
            _ => None,
        }
    }
}

/// An OTLP/HTTP collector URL as the sidecar takes it: `http://HOST[:PORT][/PATH]`.
pub fn is_otlp_endpoint(s: &str) -> bool {
    s.strip_prefix("http://").is_some_and(|rest| {
        let host = rest.split(['/', ':']).next().unwrap_or("");
        !host.is_empty() && !rest.contains(|c: char| c.is_whitespace() || c.is_control())
    })
}

/// The sidecar's resources as Kubernetes quantities; `None` leaves the entry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarResources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

// === impl InjectorSettings ===

impl Default for InjectorSettings {
    fn default() -> Self {
        Self {
            image: DEFAULT_IMAGE.into(),
            image_pull_policy: Some("IfNotPresent".into()),
            resources: SidecarResources::default(),
            log_level: "info".into(),
            access_log: AccessLog::Off,
            otlp_endpoint: None,
            native_sidecars: true,
            operator_namespace: None,
            run_as_user: Some(DEFAULT_RUN_AS_USER),
        }
    }
}

// === impl SidecarResources ===

impl Default for SidecarResources {
    /// Small requests, a memory limit, and no CPU limit: CFS throttling of a proxy shows up as
    /// latency on every call the app makes.
    fn default() -> Self {
        Self {
            cpu_request: Some("10m".into()),
            cpu_limit: None,
            memory_request: Some("32Mi".into()),
            memory_limit: Some("128Mi".into()),
        }
    }
}

/// Whether an API server of this version runs native sidecars by default (the
/// `SidecarContainers` feature is beta and on from 1.29). Managed clusters report minors like
/// `"29+"`; anything unreadable counts as old.
pub fn native_sidecars_supported(version: &Info) -> bool {
    let leading = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (leading(&version.major), leading(&version.minor)) {
        (Some(major), _) if major > 1 => true,
        (Some(1), Some(minor)) => minor >= 29,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            ..Info::default()
        }
    }

    #[test]
    fn native_sidecars_from_1_29_including_managed_minor_suffixes() {
        assert!(!native_sidecars_supported(&info("1", "28")));
        assert!(!native_sidecars_supported(&info("1", "27+")));
        assert!(native_sidecars_supported(&info("1", "29")));
        assert!(native_sidecars_supported(&info("1", "33+")));
        assert!(native_sidecars_supported(&info("2", "0")));
        assert!(!native_sidecars_supported(&info("", "")));
    }
}
