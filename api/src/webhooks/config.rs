//! The `webhooks` part of the sidecar's rendered `config.json`: every default resolved, no
//! secret values (those go to the Secret file [`SECRETS_FILE`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::KubeDuration;

/// The generated Secret's key holding the signing secrets, one per line.
pub const SECRETS_FILE: &str = "webhook-secrets";

/// Whose signature scheme the callbacks use.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookProvider {
    /// `Stripe-Signature: t=...,v1=...`: HMAC-SHA256 of `"{t}.{body}"`, hex.
    Stripe,
    /// `X-Hub-Signature-256: sha256=...`: HMAC-SHA256 of the body, hex.
    Github,
    /// `X-Twilio-Signature`: HMAC-SHA1 of the public URL and the sorted form parameters, base64.
    Twilio,
    /// Standard Webhooks (Svix): `webhook-signature: v1,...` over `"{id}.{timestamp}.{body}"`.
    Standard,
    /// HMAC-SHA256 of the body in a named header, hex or base64, with an optional prefix.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl WebhookProvider {
    /// The name users write, also the value of `x-attache-webhook-verified`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookProvider::Stripe => "stripe",
            WebhookProvider::Github => "github",
            WebhookProvider::Twilio => "twilio",
            WebhookProvider::Standard => "standard",
            WebhookProvider::HmacSha256 => "hmac-sha256",
        }
    }

    /// Whether the provider signs a timestamp (so `tolerance` applies).
    pub fn signs_timestamp(self) -> bool {
        matches!(self, WebhookProvider::Stripe | WebhookProvider::Standard)
    }
}

/// How an `hmac-sha256` signature is written.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookEncoding {
    Hex,
    Base64,
}

/// Everything the webhook listener needs for one integration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Path on the webhook listener, starting with `/`.
    pub path: String,
    /// The app's loopback endpoint.
    pub forward_to: String,
    pub provider: WebhookProvider,
    /// Accepted age of a signed timestamp (providers that sign one).
    pub tolerance: KubeDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// hmac-sha256 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// hmac-sha256 only; empty when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    pub encoding: WebhookEncoding,
    pub replay_window: KubeDuration,
    pub max_body_bytes: u64,
}
