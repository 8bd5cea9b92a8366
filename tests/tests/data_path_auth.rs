//! Credential injection by the real `attache-sidecar` binary: each auth kind arrives upstream
//! as configured, an app's own `Authorization` never passes through, and the secret values
//! appear nowhere the sidecar writes to: logs (at debug level), metrics, admin endpoints and
//! the error bodies it makes.

use std::time::Duration;

use attache_tests::client::HttpClient;
use attache_tests::sidecar::Sidecar;
use attache_tests::{ca_bundle_ref, xint, LocalSetup, TestCa, Upstream};
use base64::Engine;
use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};

const API_KEY: &str = "ak_live_5ecr3t_api_key_91f2";
const BEARER: &str = "bt_live_5ecr3t_bearer_4c7d";
const BASIC_USER: &str = "svc-user-5ecr3t";
const BASIC_PASS: &str = "pw_5ecr3t_basic_8e1b";
const QUERY_KEY: &str = "qp_5ecr3t_query_2a6c";
/// What an app might still carry, and must never reach the third party.
const APP_AUTH: &str = "Bearer app-held-token-0000";

/// Listener index of each integration (sorted by name).
const API_KEY_INT: usize = 0; // a-apikey
const BASIC_INT: usize = 1; // b-basic
const BEARER_INT: usize = 2; // c-bearer
const QUERY_INT: usize = 3; // d-query

fn basic_b64() -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{BASIC_USER}:{BASIC_PASS}"))
}

/// Every form in which a secret could leak.
fn secret_forms() -> Vec<String> {
    vec![
        API_KEY.into(),
        BEARER.into(),
        BASIC_USER.into(),
        BASIC_PASS.into(),
        basic_b64(),
        QUERY_KEY.into(),
    ]
}

/// One sidecar with the four header/query kinds, logging at debug level, in front of an echo
/// upstream (trailing newlines in the secret files are trimmed, as from `echo > file`).
async fn start(up: &Upstream, ca: &TestCa) -> (LocalSetup, Sidecar) {
    let mut setup = LocalSetup::trusting(ca);
    setup.secret("vendor-key", "api-key", format!("{API_KEY}\n"));
    setup.secret("vendor-token", "token", BEARER);
    setup.secret("vendor-login", "username", BASIC_USER);
    setup.secret("vendor-login", "password", format!("{BASIC_PASS}\n"));
    setup.secret("vendor-query", "key", QUERY_KEY);
    let spec = |auth: Value| {
        json!({
            "upstream": {"url": up.url()},
            "auth": auth,
            "tls": {"caBundleRef": ca_bundle_ref()},
        })
    };
    setup.manifest(&[
        xint(
            "a-apikey",
            spec(json!({"apiKey": {
                "header": "X-Api-Key",
                "prefix": "Key ",
                "secretKeyRef": {"name": "vendor-key", "key": "api-key"},
            }})),
        ),
        xint(
            "b-basic",
            spec(json!({"basic": {"secretRef": {"name": "vendor-login"}}})),
        ),
        xint(
            "c-bearer",
            spec(json!({"bearer": {"secretKeyRef": {"name": "vendor-token", "key": "token"}}})),
        ),
        xint(
            "d-query",
            spec(json!({"queryParam": {
                "name": "api_key",
                "secretKeyRef": {"name": "vendor-query", "key": "key"},
            }})),
        ),
    ]);
    let sidecar = setup.start_with(&["--log-level", "debug"]).await;
    (setup, sidecar)
}

/// GET `path` on integration `index` as an app holding a stale credential of its own.
async fn app_get(sidecar: &Sidecar, index: usize, path: &str) -> Value {
    let req = Request::get(format!("{}{path}", sidecar.url(index)))
        .header("authorization", APP_AUTH)
        .header("x-api-key", "app-own-key")
        .body(Bytes::new())
        .unwrap();
    let resp = attache_tests::send(req).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

#[tokio::test]
async fn api_key_goes_in_the_configured_header_with_its_prefix() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let (_setup, sidecar) = start(&up, &ca).await;
    let echo = app_get(&sidecar, API_KEY_INT, "/v1/items").await;
    assert_eq!(
        echo["headers"]["x-api-key"],
        format!("Key {API_KEY}"),
        "the app's own x-api-key is replaced, not appended: {echo}"
    );
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the app's Authorization must not pass through: {echo}"
    );
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get_all("x-api-key").iter().count(), 1);
}

#[tokio::test]
async fn bearer_replaces_the_apps_authorization() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let (_setup, sidecar) = start(&up, &ca).await;
    app_get(&sidecar, BEARER_INT, "/v1/items").await;
    let seen = up.requests();
    let values: Vec<_> = seen[0].headers.get_all("authorization").iter().collect();
    assert_eq!(values.len(), 1, "{values:?}");
    assert_eq!(values[0], format!("Bearer {BEARER}").as_str());
}

#[tokio::test]
async fn basic_sends_base64_username_and_password() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let (_setup, sidecar) = start(&up, &ca).await;
    let echo = app_get(&sidecar, BASIC_INT, "/v1/items").await;
    assert_eq!(
        echo["headers"]["authorization"],
        format!("Basic {}", basic_b64())
    );
}

#[tokio::test]
async fn query_param_is_added_and_an_app_supplied_one_dropped() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let (_setup, sidecar) = start(&up, &ca).await;
    let echo = app_get(
        &sidecar,
        QUERY_INT,
        "/v1/search?q=shoes&api_key=mine&page=2",
    )
    .await;
    let pq = echo["path_and_query"].as_str().unwrap();
    let (path, query) = pq.split_once('?').unwrap();
    assert_eq!(path, "/v1/search");
    let mut pairs: Vec<&str> = query.split('&').collect();
    pairs.sort_unstable();
    assert_eq!(
        pairs,
        [
            "api_key=".to_string() + QUERY_KEY,
            "page=2".into(),
            "q=shoes".into()
        ],
        "{pq}"
    );
    assert!(
        echo["headers"].get("authorization").is_none(),
        "the app's Authorization must not pass through: {echo}"
    );
}

#[tokio::test]
async fn secrets_appear_in_no_log_line_metric_admin_answer_or_error_body() {
    let ca = TestCa::new("ca");
    let up = Upstream::echo(&ca).await;
    let (setup, mut sidecar) = start(&up, &ca).await;
    let mut texts: Vec<(String, String)> = Vec::new();

    // Normal traffic on every integration, proving the secrets are in use.
    for index in 0..4 {
        app_get(&sidecar, index, "/v1/items?page=1").await;
    }
    // Errors the sidecar makes itself, on every integration: a refused protocol upgrade, then
    // the upstream gone (connect failures, after any retries).
    let client = HttpClient::new().with_timeout(Duration::from_secs(60));
    for index in 0..4 {
        let req = Request::get(format!("{}/ws", sidecar.url(index)))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(Bytes::new())
            .unwrap();
        let resp = client.send(req).await.unwrap();
        assert_eq!(
            resp.header("x-attache-error"),
            Some("bad_request"),
            "{resp:?}"
        );
        texts.push((format!("upgrade error body of #{index}"), resp.text()));
    }
    up.stop();
    for index in 0..4 {
        let resp = client
            .get(&format!("{}/v1/items?page=2", sidecar.url(index)))
            .await
            .unwrap();
        assert_eq!(resp.status, 502, "{}", resp.text());
        assert!(resp.header("x-attache-error").is_some(), "{resp:?}");
        texts.push((format!("upstream-down error body of #{index}"), resp.text()));
    }
    // A rotation to a value that is not a valid header (a control character), which the
    // sidecar must reject without quoting it, then a valid rotation.
    setup.secret("vendor-token", "token", format!("{BEARER}\u{7}{BEARER}"));
    sidecar
        .wait_metric(
            "attache_config_reloads_total",
            &[("result", "failure")],
            1.0,
            Duration::from_secs(10),
        )
        .await
        .expect("the invalid credential is rejected");

    for path in ["/metrics", "/healthz", "/readyz", "/config", "/"] {
        let resp = client.get(&sidecar.admin_url(path)).await.unwrap();
        texts.push((format!("admin {path}"), resp.text()));
        let headers = format!("{:?}", resp.headers);
        texts.push((format!("admin {path} headers"), headers));
    }
    // Stop the sidecar so that its output is complete, up to the last line.
    sidecar.sigterm();
    sidecar
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the sidecar stops on SIGTERM");
    texts.push(("sidecar stdout/stderr".into(), sidecar.output()));

    let mut leaks = Vec::new();
    for (what, text) in &texts {
        for secret in secret_forms() {
            if text.contains(&secret) {
                let line = text.lines().find(|l| l.contains(&secret)).unwrap_or("");
                leaks.push(format!("{what} contains {secret:?}: {line}"));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert!(
        sidecar.output().contains("DEBUG"),
        "debug logging was on, so debug lines were searched too"
    );
}
