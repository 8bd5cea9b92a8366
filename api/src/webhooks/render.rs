//! `spec.webhooks` + the signing secrets → [`WebhooksConfig`] and the Secret file
//! [`SECRETS_FILE`].
//!
//! The secret's value may hold several secrets, one per line, so that a signing secret can be
//! rotated without a window of refusals: add the new one, let the third party switch, remove
//! the old one. Lines are trimmed and blank lines dropped; at least one must remain.

use base64::Engine;

use super::{
    config::{WebhookEncoding, WebhookProvider, WebhooksConfig, SECRETS_FILE},
    WebhooksSpec,
};
use crate::{defaults as d, render::RenderError, secret::SecretBytes, validate::FieldError};

/// The config and the secrets file's content for integration `name`.
pub(crate) fn render(
    name: &str,
    w: &WebhooksSpec,
    lookup: impl Fn(&str, &str, &str) -> Result<SecretBytes, RenderError>,
) -> Result<(WebhooksConfig, (String, SecretBytes)), RenderError> {
    let field = "spec.webhooks.verify.secretKeyRef";
    let r = &w.verify.secret_key_ref;
    let raw = lookup(field, &r.name, &r.key)?;
    let secrets = signing_secrets(raw.expose());
    if secrets.is_empty() {
        return Err(RenderError::EmptyCredential {
            field: field.into(),
            kind: "Secret",
            name: r.name.clone(),
            key: r.key.clone(),
        });
    }
    if w.verify.provider == WebhookProvider::Standard {
        for (i, s) in secrets.iter().enumerate() {
            if standard_key(s).is_none() {
                return Err(RenderError::Invalid(vec![FieldError {
                    field: field.into(),
                    message: format!(
                        "Secret {:?} key {:?} line {}: a Standard Webhooks secret is base64, \
                         optionally after whsec_",
                        r.name,
                        r.key,
                        i + 1
                    ),
                }]));
            }
        }
    }
    let v = &w.verify;
    let config = WebhooksConfig {
        path: w
            .path
            .clone()
            .unwrap_or_else(|| format!("/webhooks/{name}")),
        forward_to: w.forward_to.clone(),
        provider: v.provider,
        tolerance: v.tolerance.unwrap_or(d::WEBHOOK_TOLERANCE),
        public_url: v.public_url.clone(),
        header: v.header.clone(),
        prefix: v.prefix.clone().unwrap_or_default(),
        encoding: v.encoding.unwrap_or(WebhookEncoding::Hex),
        replay_window: w.replay_window.unwrap_or(d::WEBHOOK_REPLAY_WINDOW),
        max_body_bytes: w
            .max_body_bytes
            .unwrap_or(d::WEBHOOK_MAX_BODY_BYTES)
            .bytes(),
    };
    let file = secrets.join("\n") + "\n";
    Ok((config, (SECRETS_FILE.to_string(), SecretBytes::new(file))))
}

/// The secrets of a secret value: one per line, trimmed, blank lines dropped.
pub fn signing_secrets(raw: &[u8]) -> Vec<&str> {
    std::str::from_utf8(raw)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// A Standard Webhooks secret's key bytes: the base64 after the optional `whsec_` prefix.
pub fn standard_key(secret: &str) -> Option<Vec<u8>> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .filter(|k| !k.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_lines_are_several_secrets() {
        assert_eq!(signing_secrets(b"one\n\n  two \r\n"), ["one", "two"]);
        assert!(signing_secrets(b" \n").is_empty());
    }

    #[test]
    fn standard_keys_are_base64_after_the_prefix() {
        assert_eq!(standard_key("whsec_AAEC").unwrap(), [0, 1, 2]);
        assert_eq!(standard_key("AAEC").unwrap(), [0, 1, 2]);
        assert!(standard_key("whsec_not base64!").is_none());
    }
}
