//! Inbound webhook verification: whatever signature headers and body a caller sends, every
//! provider's verifier returns (never panics), never accepts a request it could not have
//! signed with the configured secret, and never names the secret in its refusal.
#![no_main]
#![forbid(unsafe_code)]

use std::time::{Duration, SystemTime};

use attache_api::{
    duration::KubeDuration,
    webhooks::{WebhookEncoding, WebhookProvider, WebhooksConfig},
};
use attache_sidecar::webhooks::verify::{verify, Keys};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-signing-secret";
/// The same secret as a Standard Webhooks key (`whsec_` + base64).
const STANDARD_SECRET: &str = "whsec_ZnV6ei1zaWduaW5nLXNlY3JldA==";

fn config(provider: WebhookProvider, encoding: WebhookEncoding) -> WebhooksConfig {
    WebhooksConfig {
        path: "/hook".into(),
        forward_to: "http://127.0.0.1:8080/hook".into(),
        provider,
        tolerance: KubeDuration::from_secs(300),
        public_url: Some("https://example.com/hook".into()),
        header: Some("x-signature".into()),
        prefix: "sha256=".into(),
        encoding,
        replay_window: KubeDuration::from_secs(600),
        max_body_bytes: 1 << 20,
    }
}

fuzz_target!(|data: &[u8]| {
    // Up to three header values separated by newlines, then the body.
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let signature = parts.next().unwrap_or_default();
    let id = parts.next().unwrap_or_default();
    let timestamp = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let providers = [
        (WebhookProvider::Stripe, WebhookEncoding::Hex),
        (WebhookProvider::Github, WebhookEncoding::Hex),
        (WebhookProvider::Twilio, WebhookEncoding::Base64),
        (WebhookProvider::Standard, WebhookEncoding::Base64),
        (WebhookProvider::HmacSha256, WebhookEncoding::Hex),
        (WebhookProvider::HmacSha256, WebhookEncoding::Base64),
    ];
    for (provider, encoding) in providers {
        let secret = if provider == WebhookProvider::Standard {
            STANDARD_SECRET
        } else {
            SECRET
        };
        let keys = Keys::new(provider, secret.as_bytes()).expect("a valid secret");
        let mut request = http::Request::builder()
            .method("POST")
            .uri("/hook?bodySHA256=00")
            .header("content-type", "application/x-www-form-urlencoded");
        for name in [
            "stripe-signature",
            "x-hub-signature-256",
            "x-twilio-signature",
            "webhook-signature",
            "svix-signature",
            "x-signature",
        ] {
            if let Ok(v) = http::HeaderValue::from_bytes(signature) {
                request = request.header(name, v);
            }
        }
        for (name, value) in [
            ("webhook-id", id),
            ("x-github-delivery", id),
            ("webhook-timestamp", timestamp),
        ] {
            if let Ok(v) = http::HeaderValue::from_bytes(value) {
                request = request.header(name, v);
            }
        }
        let Ok(request) = request.body(()) else {
            continue;
        };
        let (head, ()) = request.into_parts();
        match verify(&config(provider, encoding), &keys, &head, body, now) {
            Ok(_) => panic!("{provider:?} accepted a signature made without its secret"),
            Err(refusal) => {
                let text = refusal.to_string();
                assert!(!text.contains(SECRET) && !text.contains(STANDARD_SECRET), "{text}");
            }
        }
    }
});
