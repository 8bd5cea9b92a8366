//! Twilio: `X-Twilio-Signature`, base64 of the HMAC-SHA1 (keyed with the auth token) of the
//! URL Twilio called followed by each POST parameter's name and value, sorted by name. The
//! URL is `publicUrl` (what Twilio was configured with, before any Ingress rewrote it) plus
//! the request's query string. JSON bodies are signed differently: the URL carries
//! `bodySHA256=<hex SHA-256 of the body>`, the signature covers the URL alone, and the body
//! must hash to that value. Twilio signs no timestamp; `I-Twilio-Idempotency-Token` (sent on
//! every request, the same on Twilio's retries) is the replay key when present.

use http::request::Parts;
use ring::digest;

use super::{base64_decode, header, hex_decode, Keys, Refusal, ReplayKey};

pub const HEADER: &str = "x-twilio-signature";
pub const IDEMPOTENCY: &str = "i-twilio-idempotency-token";

pub(super) fn verify(
    keys: &Keys,
    public_url: &str,
    head: &Parts,
    body: &[u8],
) -> Result<ReplayKey, Refusal> {
    let sig = base64_decode(header(&head.headers, HEADER)?.trim())
        .ok_or_else(|| Refusal::Signature(format!("{HEADER} is not base64")))?;
    let query = head.uri.query();
    let url = match query {
        Some(q) if !public_url.contains('?') => format!("{public_url}?{q}"),
        _ => public_url.to_string(),
    };
    let body_sha256 = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "bodySHA256")
            .map(|(_, v)| v.into_owned())
    });
    let mut signed = url.into_bytes();
    if body_sha256.is_none() && is_form(head) {
        let mut params: Vec<(String, String)> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        params.sort();
        for (k, v) in params {
            signed.extend_from_slice(k.as_bytes());
            signed.extend_from_slice(v.as_bytes());
        }
    }
    if !keys.any_verifies(&signed, &sig) {
        return Err(Refusal::Signature(format!(
            "{HEADER} does not match a current secret for the configured publicUrl"
        )));
    }
    if let Some(expected) = body_sha256 {
        // Not a secret: the signed URL says what the body must hash to.
        let actual = digest::digest(&digest::SHA256, body);
        if hex_decode(&expected).as_deref() != Some(actual.as_ref()) {
            return Err(Refusal::Signature(
                "the body does not hash to the signed bodySHA256".into(),
            ));
        }
    }
    Ok(match head.headers.get(IDEMPOTENCY) {
        Some(token) => ReplayKey::of("twilio-idempotency", token.as_bytes()),
        None => ReplayKey::of("twilio-signature", &sig),
    })
}

fn is_form(head: &Parts) -> bool {
    head.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.split(';').next().is_some_and(|m| {
                m.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            })
        })
}
