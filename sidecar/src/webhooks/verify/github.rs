//! GitHub: `X-Hub-Signature-256: sha256=HEX`, the HMAC-SHA256 of the body. GitHub signs no
//! timestamp; each delivery has an id in `X-GitHub-Delivery`, the replay key (a redelivery
//! from GitHub's UI gets a new id, so it passes, as it should).

use http::HeaderMap;

use super::{header, hex_decode, Keys, Refusal, ReplayKey};

pub const HEADER: &str = "x-hub-signature-256";
pub const DELIVERY: &str = "x-github-delivery";

pub(super) fn verify(keys: &Keys, headers: &HeaderMap, body: &[u8]) -> Result<ReplayKey, Refusal> {
    let value = header(headers, HEADER)?;
    let sig = value
        .strip_prefix("sha256=")
        .and_then(hex_decode)
        .ok_or_else(|| Refusal::Signature(format!("{HEADER} is not sha256=<hex>")))?;
    if !keys.any_verifies(body, &sig) {
        return Err(Refusal::Signature(format!(
            "{HEADER} does not match a current secret"
        )));
    }
    Ok(match headers.get(DELIVERY) {
        Some(id) => ReplayKey::of("github-delivery", id.as_bytes()),
        None => ReplayKey::of("github-signature", &sig),
    })
}
