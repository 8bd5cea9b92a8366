use std::collections::HashMap;

use super::*;
use crate::manifest::parse_integrations;

#[derive(Default)]
struct MapSource {
    secrets: HashMap<String, HashMap<String, Vec<u8>>>,
}

impl MapSource {
    fn with(mut self, name: &str, key: &str, value: impl AsRef<[u8]>) -> Self {
        self.secrets
            .entry(name.into())
            .or_default()
            .insert(key.into(), value.as_ref().to_vec());
        self
    }
}

impl SecretSource for MapSource {
    fn secret_key(&self, name: &str, key: &str) -> Result<SecretBytes, SourceError> {
        let s = self.secrets.get(name).ok_or(SourceError::ObjectNotFound)?;
        s.get(key)
            .map(|v| SecretBytes::new(v.clone()))
            .ok_or(SourceError::KeyNotFound)
    }
    fn config_map_key(&self, _: &str, _: &str) -> Result<SecretBytes, SourceError> {
        Err(SourceError::ObjectNotFound)
    }
}

fn one(yaml: &str) -> ExternalIntegration {
    parse_integrations("test.yaml", yaml).unwrap().remove(0)
}

const STRIPE: &str = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: stripe, namespace: payments}
spec:
  upstream: {url: "https://api.stripe.com/v1/"}
  auth:
    apiKey: {header: Authorization, prefix: "Bearer ", secretKeyRef: {name: stripe-key, key: api-key}}
"#;

#[test]
fn defaults_are_filled_and_secrets_collected() {
    let src = MapSource::default().with("stripe-key", "api-key", "sk_test_1\n");
    let r = render(&one(STRIPE), &src, RenderOptions::default()).unwrap();
    assert_eq!(r.config.upstream.host, "api.stripe.com");
    assert_eq!(r.config.upstream.port, 443);
    assert_eq!(r.config.upstream.base_path, "/v1");
    assert_eq!(r.config.timeouts.connect, d::CONNECT_TIMEOUT);
    assert_eq!(r.config.retry.max_attempts, 3);
    assert_eq!(
        r.files[files::AUTH_CREDENTIAL].expose(),
        b"sk_test_1",
        "trailing newline trimmed"
    );
    let cm = r.config_map_data();
    assert!(
        !cm[CONFIG_FILE].contains("sk_test_1"),
        "no secret in ConfigMap"
    );
    let back: SidecarConfig = serde_json::from_str(&cm[CONFIG_FILE]).unwrap();
    assert_eq!(back, r.config);
}

#[test]
fn missing_secret_and_key_are_named() {
    let err = render(
        &one(STRIPE),
        &MapSource::default(),
        RenderOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "SecretNotFound");
    assert!(err.to_string().contains("stripe-key"), "{err}");
    let src = MapSource::default().with("stripe-key", "other", "x");
    let err = render(&one(STRIPE), &src, RenderOptions::default()).unwrap_err();
    assert_eq!(err.reason(), "KeyNotFound");
    assert!(err.to_string().contains("api-key"), "{err}");
}

#[test]
fn client_certificate_is_checked_and_expiry_reported() {
    let ca = rcgen::generate_simple_self_signed(vec!["client".into()]).unwrap();
    let yaml = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: bank}
spec:
  upstream: {url: "https://bank.example:8443"}
  tls: {clientCertificate: {secretName: bank-mtls}, minVersion: "1.3"}
"#;
    let src = MapSource::default()
        .with("bank-mtls", "tls.crt", ca.cert.pem())
        .with("bank-mtls", "tls.key", ca.signing_key.serialize_pem());
    let r = render(&one(yaml), &src, RenderOptions::default()).unwrap();
    assert!(r.config.tls.client_certificate);
    assert_eq!(r.config.tls.min_version, TlsVersion::V1_3);
    assert_eq!(r.config.upstream.port, 8443);
    assert!(r.client_certificate_not_after.unwrap() > 1_700_000_000);

    let broken = MapSource::default()
        .with(
            "bank-mtls",
            "tls.crt",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .with("bank-mtls", "tls.key", ca.signing_key.serialize_pem());
    let err = render(&one(yaml), &broken, RenderOptions::default()).unwrap_err();
    assert_eq!(err.reason(), "CertificateInvalid");
    assert!(err.to_string().contains("tls.crt"), "{err}");
}

const BANK: &str = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: bank}
spec:
  upstream: {url: "https://bank.example"}
  tls: {clientCertificate: {secretName: bank-mtls}}
"#;

/// A self-signed client certificate valid from `not_before` to `not_after` (years), and its key.
fn client_pair(not_before: i32, not_after: i32) -> (String, String) {
    let mut params = rcgen::CertificateParams::new(vec!["client".to_string()]).unwrap();
    params.not_before = rcgen::date_time_ymd(not_before, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn render_bank(cert: &str, key: &str, now: SystemTime) -> Result<Rendered, RenderError> {
    let src = MapSource::default()
        .with("bank-mtls", "tls.crt", cert)
        .with("bank-mtls", "tls.key", key);
    render_at(&one(BANK), &src, RenderOptions::default(), now)
}

fn year(y: u64) -> SystemTime {
    // Close enough to 1 January of year `y` for tests a year away from any boundary.
    UNIX_EPOCH + std::time::Duration::from_secs((y - 1970) * 31_556_952)
}

#[test]
fn a_client_key_from_another_certificate_is_refused_naming_the_secret() {
    let (cert, _) = client_pair(2020, 2040);
    let (_, other_key) = client_pair(2020, 2040);
    let err = render_bank(&cert, &other_key, year(2030)).unwrap_err();
    assert_eq!(err.reason(), "CertificateInvalid");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "spec.tls.clientCertificate: Secret \"bank-mtls\" key \"tls.key\" is not usable: \
             the private key does not belong to the certificate in tls.crt"
        ),
        "{text}"
    );
    // The matching key renders.
    let (cert, key) = client_pair(2020, 2040);
    render_bank(&cert, &key, year(2030)).unwrap();
}

#[test]
fn a_client_certificate_outside_its_validity_is_refused() {
    let (cert, key) = client_pair(2020, 2025);
    let err = render_bank(&cert, &key, year(2030)).unwrap_err();
    assert_eq!(err.reason(), "CertificateInvalid");
    assert!(
        err.to_string().contains(
            "Secret \"bank-mtls\" key \"tls.crt\" is not usable: the certificate expired at \
             2025-01-01T00:00:00Z"
        ),
        "{err}"
    );
    let (cert, key) = client_pair(2035, 2040);
    let err = render_bank(&cert, &key, year(2030)).unwrap_err();
    assert_eq!(err.reason(), "CertificateInvalid");
    assert!(
        err.to_string()
            .contains("the certificate is not valid before 2035-01-01T00:00:00Z"),
        "{err}"
    );
    // A certificate issued by a clock slightly ahead of ours is accepted.
    let now = UNIX_EPOCH + std::time::Duration::from_secs(2_051_222_400 - 30); // 2035-01-01 - 30 s
    render_bank(&cert, &key, now).unwrap();
    // `render` itself checks against the system clock.
    let (cert, key) = client_pair(2000, 2001);
    let src = MapSource::default()
        .with("bank-mtls", "tls.crt", cert)
        .with("bank-mtls", "tls.key", key);
    assert_eq!(
        render(&one(BANK), &src, RenderOptions::default())
            .unwrap_err()
            .reason(),
        "CertificateInvalid"
    );
}

#[test]
fn every_missing_secret_and_key_is_named_at_once_and_once() {
    let yaml = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: bank}
spec:
  upstream: {url: "https://bank.example"}
  auth:
    oauth2ClientCredentials:
      tokenUrl: https://bank.example/token
      clientId: attache
      clientSecretRef: {name: bank-oauth, key: client-secret}
  tls:
    caBundleRef: {name: bank-ca}
    clientCertificate: {secretName: bank-mtls}
"#;
    let err = render(&one(yaml), &MapSource::default(), RenderOptions::default()).unwrap_err();
    let problems: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        [
            "spec.auth.oauth2ClientCredentials.clientSecretRef: Secret \"bank-oauth\" not found",
            "spec.tls.caBundleRef: Secret \"bank-ca\" not found",
            // Both keys of the missing Secret, said once.
            "spec.tls.clientCertificate: Secret \"bank-mtls\" not found",
        ]
    );
    assert_eq!(err.reason(), "SecretNotFound", "the first problem's");
    assert_eq!(err.to_string(), problems.join("; "));

    // The Secret exists without its keys: each key is named.
    let src = MapSource::default()
        .with("bank-oauth", "client-secret", "s3cret")
        .with("bank-ca", "other", "x")
        .with("bank-mtls", "other", "x");
    let err = render(&one(yaml), &src, RenderOptions::default()).unwrap_err();
    let problems: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    assert_eq!(
        problems,
        [
            "spec.tls.caBundleRef: Secret \"bank-ca\" has no key \"ca.crt\"",
            "spec.tls.clientCertificate: Secret \"bank-mtls\" has no key \"tls.crt\"",
            "spec.tls.clientCertificate: Secret \"bank-mtls\" has no key \"tls.key\"",
        ]
    );
    assert_eq!(err.reason(), "KeyNotFound");
}

#[test]
fn invalid_specs_name_the_field() {
    let yaml = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: bad}
spec:
  upstream: {url: "http://plain.example"}
  auth:
    bearer: {secretKeyRef: {name: a, key: b}}
    basic: {secretRef: {name: c}}
  retry: {maxAttempts: 0, retryOn: ["teapot"], backoff: {base: 2s, max: 1s}}
  rateLimit: {requests: 0}
"#;
    let err = render(&one(yaml), &MapSource::default(), RenderOptions::default()).unwrap_err();
    let RenderError::Invalid(list) = err else {
        panic!("expected Invalid")
    };
    let fields: Vec<_> = list.iter().map(|e| e.field.as_str()).collect();
    for f in [
        "spec.upstream.url",
        "spec.auth",
        "spec.retry.maxAttempts",
        "spec.retry.retryOn[0]",
        "spec.retry.backoff.base",
        "spec.rateLimit.requests",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
}

#[test]
fn shared_rate_limit_is_divided_among_pods() {
    let yaml = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: openai}
spec:
  upstream: {url: "https://api.openai.com"}
  rateLimit: {requests: 100, per: 1s, burst: 20, scope: shared}
"#;
    let r = render(
        &one(yaml),
        &MapSource::default(),
        RenderOptions { pods_sharing: 4 },
    )
    .unwrap();
    let rl = r.config.rate_limit.unwrap();
    assert_eq!(rl.pods, 4);
    assert_eq!(rl.burst, 5);
    assert_eq!(rl.pod_interval(), std::time::Duration::from_millis(40));
}

#[test]
fn other_kinds_are_skipped_and_bad_yaml_is_named() {
    let yaml = format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: x}}\n---\n{STRIPE}");
    assert_eq!(parse_integrations("a.yaml", &yaml).unwrap().len(), 1);
    let err = parse_integrations("b.yaml", "kind: [").unwrap_err();
    assert!(err.to_string().starts_with("b.yaml"), "{err}");
    let err = parse_integrations(
        "c.yaml",
        "apiVersion: attache.dev/v1alpha1\nkind: ExternalIntegration\nmetadata: {name: x}\nspec: {upstream: {}}\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
}

#[test]
fn manifests_are_read_strictly_with_every_problem_at_once() {
    let yaml = r#"
apiVersion: attache.dev/v1alpha1
kind: ExternalIntegration
metadata: {name: "../../etc/passwd", namespace: Payments, labelz: {a: b}}
spec:
  upstream: {url: "https://api.example.com"}
  apiKey: {secretKeyRef: {name: k, key: api-key}}
  retry: {maxAtempts: 5, maxAttempts: 0}
  timeouts: {idle: 0s}
"#;
    let err = parse_integrations("m.yaml", yaml).unwrap_err().to_string();
    for needle in [
        "m.yaml",
        "metadata.name: use lower case letters",
        "metadata.namespace: use lower case letters",
        "metadata.labelz: unknown field",
        "spec.apiKey: unknown field",
        "spec.retry.maxAtempts: unknown field",
        "spec.retry.maxAttempts: must be at least 1",
        "spec.timeouts.idle: must be greater than 0",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    // Known fields only: read as before.
    let ok = yaml
        .replace("\"../../etc/passwd\"", "stripe")
        .replace("Payments", "payments")
        .replace(", labelz: {a: b}", "")
        .replace("  apiKey: {secretKeyRef: {name: k, key: api-key}}\n", "")
        .replace("maxAtempts: 5, maxAttempts: 0", "maxAttempts: 5")
        .replace("idle: 0s", "idle: 5m");
    assert_eq!(parse_integrations("m.yaml", &ok).unwrap().len(), 1);
}
