//! Stripe: `Stripe-Signature: t=TIMESTAMP,v1=HEX[,v1=HEX...]`, the HMAC-SHA256 of
//! `"{t}.{body}"` with the endpoint's signing secret. Several `v1` entries appear while
//! Stripe rolls a secret; any one matching suffices. `v0` (test-mode legacy) is ignored.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{check_timestamp, header, hex_decode, Keys, Refusal, ReplayKey};

pub const HEADER: &str = "stripe-signature";

pub(super) fn verify(
    keys: &Keys,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<ReplayKey, Refusal> {
    let value = header(headers, HEADER)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in value.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", sig)) => signatures.extend(hex_decode(sig)),
            _ => {}
        }
    }
    let t = timestamp.ok_or_else(|| Refusal::Signature(format!("no t= timestamp in {HEADER}")))?;
    if signatures.is_empty() {
        return Err(Refusal::Signature(format!("no v1= signature in {HEADER}")));
    }
    let mut signed = Vec::with_capacity(t.len() + 1 + body.len());
    signed.extend_from_slice(t.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let matched = signatures
        .iter()
        .find(|sig| keys.any_verifies(&signed, sig))
        .ok_or_else(|| Refusal::Signature("no v1 signature matches a current secret".into()))?;
    check_timestamp(t, now, tolerance)?;
    // Stripe sends no event id in a header; the signature covers the timestamp and the body.
    Ok(ReplayKey::of("stripe-signature", matched))
}
