//! The rules of `spec.webhooks`, twins of the CEL rules on [`super::WebhooksSpec`].

use std::sync::OnceLock;

use regex::Regex;

use super::{WebhookProvider, WebhooksSpec, LOOPBACK_URL_PATTERN};
use crate::validate::FieldError;

/// Every problem of `spec.webhooks`, pushed to `errs`.
pub(crate) fn check(w: &WebhooksSpec, errs: &mut Vec<FieldError>) {
    let mut push = |field: &str, message: String| {
        errs.push(FieldError {
            field: field.to_string(),
            message,
        })
    };
    if let Some(path) = &w.path {
        if !path.starts_with('/')
            || path.contains(['?', '#'])
            || path.chars().any(char::is_whitespace)
        {
            push(
                "spec.webhooks.path",
                format!("{path:?} must start with / and have no query, fragment or spaces"),
            );
        }
    }
    if !loopback_url().is_match(&w.forward_to) {
        push(
            "spec.webhooks.forwardTo",
            format!(
                "{:?} must be a loopback http:// URL (127.0.0.1, localhost or [::1]) without \
                 query or fragment, like http://127.0.0.1:8080/events",
                w.forward_to
            ),
        );
    }
    if w.replay_window.is_some_and(|d| d.is_zero()) {
        push(
            "spec.webhooks.replayWindow",
            "must be greater than 0".into(),
        );
    }
    let v = &w.verify;
    let r = &v.secret_key_ref;
    if r.name.is_empty() {
        push(
            "spec.webhooks.verify.secretKeyRef.name",
            "must not be empty".into(),
        );
    }
    if r.key.is_empty() {
        push(
            "spec.webhooks.verify.secretKeyRef.key",
            "must not be empty".into(),
        );
    }
    if v.tolerance.is_some_and(|d| d.is_zero()) {
        push(
            "spec.webhooks.verify.tolerance",
            "must be greater than 0".into(),
        );
    }
    if v.tolerance.is_some() && !v.provider.signs_timestamp() {
        push(
            "spec.webhooks.verify.tolerance",
            "is only used with providers stripe and standard (the others sign no timestamp)".into(),
        );
    }
    let twilio = v.provider == WebhookProvider::Twilio;
    match (&v.public_url, twilio) {
        (None, true) => push(
            "spec.webhooks.verify.publicUrl",
            "is required with provider twilio (the URL Twilio signs)".into(),
        ),
        (Some(_), false) => push(
            "spec.webhooks.verify.publicUrl",
            "is only used with provider twilio".into(),
        ),
        (Some(u), true) if !public_url().is_match(u) => push(
            "spec.webhooks.verify.publicUrl",
            format!("{u:?} must be an absolute http(s) URL with a host and no fragment"),
        ),
        _ => {}
    }
    let hmac = v.provider == WebhookProvider::HmacSha256;
    match (&v.header, hmac) {
        (None, true) => push(
            "spec.webhooks.verify.header",
            "is required with provider hmac-sha256".into(),
        ),
        (Some(h), true) if !header_name().is_match(h) => push(
            "spec.webhooks.verify.header",
            format!("{h:?} is not a valid header name"),
        ),
        _ => {}
    }
    if !hmac && (v.header.is_some() || v.prefix.is_some() || v.encoding.is_some()) {
        push(
            "spec.webhooks.verify",
            "header, prefix and encoding are only used with provider hmac-sha256".into(),
        );
    }
}

fn loopback_url() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(LOOPBACK_URL_PATTERN).expect("pattern compiles"))
}

fn public_url() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(?i)https?://[^/?#@\s]+(/[^#\s]*)?$").expect("compiles"))
}

fn header_name() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^[-!#$%&'*+.^_`|~0-9A-Za-z]+$").expect("compiles"))
}

#[cfg(test)]
mod tests {
    use crate::{spec::ExternalIntegrationSpec, validate::validate_spec};

    fn problems(webhooks: serde_json::Value) -> Vec<String> {
        let spec: ExternalIntegrationSpec = serde_json::from_value(serde_json::json!({
            "upstream": {"url": "https://api.example.com"},
            "webhooks": webhooks,
        }))
        .unwrap();
        validate_spec(&spec)
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    fn secret() -> serde_json::Value {
        serde_json::json!({"name": "s", "key": "k"})
    }

    #[test]
    fn a_complete_webhook_spec_is_valid() {
        for verify in [
            serde_json::json!({"provider": "stripe", "secretKeyRef": secret(), "tolerance": "5m"}),
            serde_json::json!({"provider": "github", "secretKeyRef": secret()}),
            serde_json::json!({"provider": "twilio", "secretKeyRef": secret(),
                "publicUrl": "https://hooks.example.com/twilio"}),
            serde_json::json!({"provider": "standard", "secretKeyRef": secret()}),
            serde_json::json!({"provider": "hmac-sha256", "secretKeyRef": secret(),
                "header": "X-Signature", "prefix": "sha256=", "encoding": "base64"}),
        ] {
            let p = problems(serde_json::json!({
                "path": "/webhooks/x", "forwardTo": "http://127.0.0.1:8080/events",
                "verify": verify, "replayWindow": "24h", "maxBodyBytes": "1Mi"}));
            assert!(p.is_empty(), "{p:?}");
        }
    }

    #[test]
    fn forward_to_must_stay_on_the_pod() {
        for bad in [
            "https://127.0.0.1:8080/x",
            "http://10.0.0.1/x",
            "http://example.com/x",
            "http://127.0.0.1.evil.com/x",
            "http://localhost:8080/x?y=1",
        ] {
            let p = problems(serde_json::json!({"forwardTo": bad,
                "verify": {"provider": "github", "secretKeyRef": secret()}}));
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert!(p[0].starts_with("spec.webhooks.forwardTo"), "{p:?}");
        }
        for good in [
            "http://localhost:8080",
            "http://[::1]:9000/a/b",
            "HTTP://127.0.0.1/",
        ] {
            let p = problems(serde_json::json!({"forwardTo": good,
                "verify": {"provider": "github", "secretKeyRef": secret()}}));
            assert!(p.is_empty(), "{good}: {p:?}");
        }
    }

    #[test]
    fn provider_specific_fields_are_required_or_refused() {
        let p = problems(serde_json::json!({"forwardTo": "http://127.0.0.1:1",
            "verify": {"provider": "twilio", "secretKeyRef": secret()}}));
        assert!(
            p[0].starts_with("spec.webhooks.verify.publicUrl: is required"),
            "{p:?}"
        );
        let p = problems(serde_json::json!({"forwardTo": "http://127.0.0.1:1",
            "verify": {"provider": "hmac-sha256", "secretKeyRef": secret()}}));
        assert!(
            p[0].starts_with("spec.webhooks.verify.header: is required"),
            "{p:?}"
        );
        let p = problems(serde_json::json!({"forwardTo": "http://127.0.0.1:1",
            "verify": {"provider": "github", "secretKeyRef": secret(), "tolerance": "1m",
                "header": "X-Sig"}}));
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
