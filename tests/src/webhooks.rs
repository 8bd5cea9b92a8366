//! Plays the third party of inbound webhooks: signs requests the way each provider does
//! (with ring, independently of the sidecar's code) and sends them to the webhook listener.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use http::Request;
use ring::hmac;

use crate::client::{HttpClient, Response};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix seconds now, shifted by `offset` seconds.
pub fn unix_now(offset: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    now + offset
}

/// `Stripe-Signature: t=T,v1=HEX` for `body` with `secret`.
pub fn stripe_header(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", hex(hmac::sign(&key, &signed).as_ref()))
}

/// `X-Hub-Signature-256: sha256=HEX`.
pub fn github_header(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex(hmac::sign(&key, body).as_ref()))
}

/// `X-Twilio-Signature` for a form body posted to `url`.
pub fn twilio_header(token: &str, url: &str, form: &[(&str, &str)]) -> String {
    let mut params: Vec<(&str, &str)> = form.to_vec();
    params.sort();
    let mut signed = url.to_string();
    for (k, v) in params {
        signed.push_str(k);
        signed.push_str(v);
    }
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, token.as_bytes());
    b64(hmac::sign(&key, signed.as_bytes()).as_ref())
}

/// `webhook-signature: v1,BASE64` for a Standard Webhooks `whsec_` secret.
pub fn standard_header(secret: &str, id: &str, t: i64, body: &[u8]) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("whsec_ secret is base64");
    let key = hmac::Key::new(hmac::HMAC_SHA256, &raw);
    let mut signed = format!("{id}.{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("v1,{}", b64(hmac::sign(&key, &signed).as_ref()))
}

/// HEX of the HMAC-SHA256 of `body`.
pub fn hmac_sha256_hex(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hex(hmac::sign(&key, body).as_ref())
}

/// POSTs `body` with `headers` to `url`; panics if no response came.
pub async fn post(url: &str, headers: &[(&str, String)], body: impl Into<Bytes>) -> Response {
    let mut req = Request::post(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    HttpClient::new()
        .send(req.body(body.into()).expect("request builds"))
        .await
        .unwrap_or_else(|e| panic!("no response from {url}: {e:#}"))
}
