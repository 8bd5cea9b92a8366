//! Standard Webhooks (the scheme Svix started): `webhook-id`, `webhook-timestamp` and
//! `webhook-signature: v1,BASE64 [v1,BASE64...]`, the HMAC-SHA256 of `"{id}.{timestamp}.{body}"`
//! keyed with the base64 secret after `whsec_`. Svix's own `svix-*` header names are read too.
//! Signatures of other versions (`v1a`, asymmetric) are skipped.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{base64_decode, check_timestamp, header, Keys, Refusal, ReplayKey};

/// The header names, with Svix's older names as the fallback.
const NAMES: [(&str, &str); 3] = [
    ("webhook-id", "svix-id"),
    ("webhook-timestamp", "svix-timestamp"),
    ("webhook-signature", "svix-signature"),
];

pub(super) fn verify(
    keys: &Keys,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<ReplayKey, Refusal> {
    let get = |(standard, svix): (&str, &str)| {
        if headers.contains_key(standard) || !headers.contains_key(svix) {
            header(headers, standard)
        } else {
            header(headers, svix)
        }
    };
    let id = get(NAMES[0])?;
    let timestamp = get(NAMES[1])?;
    let signatures: Vec<Vec<u8>> = get(NAMES[2])?
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(base64_decode)
        .collect();
    if signatures.is_empty() {
        return Err(Refusal::Signature(
            "no v1,<base64> entry in webhook-signature".into(),
        ));
    }
    let mut signed = Vec::with_capacity(id.len() + timestamp.len() + 2 + body.len());
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(timestamp.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    if !signatures.iter().any(|sig| keys.any_verifies(&signed, sig)) {
        return Err(Refusal::Signature(
            "no v1 signature matches a current secret".into(),
        ));
    }
    check_timestamp(timestamp, now, tolerance)?;
    Ok(ReplayKey::of("standard-id", id.as_bytes()))
}
