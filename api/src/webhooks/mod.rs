//! `spec.webhooks`: how the third party calls us back, and how the sidecar checks that it
//! really was the third party before the app sees the request.
//!
//! The types here are what users write ([`WebhooksSpec`]); [`validate`] holds the rules (the
//! same as the CEL rules on the types), [`render`] turns a checked spec into the sidecar's
//! [`WebhooksConfig`] and the signing secrets into the generated Secret.

pub mod config;
pub mod render;
pub mod validate;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

pub use config::{WebhookEncoding, WebhookProvider, WebhooksConfig};

use crate::{bytesize::ByteSize, duration::KubeDuration, spec::SecretKeyRef};

/// A loopback `http://` URL: `127.x.x.x`, `localhost` or `[::1]`, an optional port and path.
/// Shared by the CEL rule and [`validate`], so both accept the same strings.
pub const LOOPBACK_URL_PATTERN: &str = r"^(?i)http://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}|localhost|\[::1\])(:[0-9]{1,5})?(/[^?#\s]*)?$";

/// Inbound webhooks of the third party (README, "Inbound webhooks").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksSpec {
    /// Path on the sidecar's webhook listener; default `/webhooks/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    #[x_kube(validation = Rule::new(r"self.matches('^/[^?#\\s]*$')")
        .message("spec.webhooks.path must start with / and have no query, fragment or spaces"))]
    pub path: Option<String>,
    /// The app's endpoint that verified requests go to; a loopback `http://` URL.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(
        r"self.matches('^(?i)http://(127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|localhost|\\[::1\\])(:[0-9]{1,5})?(/[^?#\\s]*)?$')"
    ).message(
        "spec.webhooks.forwardTo must be a loopback http:// URL (127.0.0.1, localhost or [::1]) \
         without query or fragment, like http://127.0.0.1:8080/events"
    ))]
    pub forward_to: String,
    pub verify: WebhookVerifySpec,
    /// An event id (or signature) seen within this window is refused as a replay; default 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.webhooks.replayWindow must be greater than 0"))]
    pub replay_window: Option<KubeDuration>,
    /// Larger bodies are refused (413) without being read; default `1Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<ByteSize>,
}

/// How a callback proves that it comes from the third party.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.provider != 'twilio' || has(self.publicUrl)")
        .message("spec.webhooks.verify.publicUrl is required with provider twilio (the URL Twilio signs)"),
    validation = Rule::new("self.provider == 'twilio' || !has(self.publicUrl)")
        .message("spec.webhooks.verify.publicUrl is only used with provider twilio"),
    validation = Rule::new("self.provider != 'hmac-sha256' || has(self.header)")
        .message("spec.webhooks.verify.header is required with provider hmac-sha256"),
    validation = Rule::new(
        "self.provider == 'hmac-sha256' || (!has(self.header) && !has(self.prefix) && !has(self.encoding))"
    ).message("spec.webhooks.verify.header, prefix and encoding are only used with provider hmac-sha256"),
    validation = Rule::new("self.provider in ['stripe', 'standard'] || !has(self.tolerance)")
        .message("spec.webhooks.verify.tolerance is only used with providers stripe and standard (the others sign no timestamp)")
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookVerifySpec {
    pub provider: WebhookProvider,
    /// The signing secret; several lines hold several valid secrets (rotation).
    pub secret_key_ref: SecretKeyRef,
    /// Accepted age of the signed timestamp (stripe, standard); default 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s')")
        .message("spec.webhooks.verify.tolerance must be greater than 0"))]
    pub tolerance: Option<KubeDuration>,
    /// twilio: the public URL Twilio calls (and signs), e.g. `https://hooks.example.com/twilio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(r"self.matches('^(?i)https?://[^/?#@\\s]+(/[^#\\s]*)?$')")
        .message("spec.webhooks.verify.publicUrl must be an absolute http(s) URL with a host and no fragment"))]
    pub public_url: Option<String>,
    /// hmac-sha256: the header carrying the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new(r#"self.matches("^[-!#$%&'*+.^_`|~0-9A-Za-z]+$")"#)
        .message("spec.webhooks.verify.header must be a valid HTTP header name"))]
    pub header: Option<String>,
    /// hmac-sha256: text before the signature in the header, e.g. `sha256=`; default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub prefix: Option<String>,
    /// hmac-sha256: `hex` (default) or `base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<WebhookEncoding>,
}
