//! The injected `attache-sidecar` container, its volumes, and the per-pod overrides of its
//! settings.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{
    quantity,
    settings::{is_otlp_endpoint, AccessLog, InjectorSettings},
    SidecarResources, ADMIN_PORT, ADMIN_PORT_NAME, ANNOTATION_ACCESS_LOG,
    ANNOTATION_NATIVE_SIDECAR, ANNOTATION_OTLP_ENDPOINT, ANNOTATION_SIDECAR_CPU_LIMIT,
    ANNOTATION_SIDECAR_CPU_REQUEST, ANNOTATION_SIDECAR_IMAGE, ANNOTATION_SIDECAR_LOG_LEVEL,
    ANNOTATION_SIDECAR_MEMORY_LIMIT, ANNOTATION_SIDECAR_MEMORY_REQUEST,
    ANNOTATION_SIDECAR_RUN_AS_USER, CONFIG_ROOT, FIRST_PORT, PROXY_PORT, SIDECAR_CONTAINER,
    WEBHOOK_PORT, WEBHOOK_PORT_NAME,
};
use crate::contract::{generated_name, url_env_name};

/// The sidecar's binary, on the image's PATH.
const SIDECAR_COMMAND: &str = "attache-sidecar";
/// Longest volume name Kubernetes accepts (a DNS label).
const MAX_VOLUME_NAME: usize = 63;
/// An empty volume mounted over the ServiceAccount token's path in the sidecar: the sidecar
/// never calls the Kubernetes API, and Kubernetes mounts the pod's token only into containers
/// that have nothing mounted there (least privilege without touching the app's token).
pub(crate) const NO_TOKEN_VOLUME: &str = "attache-no-api-token";
const SERVICE_ACCOUNT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The volume behind [`NO_TOKEN_VOLUME`]: empty, in memory, never written.
pub(crate) fn no_token_volume() -> Value {
    json!({"name": NO_TOKEN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Ki"}})
}

/// One integration as the pod will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    pub name: String,
    pub port: u16,
    pub env_name: String,
    pub volume_name: String,
}

/// The sidecar's settings for one pod: the operator's, with the pod's annotations applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SidecarSpec {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub log_level: String,
    pub access_log: AccessLog,
    pub otlp_endpoint: Option<String>,
    pub resources: SidecarResources,
    pub run_as_user: Option<i64>,
    pub native: bool,
}

/// Where a setting came from, to decide which side gives way when a request exceeds a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Operator,
    Annotation,
}

// === impl Planned ===

impl Planned {
    /// Ports from [`FIRST_PORT`] over the names, sorted, as the sidecar assigns them.
    pub(crate) fn plan(sorted_names: &[String]) -> Vec<Planned> {
        sorted_names
            .iter()
            .zip(FIRST_PORT..)
            .map(|(name, port)| Planned {
                name: name.clone(),
                port,
                env_name: url_env_name(name),
                volume_name: volume_name(name),
            })
            .collect()
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn mount_path(&self) -> String {
        format!("{CONFIG_ROOT}/{}", self.name)
    }

    /// The integration's ConfigMap and Secret, projected read-only into one folder.
    pub(crate) fn volume(&self) -> Value {
        let object = generated_name(&self.name);
        json!({
            "name": self.volume_name,
            "projected": {
                "defaultMode": 0o444,
                "sources": [
                    {"configMap": {"name": object}},
                    {"secret": {"name": object}},
                ],
            },
        })
    }
}

/// `attache-NAME` when that is a valid volume name (a DNS label); integration names are DNS
/// subdomains, so a long or dotted one gets a readable prefix and a hash instead.
fn volume_name(integration: &str) -> String {
    let plain = generated_name(integration);
    if plain.len() <= MAX_VOLUME_NAME && !plain.contains('.') {
        return plain;
    }
    let digest = Sha256::digest(integration.as_bytes());
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let prefix: String = plain
        .replace('.', "-")
        .chars()
        .take(MAX_VOLUME_NAME - 9)
        .collect();
    format!("{}-{hash}", prefix.trim_end_matches('-'))
}

// === impl SidecarSpec ===

impl SidecarSpec {
    /// The operator's settings with the pod's override annotations applied; every annotation
    /// that cannot be used is reported, by name.
    pub(crate) fn resolve(
        settings: &InjectorSettings,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let ann = |key: &str| annotations.get(key).map(|v| v.trim());

        let native = match ann(ANNOTATION_NATIVE_SIDECAR) {
            None => settings.native_sidecars,
            Some(v) => match parse_bool(v) {
                Some(b) => b,
                None => {
                    errors.push(format!(
                        "annotation {ANNOTATION_NATIVE_SIDECAR}: {v:?} is not \"true\" or \"false\""
                    ));
                    settings.native_sidecars
                }
            },
        };
        let image = match ann(ANNOTATION_SIDECAR_IMAGE) {
            None => settings.image.clone(),
            Some(v) if !v.is_empty() && !v.contains(char::is_whitespace) => v.to_string(),
            Some(v) => {
                errors.push(format!(
                    "annotation {ANNOTATION_SIDECAR_IMAGE}: {v:?} is not an image reference"
                ));
                settings.image.clone()
            }
        };
        let log_level = match ann(ANNOTATION_SIDECAR_LOG_LEVEL) {
            None => settings.log_level.clone(),
            Some(v) if is_log_filter(v) => v.to_string(),
            Some(v) => {
                errors.push(format!(
                    "annotation {ANNOTATION_SIDECAR_LOG_LEVEL}: {v:?} is not a log level or filter (e.g. debug, attache_sidecar=trace)"
                ));
                settings.log_level.clone()
            }
        };
        let access_log = match ann(ANNOTATION_ACCESS_LOG) {
            None => settings.access_log,
            Some(v) => AccessLog::parse(v).unwrap_or_else(|| {
                errors.push(format!(
                    "annotation {ANNOTATION_ACCESS_LOG}: {v:?} is not \"json\" or \"off\""
                ));
                settings.access_log
            }),
        };
        let otlp_endpoint = match ann(ANNOTATION_OTLP_ENDPOINT) {
            None => settings.otlp_endpoint.clone(),
            Some(v) if is_otlp_endpoint(v) => Some(v.to_string()),
            Some(v) => {
                errors.push(format!(
                    "annotation {ANNOTATION_OTLP_ENDPOINT}: {v:?} is not an http://HOST:PORT URL of an OTLP/HTTP collector"
                ));
                settings.otlp_endpoint.clone()
            }
        };
        let run_as_user = match ann(ANNOTATION_SIDECAR_RUN_AS_USER) {
            None => settings.run_as_user,
            Some("auto") => None,
            Some(v) => match v.parse::<i64>() {
                Ok(uid) if uid > 0 => Some(uid),
                _ => {
                    errors.push(format!(
                        "annotation {ANNOTATION_SIDECAR_RUN_AS_USER}: {v:?} is not a non-root UID (a positive integer) or \"auto\""
                    ));
                    settings.run_as_user
                }
            },
        };

        let quantity =
            |key: &str, default: &Option<String>, errors: &mut Vec<String>| match ann(key) {
                None => (default.clone(), Source::Operator),
                Some("none") => (None, Source::Annotation),
                Some(v) => match quantity::parse(v) {
                    Ok(_) => (Some(v.to_string()), Source::Annotation),
                    Err(why) => {
                        errors.push(format!("annotation {key}: {why}"));
                        (default.clone(), Source::Operator)
                    }
                },
            };
        let r = &settings.resources;
        let cpu_request = quantity(ANNOTATION_SIDECAR_CPU_REQUEST, &r.cpu_request, &mut errors);
        let cpu_limit = quantity(ANNOTATION_SIDECAR_CPU_LIMIT, &r.cpu_limit, &mut errors);
        let mem_request = quantity(
            ANNOTATION_SIDECAR_MEMORY_REQUEST,
            &r.memory_request,
            &mut errors,
        );
        let mem_limit = quantity(
            ANNOTATION_SIDECAR_MEMORY_LIMIT,
            &r.memory_limit,
            &mut errors,
        );
        let (cpu_request, cpu_limit) = reconcile_request_and_limit(
            cpu_request,
            cpu_limit,
            (ANNOTATION_SIDECAR_CPU_REQUEST, ANNOTATION_SIDECAR_CPU_LIMIT),
            &mut errors,
        );
        let (memory_request, memory_limit) = reconcile_request_and_limit(
            mem_request,
            mem_limit,
            (
                ANNOTATION_SIDECAR_MEMORY_REQUEST,
                ANNOTATION_SIDECAR_MEMORY_LIMIT,
            ),
            &mut errors,
        );

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            image,
            image_pull_policy: settings.image_pull_policy.clone(),
            log_level,
            access_log,
            otlp_endpoint,
            resources: SidecarResources {
                cpu_request,
                cpu_limit,
                memory_request,
                memory_limit,
            },
            run_as_user,
            native,
        })
    }

    /// The `attache-sidecar` container. As a native sidecar it is an init container with
    /// `restartPolicy: Always`, and its startup probe holds back the app until it is ready.
    /// The sidecar container; `webhooks` when one of the pod's integrations has `webhooks`
    /// (the webhook listener's port is then declared, for a Service to target by name).
    pub(crate) fn container(&self, integrations: &[Planned], webhooks: bool) -> Value {
        let probe = |period: u32, failures: u32| {
            json!({
                "httpGet": {"path": "/readyz", "port": ADMIN_PORT},
                "periodSeconds": period,
                "timeoutSeconds": 1,
                "failureThreshold": failures,
            })
        };
        let mut security = json!({
            "runAsNonRoot": true,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        });
        if let Some(uid) = self.run_as_user {
            security["runAsUser"] = json!(uid);
            security["runAsGroup"] = json!(uid);
        }
        let mut mounts: Vec<Value> = integrations
            .iter()
            .map(|p| json!({"name": p.volume_name, "mountPath": p.mount_path(), "readOnly": true}))
            .collect();
        mounts.push(json!({
            "name": NO_TOKEN_VOLUME,
            "mountPath": SERVICE_ACCOUNT_TOKEN_PATH,
            "readOnly": true,
        }));
        let mut c = json!({
            "name": SIDECAR_CONTAINER,
            "image": self.image,
            "command": [SIDECAR_COMMAND],
            "args": [
                "run",
                "--config-dir", CONFIG_ROOT,
                "--first-port", FIRST_PORT.to_string(),
                "--proxy-addr", format!("127.0.0.1:{PROXY_PORT}"),
                "--admin-addr", format!("0.0.0.0:{ADMIN_PORT}"),
            ],
            "env": [
                {"name": "ATTACHE_LOG_LEVEL", "value": self.log_level},
                {"name": "ATTACHE_ACCESS_LOG", "value": self.access_log.as_str()},
            ],
            "ports": [{"name": ADMIN_PORT_NAME, "containerPort": ADMIN_PORT, "protocol": "TCP"}],
            // Up to a minute to load the configs and bind the listeners.
            "startupProbe": probe(1, 60),
            "readinessProbe": probe(5, 3),
            "resources": self.resources_json(),
            "securityContext": security,
            "volumeMounts": mounts,
            "terminationMessagePolicy": "FallbackToLogsOnError",
        });
        if let Some(url) = &self.otlp_endpoint {
            c["env"]
                .as_array_mut()
                .expect("env is a list")
                .push(json!({"name": "ATTACHE_OTLP_ENDPOINT", "value": url}));
        }
        if webhooks {
            if let Some(ports) = c["ports"].as_array_mut() {
                ports.push(json!({
                    "name": WEBHOOK_PORT_NAME,
                    "containerPort": WEBHOOK_PORT,
                    "protocol": "TCP",
                }));
            }
        }
        if let Some(policy) = &self.image_pull_policy {
            c["imagePullPolicy"] = json!(policy);
        }
        if self.native {
            c["restartPolicy"] = json!("Always");
        }
        c
    }

    fn resources_json(&self) -> Value {
        let r = &self.resources;
        let map = |cpu: &Option<String>, memory: &Option<String>| {
            let mut m = serde_json::Map::new();
            if let Some(v) = cpu {
                m.insert("cpu".into(), json!(v));
            }
            if let Some(v) = memory {
                m.insert("memory".into(), json!(v));
            }
            m
        };
        let mut out = serde_json::Map::new();
        let requests = map(&r.cpu_request, &r.memory_request);
        let limits = map(&r.cpu_limit, &r.memory_limit);
        if !requests.is_empty() {
            out.insert("requests".into(), Value::Object(requests));
        }
        if !limits.is_empty() {
            out.insert("limits".into(), Value::Object(limits));
        }
        Value::Object(out)
    }
}

/// A request above its limit makes the API server reject the pod. The side the pod did not
/// set gives way; if the pod set both, it is told.
fn reconcile_request_and_limit(
    request: (Option<String>, Source),
    limit: (Option<String>, Source),
    keys: (&str, &str),
    errors: &mut Vec<String>,
) -> (Option<String>, Option<String>) {
    let value = |q: &Option<String>| q.as_deref().and_then(|s| quantity::parse(s).ok());
    let (Some(req), Some(lim)) = (value(&request.0), value(&limit.0)) else {
        return (request.0, limit.0);
    };
    if req <= lim {
        return (request.0, limit.0);
    }
    match (request.1, limit.1) {
        (Source::Annotation, Source::Operator) => (request.0.clone(), request.0),
        (Source::Operator, Source::Annotation) => (limit.0.clone(), limit.0),
        (Source::Annotation, Source::Annotation) => {
            errors.push(format!(
                "annotations {} ({}) and {} ({}): the request is above the limit",
                keys.0,
                request.0.as_deref().unwrap_or_default(),
                keys.1,
                limit.0.as_deref().unwrap_or_default(),
            ));
            (request.0, limit.0)
        }
        (Source::Operator, Source::Operator) => (request.0, limit.0),
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// Levels and tracing filters: `debug`, `info,attache_sidecar=trace`.
fn is_log_filter(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 256
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_=,:.-".contains(c))
}

pub(crate) fn parse_inject_flag(v: &str) -> Option<bool> {
    parse_bool(v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_are_dns_labels_even_for_long_or_dotted_integrations() {
        assert_eq!(volume_name("stripe"), "attache-stripe");
        let dotted = volume_name("api.bank.example");
        assert!(dotted.starts_with("attache-api-bank-example-"), "{dotted}");
        let long = volume_name(&"x".repeat(100));
        assert!(long.len() <= MAX_VOLUME_NAME, "{long}");
        assert_ne!(volume_name(&"x".repeat(100)), volume_name(&"x".repeat(101)));
        for n in [dotted, long] {
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
        }
    }

    #[test]
    fn ports_follow_sorted_names_from_the_first_port() {
        let names = ["a-b".to_string(), "c".to_string()];
        let p = Planned::plan(&names);
        assert_eq!((p[0].port, p[1].port), (15001, 15002));
        assert_eq!(p[0].env_name, "ATTACHE_A_B_URL");
        assert_eq!(p[1].url(), "http://127.0.0.1:15002");
    }

    fn resolve(pairs: &[(&str, &str)]) -> Result<SidecarSpec, Vec<String>> {
        let ann = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SidecarSpec::resolve(&InjectorSettings::default(), &ann)
    }

    #[test]
    fn the_side_the_pod_did_not_set_gives_way_to_the_one_it_did() {
        // Default memory limit 128Mi: a pod asking for 256Mi gets a limit to match.
        let s = resolve(&[(ANNOTATION_SIDECAR_MEMORY_REQUEST, "256Mi")]).unwrap();
        assert_eq!(s.resources.memory_request.as_deref(), Some("256Mi"));
        assert_eq!(s.resources.memory_limit.as_deref(), Some("256Mi"));
        // Default request 32Mi above a limit of 16Mi: the request comes down.
        let s = resolve(&[(ANNOTATION_SIDECAR_MEMORY_LIMIT, "16Mi")]).unwrap();
        assert_eq!(s.resources.memory_request.as_deref(), Some("16Mi"));
        // "none" removes an entry.
        let s = resolve(&[(ANNOTATION_SIDECAR_MEMORY_LIMIT, "none")]).unwrap();
        assert_eq!(s.resources.memory_limit, None);
        let errs = resolve(&[
            (ANNOTATION_SIDECAR_CPU_REQUEST, "2"),
            (ANNOTATION_SIDECAR_CPU_LIMIT, "1"),
        ])
        .unwrap_err();
        assert!(errs[0].contains(ANNOTATION_SIDECAR_CPU_REQUEST), "{errs:?}");
    }

    #[test]
    fn the_access_log_follows_the_operator_unless_the_pod_says_otherwise() {
        let env = |s: &SidecarSpec| s.container(&[], false)["env"][1].clone();
        let off = resolve(&[]).unwrap();
        assert_eq!(env(&off)["value"], "off");
        assert_eq!(env(&off)["name"], "ATTACHE_ACCESS_LOG");
        let on = resolve(&[(ANNOTATION_ACCESS_LOG, "json")]).unwrap();
        assert_eq!(env(&on)["value"], "json");
        let settings = InjectorSettings {
            access_log: AccessLog::Json,
            ..InjectorSettings::default()
        };
        let ann = [(ANNOTATION_ACCESS_LOG.to_string(), "off".to_string())].into();
        let pod_off = SidecarSpec::resolve(&settings, &ann).unwrap();
        assert_eq!(pod_off.access_log, AccessLog::Off);
    }

    #[test]
    fn the_otlp_endpoint_is_set_only_when_one_is_given() {
        let env_names = |s: &SidecarSpec| -> Vec<String> {
            s.container(&[], false)["env"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string())
                .collect()
        };
        let none = resolve(&[]).unwrap();
        assert!(!env_names(&none).contains(&"ATTACHE_OTLP_ENDPOINT".to_string()));
        let set = resolve(&[(ANNOTATION_OTLP_ENDPOINT, "http://otel.monitoring:4318")]).unwrap();
        assert_eq!(
            set.container(&[], false)["env"][2]["value"],
            "http://otel.monitoring:4318"
        );
        for bad in ["otel:4318", "https://otel:4318", "http://", "http://a b"] {
            let errs = resolve(&[(ANNOTATION_OTLP_ENDPOINT, bad)]).unwrap_err();
            assert!(
                errs[0].contains(ANNOTATION_OTLP_ENDPOINT),
                "{bad}: {errs:?}"
            );
        }
    }

    #[test]
    fn every_unusable_annotation_is_named() {
        let errs = resolve(&[
            (ANNOTATION_SIDECAR_CPU_REQUEST, "lots"),
            (ANNOTATION_SIDECAR_RUN_AS_USER, "0"),
            (ANNOTATION_NATIVE_SIDECAR, "maybe"),
            (ANNOTATION_SIDECAR_LOG_LEVEL, "debug; rm -rf"),
            (ANNOTATION_SIDECAR_IMAGE, "two words"),
            (ANNOTATION_ACCESS_LOG, "yes"),
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:#?}");
        for key in [
            ANNOTATION_ACCESS_LOG,
            ANNOTATION_SIDECAR_CPU_REQUEST,
            ANNOTATION_SIDECAR_RUN_AS_USER,
            ANNOTATION_NATIVE_SIDECAR,
            ANNOTATION_SIDECAR_LOG_LEVEL,
            ANNOTATION_SIDECAR_IMAGE,
        ] {
            assert!(
                errs.iter().any(|e| e.contains(key)),
                "{key} not named: {errs:#?}"
            );
        }
    }

    #[test]
    fn run_as_user_auto_leaves_the_uid_to_the_platform() {
        let s = resolve(&[(ANNOTATION_SIDECAR_RUN_AS_USER, "auto")]).unwrap();
        let c = s.container(&[], false);
        assert!(c["securityContext"].get("runAsUser").is_none());
        assert_eq!(c["securityContext"]["runAsNonRoot"], true);
    }
}
