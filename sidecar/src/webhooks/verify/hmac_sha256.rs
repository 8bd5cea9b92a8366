//! Everything else: the HMAC-SHA256 of the body in a named header, hex or base64, after an
//! optional prefix (`sha256=`). No timestamp and no id: the signature is the replay key.

use attache_api::webhooks::WebhookEncoding;
use http::HeaderMap;

use super::{base64_decode, header, hex_decode, Keys, Refusal, ReplayKey};

pub(super) fn verify(
    keys: &Keys,
    name: &str,
    prefix: &str,
    encoding: WebhookEncoding,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ReplayKey, Refusal> {
    let value = header(headers, name)?.trim();
    let encoded = value.strip_prefix(prefix).ok_or_else(|| {
        Refusal::Signature(format!("the {name} header does not start with {prefix:?}"))
    })?;
    let sig = match encoding {
        WebhookEncoding::Hex => hex_decode(encoded),
        WebhookEncoding::Base64 => base64_decode(encoded),
    }
    .ok_or_else(|| {
        Refusal::Signature(format!(
            "the {name} header is not {}",
            match encoding {
                WebhookEncoding::Hex => "hex",
                WebhookEncoding::Base64 => "base64",
            }
        ))
    })?;
    if !keys.any_verifies(body, &sig) {
        return Err(Refusal::Signature(format!(
            "the {name} header does not match a current secret"
        )));
    }
    Ok(ReplayKey::of("hmac-signature", &sig))
}
