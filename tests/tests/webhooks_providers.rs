//! Inbound webhooks end to end: the real `attache-sidecar` in local mode, a real app (the
//! kit's plain-HTTP upstream) behind it, and requests signed the way each third party signs
//! them. Every provider: valid, forged, stale (providers that sign a timestamp), replayed,
//! a rotated secret, an oversized body, the app down; plus the replay cache across a reload.

use std::time::Duration;

use attache_tests::{
    process::free_port,
    sidecar::{assert_sidecar_error_for, xint, LocalSetup, Sidecar},
    webhooks::{
        github_header, hmac_sha256_hex, post, standard_header, stripe_header, twilio_header,
        unix_now,
    },
    Action, Response, Upstream,
};
use serde_json::{json, Value};

const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const TWILIO_URL: &str = "https://hooks.example.com/twilio";

struct Rig {
    app: Upstream,
    sidecar: Sidecar,
    setup: LocalSetup,
    webhook_port: u16,
    dead_port: u16,
}

fn integration(name: &str, forward_to: &str, verify: Value, extra: Value) -> Value {
    let mut webhooks = json!({"forwardTo": forward_to, "verify": verify});
    if let Value::Object(m) = extra {
        webhooks.as_object_mut().unwrap().extend(m);
    }
    xint(
        name,
        json!({"upstream": {"url": "https://api.example.com"}, "webhooks": webhooks}),
    )
}

fn manifests(app: &str, dead: &str, github_extra: Value) -> Vec<Value> {
    let secret = |name: &str| json!({"name": name, "key": "signing-secret"});
    vec![
        integration(
            "github",
            &format!("{app}/gh"),
            json!({"provider": "github", "secretKeyRef": secret("github")}),
            github_extra,
        ),
        integration(
            "generic",
            &format!("{app}/generic"),
            json!({"provider": "hmac-sha256", "secretKeyRef": secret("generic"),
            "header": "X-Signature", "prefix": "sha256="}),
            json!({"maxBodyBytes": "1Ki"}),
        ),
        integration(
            "down",
            dead,
            json!({"provider": "github", "secretKeyRef": secret("github")}),
            json!({}),
        ),
        integration(
            "standard",
            &format!("{app}/std"),
            json!({"provider": "standard", "secretKeyRef": secret("standard")}),
            json!({}),
        ),
        integration(
            "stripe",
            &format!("{app}/stripe"),
            json!({"provider": "stripe", "secretKeyRef": secret("stripe"), "tolerance": "5m"}),
            json!({}),
        ),
        integration(
            "twilio",
            &format!("{app}/twilio"),
            json!({"provider": "twilio", "secretKeyRef": secret("twilio"), "publicUrl": TWILIO_URL}),
            json!({}),
        ),
    ]
}

impl Rig {
    async fn start() -> Rig {
        let app = Upstream::builder()
            .default_action(Action::respond(200, "taken"))
            .start()
            .await;
        let mut setup = LocalSetup::new();
        setup.secret("github", "signing-secret", "gh-secret\n");
        setup.secret("generic", "signing-secret", "generic-secret");
        setup.secret("standard", "signing-secret", STANDARD_SECRET);
        // Two lines: the old and the new secret, both valid during the rotation.
        setup.secret("stripe", "signing-secret", "whsec_old\nwhsec_new\n");
        setup.secret("twilio", "signing-secret", "tw-token");
        let dead_port = free_port();
        let dead = format!("http://127.0.0.1:{dead_port}/nobody");
        setup.manifest(&manifests(&app.url(), &dead, json!({})));
        let webhook_port = free_port();
        let addr = format!("127.0.0.1:{webhook_port}");
        let sidecar = setup.start_with(&["--webhook-addr", &addr]).await;
        Rig {
            app,
            sidecar,
            setup,
            webhook_port,
            dead_port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.webhook_port)
    }

    async fn github(&self, path: &str, delivery: &str, body: &str, secret: &str) -> Response {
        let headers = [
            (
                "x-hub-signature-256",
                github_header(secret, body.as_bytes()),
            ),
            ("x-github-delivery", delivery.to_string()),
            ("content-type", "application/json".to_string()),
        ];
        post(&self.url(path), &headers, body.to_string()).await
    }

    async fn stripe(&self, body: &str, header: String) -> Response {
        post(
            &self.url("/webhooks/stripe"),
            &[("stripe-signature", header)],
            body.to_string(),
        )
        .await
    }

    async fn count(&self, integration: &str, result: &str) -> f64 {
        self.sidecar
            .metric(
                "attache_webhooks_total",
                &[("integration", integration), ("result", result)],
            )
            .await
            .unwrap_or(0.0)
    }
}

fn assert_taken(resp: &Response) {
    assert_eq!(
        (resp.status, resp.text()),
        (200, "taken".to_string()),
        "{:?}",
        resp.headers
    );
}

#[tokio::test]
async fn github_valid_forged_replayed() {
    let rig = Rig::start().await;
    let body = r#"{"action":"opened","number":1}"#;
    let ok = rig
        .github("/webhooks/github", "d-1", body, "gh-secret")
        .await;
    assert_taken(&ok);
    let seen = rig.app.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/gh");
    assert_eq!(seen[0].header("x-attache-webhook-verified"), Some("github"));
    assert_eq!(seen[0].header("x-github-delivery"), Some("d-1"));
    assert_eq!(
        seen[0].body,
        body.as_bytes(),
        "the raw body reaches the app"
    );

    let replay = rig
        .github("/webhooks/github", "d-1", body, "gh-secret")
        .await;
    assert_sidecar_error_for(&replay, 409, "webhook_replay", "github");
    let forged = rig.github("/webhooks/github", "d-2", body, "guessed").await;
    assert_sidecar_error_for(&forged, 401, "webhook_signature", "github");
    assert!(!forged.text().contains("gh-secret"));
    // A caller cannot claim verification itself.
    let spoofed = post(
        &rig.url("/webhooks/github"),
        &[("x-attache-webhook-verified", "github".to_string())],
        body,
    )
    .await;
    assert_sidecar_error_for(&spoofed, 401, "webhook_signature", "github");
    assert_eq!(rig.app.count(), 1, "refused requests never reach the app");
    assert_eq!(rig.count("github", "verified").await, 1.0);
    assert_eq!(rig.count("github", "replay").await, 1.0);
    assert_eq!(rig.count("github", "bad_signature").await, 2.0);
    rig.sidecar
        .wait_for_output("webhook refused", Duration::from_secs(5))
        .await
        .expect("a log line per refusal");
    assert!(
        !rig.sidecar.output().contains("gh-secret"),
        "no secret in the log"
    );

    let unknown = post(&rig.url("/webhooks/nobody"), &[], "x").await;
    assert_eq!(unknown.status, 404);
}

#[tokio::test]
async fn stripe_rotation_stale_and_replay() {
    let rig = Rig::start().await;
    let body = r#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;
    let now = unix_now(0);
    // Signed with the old secret, then with the new one: both lines of the Secret are valid.
    assert_taken(
        &rig.stripe(body, stripe_header("whsec_old", now, body.as_bytes()))
            .await,
    );
    let body2 = r#"{"id":"evt_2"}"#;
    assert_taken(
        &rig.stripe(body2, stripe_header("whsec_new", now, body2.as_bytes()))
            .await,
    );
    assert_eq!(
        rig.app.requests()[0].header("x-attache-webhook-verified"),
        Some("stripe")
    );
    let replay = rig
        .stripe(body, stripe_header("whsec_old", now, body.as_bytes()))
        .await;
    assert_sidecar_error_for(&replay, 409, "webhook_replay", "stripe");
    let body3 = r#"{"id":"evt_3"}"#;
    let stale = rig
        .stripe(
            body3,
            stripe_header("whsec_new", now - 600, body3.as_bytes()),
        )
        .await;
    assert_sidecar_error_for(&stale, 401, "webhook_timestamp", "stripe");
    let forged = rig
        .stripe(body3, stripe_header("whsec_retired", now, body3.as_bytes()))
        .await;
    assert_sidecar_error_for(&forged, 401, "webhook_signature", "stripe");
    // The body is verified as sent: one changed byte breaks it.
    let tampered = rig
        .stripe(
            r#"{"id":"evt_4" }"#,
            stripe_header("whsec_new", now, br#"{"id":"evt_4"}"#),
        )
        .await;
    assert_sidecar_error_for(&tampered, 401, "webhook_signature", "stripe");
    assert_eq!(rig.count("stripe", "stale").await, 1.0);
    assert_eq!(rig.count("stripe", "verified").await, 2.0);
}

#[tokio::test]
async fn standard_webhooks_valid_stale_replayed() {
    let rig = Rig::start().await;
    let send = |id: &'static str, t: i64, secret: &'static str| {
        let body = format!(r#"{{"type":"invoice.paid","id":"{id}"}}"#);
        let headers = vec![
            ("webhook-id", id.to_string()),
            ("webhook-timestamp", t.to_string()),
            (
                "webhook-signature",
                standard_header(secret, id, t, body.as_bytes()),
            ),
        ];
        let url = rig.url("/webhooks/standard");
        async move { post(&url, &headers, body).await }
    };
    let now = unix_now(0);
    assert_taken(&send("msg_1", now, STANDARD_SECRET).await);
    assert_eq!(
        rig.app.requests()[0].header("x-attache-webhook-verified"),
        Some("standard")
    );
    assert_sidecar_error_for(
        &send("msg_1", now, STANDARD_SECRET).await,
        409,
        "webhook_replay",
        "standard",
    );
    assert_sidecar_error_for(
        &send("msg_2", now - 3600, STANDARD_SECRET).await,
        401,
        "webhook_timestamp",
        "standard",
    );
    assert_sidecar_error_for(
        &send("msg_3", now, "whsec_AAAAAAAAAAAAAAAAAAAAAA==").await,
        401,
        "webhook_signature",
        "standard",
    );
}

#[tokio::test]
async fn twilio_form_posts_are_verified_against_the_public_url() {
    let rig = Rig::start().await;
    let form = [
        ("MessageSid", "SM1"),
        ("MessageStatus", "delivered"),
        ("To", "+15551234567"),
    ];
    let body = "To=%2B15551234567&MessageSid=SM1&MessageStatus=delivered";
    let send = |sig: String, token: &'static str| {
        let headers = vec![
            ("x-twilio-signature", sig),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("i-twilio-idempotency-token", token.to_string()),
        ];
        let url = rig.url("/webhooks/twilio");
        async move { post(&url, &headers, body).await }
    };
    assert_taken(&send(twilio_header("tw-token", TWILIO_URL, &form), "tok-1").await);
    assert_eq!(
        rig.app.requests()[0].header("x-attache-webhook-verified"),
        Some("twilio")
    );
    assert_sidecar_error_for(
        &send(twilio_header("tw-token", TWILIO_URL, &form), "tok-1").await,
        409,
        "webhook_replay",
        "twilio",
    );
    // Signed for another URL (an attacker's own Twilio account pointing elsewhere).
    let other = twilio_header("tw-token", "https://evil.example.com/twilio", &form);
    assert_sidecar_error_for(
        &send(other, "tok-2").await,
        401,
        "webhook_signature",
        "twilio",
    );
}

#[tokio::test]
async fn hmac_sha256_oversized_bodies_and_the_app_down() {
    let rig = Rig::start().await;
    let body = "ping";
    let sig = format!(
        "sha256={}",
        hmac_sha256_hex("generic-secret", body.as_bytes())
    );
    let ok = post(
        &rig.url("/webhooks/generic"),
        &[("x-signature", sig.clone())],
        body,
    )
    .await;
    assert_taken(&ok);
    assert_eq!(
        rig.app.requests()[0].header("x-attache-webhook-verified"),
        Some("hmac-sha256")
    );
    let unprefixed = post(
        &rig.url("/webhooks/generic"),
        &[("x-signature", sig[7..].to_string())],
        body,
    )
    .await;
    assert_sidecar_error_for(&unprefixed, 401, "webhook_signature", "generic");

    // maxBodyBytes 1Ki: refused before the signature is even looked at.
    let big = "x".repeat(4096);
    let big_sig = format!(
        "sha256={}",
        hmac_sha256_hex("generic-secret", big.as_bytes())
    );
    let resp = post(
        &rig.url("/webhooks/generic"),
        &[("x-signature", big_sig)],
        big,
    )
    .await;
    assert_sidecar_error_for(&resp, 413, "webhook_too_large", "generic");
    assert_eq!(rig.count("generic", "too_large").await, 1.0);

    // The app behind integration "down" does not listen: 502, and the provider's retry of the
    // same delivery is not a replay.
    let down = rig.github("/webhooks/down", "d-9", "{}", "gh-secret").await;
    assert_sidecar_error_for(&down, 502, "webhook_forward", "down");
    assert!(
        down.text().contains(&rig.dead_port.to_string()),
        "{}",
        down.text()
    );
    let again = rig.github("/webhooks/down", "d-9", "{}", "gh-secret").await;
    assert_sidecar_error_for(&again, 502, "webhook_forward", "down");
    assert_eq!(rig.count("down", "forward_error").await, 2.0);
}

#[tokio::test]
async fn a_reload_keeps_the_replay_cache() {
    let mut rig = Rig::start().await;
    let body = r#"{"zen":"Keep it logically awesome."}"#;
    assert_taken(
        &rig.github("/webhooks/github", "d-7", body, "gh-secret")
            .await,
    );
    let before = rig
        .sidecar
        .metric("attache_config_reloads_total", &[("result", "success")])
        .await
        .unwrap_or(0.0);
    let dead = format!("http://127.0.0.1:{}/nobody", rig.dead_port);
    let docs = manifests(&rig.app.url(), &dead, json!({"replayWindow": "12h"}));
    rig.setup.manifest(&docs);
    rig.sidecar
        .wait_metric(
            "attache_config_reloads_total",
            &[("result", "success")],
            before + 1.0,
            Duration::from_secs(10),
        )
        .await
        .expect("the edited manifest is reloaded");
    let replay = rig
        .github("/webhooks/github", "d-7", body, "gh-secret")
        .await;
    assert_sidecar_error_for(&replay, 409, "webhook_replay", "github");
}

/// What the operator renders (ConfigMap + Secret, `webhook-secrets` with both lines) is
/// served the same way by `attache-sidecar run --config-dir`.
#[tokio::test]
async fn rendered_config_dirs_serve_webhooks_too() {
    use attache_tests::sidecar::{render_volume, ConfigDir, SecretFiles};
    let app = Upstream::builder()
        .default_action(Action::respond(202, "queued"))
        .start()
        .await;
    let doc = integration(
        "github",
        &format!("{}/hooks", app.url()),
        json!({"provider": "github", "secretKeyRef": {"name": "gh", "key": "secret"}}),
        json!({"path": "/gh"}),
    );
    let files = render_volume(&doc, &SecretFiles::new().with("gh", "secret", "old\nnew\n"));
    assert_eq!(files["webhook-secrets"], b"old\nnew\n");
    let config: Value = serde_json::from_slice(&files["config.json"]).unwrap();
    assert_eq!(config["webhooks"]["path"], "/gh");
    assert_eq!(config["webhooks"]["maxBodyBytes"], 1 << 20);
    assert!(!String::from_utf8_lossy(&files["config.json"]).contains("new"));
    let mut dir = ConfigDir::new();
    dir.publish("github", &files);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _sidecar = dir.start(1, &["--webhook-addr", &addr]).await;
    let body = "{}";
    let headers = [("x-hub-signature-256", github_header("new", body.as_bytes()))];
    let resp = post(&format!("http://{addr}/gh"), &headers, body).await;
    assert_eq!((resp.status, resp.text()), (202, "queued".to_string()));
    assert_eq!(app.requests()[0].path_and_query, "/hooks");
}
