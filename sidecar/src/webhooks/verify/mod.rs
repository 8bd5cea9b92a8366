//! Signature checks, one module per provider. Each takes the request's head and its **raw**
//! body bytes (never a re-serialised form) and the integration's keys, and says either who
//! the event is (its replay key) or why it is refused.
//!
//! Comparisons go through `ring::hmac::verify`, which compares in constant time; messages
//! name what was missing or wrong, never a secret or the signature that was expected.

mod github;
mod hmac_sha256;
mod standard;
mod stripe;
mod twilio;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attache_api::webhooks::{
    render::{signing_secrets, standard_key},
    WebhookProvider, WebhooksConfig,
};
use http::{request::Parts, HeaderMap};
use ring::{digest, hmac};

/// What a verified event is known by: a digest of its id, or of its signature when the
/// provider sends no id. Fixed-size, so the replay cache's memory per entry is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayKey(pub [u8; 32]);

impl ReplayKey {
    /// `kind` keeps an id and a signature that happen to be equal apart.
    pub fn of(kind: &str, value: &[u8]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(kind.as_bytes());
        ctx.update(b":");
        ctx.update(value);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }
}

/// Why a request was refused; the text is for the log line and the error body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature, a malformed one, or none that matches a current secret.
    #[error("{0}")]
    Signature(String),
    /// A valid signature over a timestamp outside the tolerance.
    #[error("{0}")]
    Timestamp(String),
}

/// The keys of one integration: one per signing secret (several during a rotation).
pub struct Keys {
    provider: WebhookProvider,
    keys: Vec<hmac::Key>,
}

/// Why the secrets file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("the webhook secrets file holds no secret")]
    Empty,
    #[error("webhook secret line {0} is not a Standard Webhooks secret (base64, optionally after whsec_)")]
    NotStandard(usize),
}

impl Keys {
    /// Keys from the secrets file (one secret per line).
    pub fn new(provider: WebhookProvider, file: &[u8]) -> Result<Self, KeysError> {
        let algorithm = match provider {
            WebhookProvider::Twilio => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            _ => hmac::HMAC_SHA256,
        };
        let mut keys = Vec::new();
        for (i, secret) in signing_secrets(file).into_iter().enumerate() {
            let bytes = match provider {
                WebhookProvider::Standard => {
                    standard_key(secret).ok_or(KeysError::NotStandard(i + 1))?
                }
                _ => secret.as_bytes().to_vec(),
            };
            keys.push(hmac::Key::new(algorithm, &bytes));
        }
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Self { provider, keys })
    }

    /// True when some key's HMAC of `data` is `tag` (each comparison in constant time).
    fn any_verifies(&self, data: &[u8], tag: &[u8]) -> bool {
        self.keys.iter().any(|k| hmac::verify(k, data, tag).is_ok())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Checks one request against the integration's webhook config at time `now`.
pub fn verify(
    config: &WebhooksConfig,
    keys: &Keys,
    head: &Parts,
    body: &[u8],
    now: SystemTime,
) -> Result<ReplayKey, Refusal> {
    debug_assert_eq!(config.provider, keys.provider);
    let tolerance = config.tolerance.as_duration();
    match config.provider {
        WebhookProvider::Stripe => stripe::verify(keys, &head.headers, body, now, tolerance),
        WebhookProvider::Github => github::verify(keys, &head.headers, body),
        WebhookProvider::Twilio => twilio::verify(
            keys,
            config.public_url.as_deref().unwrap_or_default(),
            head,
            body,
        ),
        WebhookProvider::Standard => standard::verify(keys, &head.headers, body, now, tolerance),
        WebhookProvider::HmacSha256 => hmac_sha256::verify(
            keys,
            config.header.as_deref().unwrap_or_default(),
            &config.prefix,
            config.encoding,
            &head.headers,
            body,
        ),
    }
}

/// A header's value as text, or a signature refusal naming it.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, Refusal> {
    let value = headers
        .get(name)
        .ok_or_else(|| Refusal::Signature(format!("no {name} header")))?;
    value
        .to_str()
        .map_err(|_| Refusal::Signature(format!("the {name} header is not text")))
}

/// Refuses a signed Unix timestamp farther than `tolerance` from `now`, either way (a
/// timestamp from the future is as suspect as an old one).
fn check_timestamp(ts: &str, now: SystemTime, tolerance: Duration) -> Result<(), Refusal> {
    let secs: i64 = ts
        .parse()
        .map_err(|_| Refusal::Signature(format!("timestamp {ts:?} is not Unix seconds")))?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let age = now.saturating_sub(secs);
    let limit = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if age > limit {
        return Err(Refusal::Timestamp(format!(
            "signed {age} s ago, beyond the tolerance of {limit} s"
        )));
    }
    if -age > limit {
        return Err(Refusal::Timestamp(format!(
            "signed {} s in the future, beyond the tolerance of {limit} s",
            -age
        )));
    }
    Ok(())
}

/// Lower- or upper-case hex to bytes; `None` for anything else.
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
