//! What verifying one inbound webhook costs, per provider: a 1 KiB JSON body (a typical event)
//! and a 64 KiB one, with one signing secret and with two (during a rotation the second line
//! is the one that matches, the worst case). No I/O: the verification step alone.

use std::{hint::black_box, time::SystemTime};

use attache_api::{
    webhooks::{WebhookEncoding, WebhookProvider, WebhooksConfig},
    KubeDuration,
};
use attache_sidecar::webhooks::verify::{verify, Keys};
use base64::Engine;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::Request;
use ring::hmac;

fn config(provider: WebhookProvider) -> WebhooksConfig {
    WebhooksConfig {
        path: "/webhooks/bench".into(),
        forward_to: "http://127.0.0.1:8080/".into(),
        provider,
        tolerance: KubeDuration::from_secs(300),
        public_url: (provider == WebhookProvider::Twilio)
            .then(|| "https://hooks.example.com/twilio".into()),
        header: (provider == WebhookProvider::HmacSha256).then(|| "x-signature".into()),
        prefix: String::new(),
        encoding: WebhookEncoding::Hex,
        replay_window: KubeDuration::from_secs(86_400),
        max_body_bytes: 1 << 20,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A request signed the provider's way with `secret`, and its body.
fn signed(provider: WebhookProvider, secret: &str, size: usize) -> (http::request::Parts, Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sha256 =
        |data: &[u8]| hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()), data);
    let (req, body) = match provider {
        WebhookProvider::Twilio => {
            // A form body of `size` bytes: one large parameter and a few small ones.
            let big = "x".repeat(size.saturating_sub(60));
            let body = format!("MessageSid=SM1&MessageStatus=delivered&To=%2B1555&Body={big}");
            let signed = format!(
                "https://hooks.example.com/twilioBody{big}MessageSidSM1MessageStatusdeliveredTo+1555"
            );
            let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
            let req = Request::post("/webhooks/twilio")
                .header(
                    "x-twilio-signature",
                    b64(hmac::sign(&key, signed.as_bytes()).as_ref()),
                )
                .header("content-type", "application/x-www-form-urlencoded");
            (req, body.into_bytes())
        }
        _ => {
            let body = format!(
                r#"{{"id":"evt_1","data":"{}"}}"#,
                "x".repeat(size.saturating_sub(24))
            )
            .into_bytes();
            let req = match provider {
                WebhookProvider::Stripe => {
                    let mut data = format!("{now}.").into_bytes();
                    data.extend_from_slice(&body);
                    Request::post("/").header(
                        "stripe-signature",
                        format!("t={now},v1={}", hex(sha256(&data).as_ref())),
                    )
                }
                WebhookProvider::Github => Request::post("/")
                    .header(
                        "x-hub-signature-256",
                        format!("sha256={}", hex(sha256(&body).as_ref())),
                    )
                    .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
                WebhookProvider::Standard => {
                    let key = base64::engine::general_purpose::STANDARD
                        .decode(secret.trim_start_matches("whsec_"))
                        .unwrap();
                    let mut data = format!("msg_1.{now}.").into_bytes();
                    data.extend_from_slice(&body);
                    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), &data);
                    Request::post("/")
                        .header("webhook-id", "msg_1")
                        .header("webhook-timestamp", now.to_string())
                        .header("webhook-signature", format!("v1,{}", b64(tag.as_ref())))
                }
                _ => Request::post("/").header("x-signature", hex(sha256(&body).as_ref())),
            };
            (req, body)
        }
    };
    (req.body(()).unwrap().into_parts().0, body)
}

fn verification(c: &mut Criterion) {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let mut group = c.benchmark_group("webhook verification");
    for provider in [
        WebhookProvider::Stripe,
        WebhookProvider::Github,
        WebhookProvider::Twilio,
        WebhookProvider::Standard,
        WebhookProvider::HmacSha256,
    ] {
        let cfg = config(provider);
        for size in [1024usize, 64 * 1024] {
            let (head, body) = signed(provider, secret, size);
            group.throughput(Throughput::Bytes(body.len() as u64));
            for (secrets, label) in [
                (secret.to_string(), "1 secret"),
                (
                    format!("whsec_AAAAAAAAAAAAAAAAAAAAAA==\n{secret}"),
                    "2 secrets",
                ),
            ] {
                let keys = Keys::new(provider, secrets.as_bytes()).unwrap();
                assert!(verify(&cfg, &keys, &head, &body, SystemTime::now()).is_ok());
                let id = BenchmarkId::new(
                    format!("{}, {label}", provider.as_str()),
                    format!("{} KiB", size / 1024),
                );
                group.bench_function(id, |b| {
                    b.iter(|| {
                        black_box(verify(
                            &cfg,
                            &keys,
                            black_box(&head),
                            black_box(&body),
                            SystemTime::now(),
                        ))
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
