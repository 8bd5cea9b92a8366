//! Each provider against the example in its own documentation, plus the refusals.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use attache_api::{
    webhooks::{WebhookEncoding, WebhookProvider, WebhooksConfig},
    KubeDuration,
};
use http::Request;

use super::*;

fn config(provider: WebhookProvider) -> WebhooksConfig {
    WebhooksConfig {
        path: "/webhooks/x".into(),
        forward_to: "http://127.0.0.1:1/".into(),
        provider,
        tolerance: KubeDuration::from_secs(300),
        public_url: None,
        header: None,
        prefix: String::new(),
        encoding: WebhookEncoding::Hex,
        replay_window: KubeDuration::from_secs(3600),
        max_body_bytes: 1 << 20,
    }
}

fn at(unix: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(unix)
}

fn check(
    config: &WebhooksConfig,
    secrets: &str,
    req: Request<()>,
    body: &[u8],
    now: SystemTime,
) -> Result<ReplayKey, Refusal> {
    let keys = Keys::new(config.provider, secrets.as_bytes()).unwrap();
    let (head, ()) = req.into_parts();
    verify(config, &keys, &head, body, now)
}

/// GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
/// https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
#[test]
fn github_documented_example() {
    let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    let req = || {
        Request::post("/")
            .header("x-hub-signature-256", sig)
            .header("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .body(())
            .unwrap()
    };
    let c = config(WebhookProvider::Github);
    let secret = "It's a Secret to Everybody";
    let key = check(&c, secret, req(), b"Hello, World!", at(0)).unwrap();
    assert_eq!(
        key,
        ReplayKey::of("github-delivery", b"72d3162e-cc78-11e3-81ab-4c9367dc0958")
    );
    // One byte changed in the body, or another secret: refused.
    assert!(matches!(
        check(&c, secret, req(), b"Hello, World?", at(0)),
        Err(Refusal::Signature(_))
    ));
    assert!(check(&c, "another", req(), b"Hello, World!", at(0)).is_err());
    // Rotation: the right secret on any line verifies.
    assert!(check(
        &c,
        &format!("old-one\n{secret}\n"),
        req(),
        b"Hello, World!",
        at(0)
    )
    .is_ok());
}

/// The Standard Webhooks specification's example (secret, id, timestamp, payload, signature).
/// https://github.com/standard-webhooks/standard-webhooks/blob/main/spec/standard-webhooks.md#verifying-webhook-authenticity
#[test]
fn standard_webhooks_spec_example() {
    let req = |ts: &str| {
        Request::post("/")
            .header("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
            .header("webhook-timestamp", ts)
            .header(
                "webhook-signature",
                "v1,bm9ldHRoZXJpZ2h0c2lnbmF0dXJlYXRhbGxhdGFsbA== v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
            )
            .body(())
            .unwrap()
    };
    let c = config(WebhookProvider::Standard);
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = br#"{"test": 2432232314}"#;
    let key = check(&c, secret, req("1614265330"), body, at(1_614_265_330 + 10)).unwrap();
    assert_eq!(
        key,
        ReplayKey::of("standard-id", b"msg_p5jXN8AQM9LWM0D4loKWxJek")
    );
    // A valid signature, checked an hour later: stale.
    assert!(matches!(
        check(
            &c,
            secret,
            req("1614265330"),
            body,
            at(1_614_265_330 + 3600)
        ),
        Err(Refusal::Timestamp(_))
    ));
    // The timestamp is signed: changing it breaks the signature.
    assert!(matches!(
        check(&c, secret, req("1614265331"), body, at(1_614_265_330)),
        Err(Refusal::Signature(_))
    ));
}

/// Twilio's documented example: auth token 12345, https://mycompany.com/myapp.php?foo=1&bar=2
/// and five POST parameters, signature RSOYDt4T1cUTdK1PDd93/VVr8B8=.
/// https://www.twilio.com/docs/usage/security#validating-requests (and the twilio-php
/// library's validation guide, docs/usage/validation.rst)
#[test]
fn twilio_documented_example() {
    let mut c = config(WebhookProvider::Twilio);
    c.public_url = Some("https://mycompany.com/myapp.php".into());
    let req = || {
        Request::post("/webhooks/twilio?foo=1&bar=2")
            .header("x-twilio-signature", "RSOYDt4T1cUTdK1PDd93/VVr8B8=")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(())
            .unwrap()
    };
    // Parameter order on the wire does not matter: they are sorted before signing.
    let body = b"To=%2B18005551212&CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309";
    assert!(check(&c, "12345", req(), body, at(0)).is_ok());
    let tampered = b"To=%2B18005551213&CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309";
    assert!(check(&c, "12345", req(), tampered, at(0)).is_err());
}

/// Twilio's JSON variant: the URL carries bodySHA256 and the signature covers the URL only.
#[test]
fn twilio_json_bodies_are_bound_by_their_hash() {
    use base64::Engine;
    let mut c = config(WebhookProvider::Twilio);
    c.public_url = Some("https://hooks.example.com/twilio".into());
    let body = br#"{"MessageStatus":"delivered"}"#;
    let hash: String = ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let url = format!("https://hooks.example.com/twilio?bodySHA256={hash}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"token");
    let sig =
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, url.as_bytes()));
    let req = || {
        Request::post(format!("/twilio?bodySHA256={hash}"))
            .header("x-twilio-signature", &sig)
            .header("content-type", "application/json")
            .body(())
            .unwrap()
    };
    assert!(check(&c, "token", req(), body, at(0)).is_ok());
    let e = check(&c, "token", req(), br#"{"MessageStatus":"failed"}"#, at(0)).unwrap_err();
    assert!(e.to_string().contains("bodySHA256"), "{e}");
}

/// Stripe's scheme (https://docs.stripe.com/webhooks#verify-manually): HMAC-SHA256 of
/// "{t}.{body}", hex, in `v1=`. The expected value was computed with Python's hmac module.
#[test]
fn stripe_signature_with_tolerance() {
    let c = config(WebhookProvider::Stripe);
    let body = br#"{"id":"evt_1"}"#;
    let good = "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925";
    let req = |v1s: &str| {
        Request::post("/")
            .header("stripe-signature", format!("t=1700000000,{v1s},v0=abcd"))
            .body(())
            .unwrap()
    };
    let now = at(1_700_000_000 + 60);
    assert!(check(&c, "whsec_test", req(&format!("v1={good}")), body, now).is_ok());
    // During Stripe's secret roll, one of two v1 entries matches.
    assert!(check(
        &c,
        "whsec_test",
        req(&format!("v1={},v1={good}", "00".repeat(32))),
        body,
        now
    )
    .is_ok());
    let e = check(
        &c,
        "whsec_test",
        req(&format!("v1={good}")),
        body,
        at(1_700_000_000 + 301),
    );
    assert!(matches!(e, Err(Refusal::Timestamp(_))), "{e:?}");
    let e = check(&c, "whsec_other", req(&format!("v1={good}")), body, now).unwrap_err();
    assert!(matches!(e, Refusal::Signature(_)));
    // The expected signature never appears in a refusal.
    assert!(!e.to_string().contains(good));
    let missing = Request::post("/").body(()).unwrap();
    assert_eq!(
        check(&c, "whsec_test", missing, body, now).unwrap_err(),
        Refusal::Signature("no stripe-signature header".into())
    );
}

#[test]
fn hmac_sha256_with_prefix_and_base64() {
    use base64::Engine;
    let mut c = config(WebhookProvider::HmacSha256);
    c.header = Some("X-Signature".into());
    c.prefix = "sha256=".into();
    c.encoding = WebhookEncoding::Base64;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
    let sig = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, b"payload"));
    let req = |v: String| {
        Request::post("/")
            .header("x-signature", v)
            .body(())
            .unwrap()
    };
    assert!(check(
        &c,
        "s3cret",
        req(format!("sha256={sig}")),
        b"payload",
        at(0)
    )
    .is_ok());
    assert!(
        check(&c, "s3cret", req(sig.clone()), b"payload", at(0)).is_err(),
        "prefix required"
    );
    assert!(check(
        &c,
        "s3cret",
        req(format!("sha256={sig}")),
        b"payload!",
        at(0)
    )
    .is_err());
}

#[test]
fn secrets_files_must_hold_usable_secrets() {
    assert!(matches!(
        Keys::new(WebhookProvider::Github, b"\n \n"),
        Err(KeysError::Empty)
    ));
    assert!(matches!(
        Keys::new(WebhookProvider::Standard, b"whsec_AAEC\nnot base64!"),
        Err(KeysError::NotStandard(2))
    ));
    assert_eq!(
        Keys::new(WebhookProvider::Github, b"a\nb\n").unwrap().len(),
        2
    );
}
