//! OAuth2 client credentials in the real `attache-sidecar` binary, against a local HTTPS token
//! endpoint (the test kit's upstream, same CA as the API: the sidecar fetches tokens with the
//! integration's TLS settings) that counts its calls.

use std::time::{Duration, Instant};

use attache_tests::sidecar::Sidecar;
use attache_tests::{ca_bundle_ref, free_port, xint, Action, LocalSetup, TestCa, Upstream};
use base64::Engine;
use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};

const CLIENT_ID: &str = "attache-payments";
const CLIENT_SECRET: &str = "cs_5ecr3t_oauth_client_77ab";

fn token(access_token: &str, expires_in: u64) -> Action {
    Action::json(
        200,
        json!({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer"}),
    )
}

fn oauth_spec(up: &Upstream, api_base: &str, token_url: &str) -> Value {
    json!({
        "upstream": {"url": format!("{}{api_base}", up.url())},
        "auth": {"oauth2ClientCredentials": {
            "tokenUrl": token_url,
            "clientId": CLIENT_ID,
            "clientSecretRef": {"name": "oauth-client", "key": "client-secret"},
            "scopes": ["payments:read", "payments:write"],
            "audience": "https://api.example.test",
        }},
        "tls": {"caBundleRef": ca_bundle_ref()},
    })
}

/// One integration `pay` whose API lives under `/api` and token endpoint at `/token` of `up`.
async fn start_one(up: &Upstream, ca: &TestCa) -> (LocalSetup, Sidecar) {
    let mut setup = LocalSetup::trusting(ca);
    setup.secret("oauth-client", "client-secret", CLIENT_SECRET);
    setup.manifest(&[xint(
        "pay",
        oauth_spec(up, "/api", &format!("{}/token", up.url())),
    )]);
    let sidecar = setup.start_with(&["--log-level", "debug"]).await;
    (setup, sidecar)
}

/// Decodes an `application/x-www-form-urlencoded` body.
fn form(body: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.replace('+', " ").into_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Stops the sidecar and returns its complete output (the pipe readers have drained).
async fn stopped_output(sidecar: &mut Sidecar) -> String {
    sidecar.sigterm();
    sidecar
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the sidecar stops on SIGTERM");
    sidecar.output()
}

async fn api_get(sidecar: &Sidecar, path: &str) -> attache_tests::Response {
    let req = Request::get(format!("{}{path}", sidecar.url(0)))
        .header("authorization", "Bearer app-held-token")
        .body(Bytes::new())
        .unwrap();
    attache_tests::send(req).await.unwrap()
}

#[tokio::test]
async fn twenty_concurrent_requests_share_one_token_fetch() {
    let ca = TestCa::new("oauth ca");
    let up = Upstream::echo(&ca).await;
    // A slow token endpoint: every request arrives while the one fetch is still running.
    up.script(
        "/token",
        vec![token("tok-shared-1", 3600).delayed(Duration::from_millis(800))],
    );
    let (_setup, mut sidecar) = start_one(&up, &ca).await;

    let requests: Vec<_> = (0..20)
        .map(|i| {
            let url = format!("{}/charges/{i}", sidecar.url(0));
            tokio::spawn(async move {
                let req = Request::get(url)
                    .header("authorization", "Bearer app-held-token")
                    .body(Bytes::new())
                    .unwrap();
                attache_tests::send(req).await
            })
        })
        .collect();
    for r in requests {
        let resp = r.await.unwrap().unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }

    let fetches = up.requests_for("/token");
    assert_eq!(fetches.len(), 1, "one token fetch serves the burst");
    let api = up
        .requests()
        .into_iter()
        .filter(|o| o.key.starts_with("/api/"))
        .collect::<Vec<_>>();
    assert_eq!(api.len(), 20);
    for o in &api {
        let auth: Vec<_> = o.headers.get_all("authorization").iter().collect();
        assert_eq!(auth, ["Bearer tok-shared-1"], "{}", o.path_and_query);
    }

    // The token request itself: client credentials grant with scopes and audience, the
    // client authenticated by HTTP Basic or in the body (both are RFC 6749).
    let t = &fetches[0];
    assert_eq!(t.method, "POST");
    assert!(
        t.header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")),
        "{:?}",
        t.headers
    );
    let fields = form(&t.text());
    let field = |k: &str| {
        fields
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(field("grant_type"), Some("client_credentials"));
    let mut scopes: Vec<&str> = field("scope").unwrap_or("").split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["payments:read", "payments:write"], "{}", t.text());
    assert_eq!(field("audience"), Some("https://api.example.test"));
    let basic = t
        .header("authorization")
        .and_then(|a| a.strip_prefix("Basic "))
        .map(|b| {
            let raw = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
            String::from_utf8(raw).unwrap()
        });
    let by_basic = basic.as_deref() == Some(&format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    let by_body =
        field("client_id") == Some(CLIENT_ID) && field("client_secret") == Some(CLIENT_SECRET);
    assert!(
        by_basic || by_body,
        "client not authenticated: {:?} / {}",
        t.headers,
        t.text()
    );

    // Neither the client secret nor the token is logged (debug level) or exported.
    let metrics = sidecar.metrics().await;
    let output = stopped_output(&mut sidecar).await;
    for secret in [CLIENT_SECRET, "tok-shared-1"] {
        assert!(!output.contains(secret), "{secret} logged");
        assert!(!metrics.contains(secret), "{secret} in metrics");
    }
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_before_it_expires() {
    const LIFETIME: Duration = Duration::from_secs(6);
    let ca = TestCa::new("oauth ca");
    let up = Upstream::echo(&ca).await;
    up.script(
        "/token",
        vec![
            token("tok-first", LIFETIME.as_secs()),
            token("tok-second", 3600),
        ],
    );
    let (_setup, sidecar) = start_one(&up, &ca).await;

    // Steady traffic, one request every 50 ms, until well past the first token's expiry.
    let mut sent = Vec::new();
    let mut first_fetch: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let resp = api_get(&sidecar, "/tick").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        let used = resp.json()["headers"]["authorization"]
            .as_str()
            .unwrap_or("")
            .to_string();
        sent.push((started, used));
        let fetched = first_fetch.get_or_insert_with(|| up.requests_for("/token")[0].at);
        if started > *fetched + LIFETIME + Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fetches = up.requests_for("/token");
    assert_eq!(
        fetches.len(),
        2,
        "one fetch per token, none per request: {:?}",
        fetches.iter().map(|f| f.at).collect::<Vec<_>>()
    );
    let (t1, t2) = (fetches[0].at, fetches[1].at);
    eprintln!(
        "measurement: a {LIFETIME:?} token was refreshed after {:?}",
        t2 - t1
    );
    assert!(
        t2 - t1 < LIFETIME,
        "refreshed only after the token expired ({:?} after the first fetch)",
        t2 - t1
    );
    assert!(
        t2 - t1 >= LIFETIME / 2,
        "refreshed far too early ({:?}): the token was not cached",
        t2 - t1
    );
    // A request the app started after the first token had expired never carried it.
    for (started, used) in &sent {
        if *started >= t1 + LIFETIME {
            assert_eq!(used, "Bearer tok-second", "expired token sent");
        }
    }
    assert!(sent.iter().any(|(_, u)| u == "Bearer tok-first"));
}

#[tokio::test]
async fn token_endpoint_failure_is_upstream_auth_and_nothing_goes_out_without_credentials() {
    let ca = TestCa::new("oauth ca");
    let up = Upstream::echo(&ca).await;
    up.script(
        "/token-500",
        (0..20)
            .map(|_| Action::respond(500, "token service broken"))
            .collect(),
    );
    let dead = free_port();
    let mut setup = LocalSetup::trusting(&ca);
    setup.secret("oauth-client", "client-secret", CLIENT_SECRET);
    setup.manifest(&[
        xint(
            "a-token-500",
            oauth_spec(&up, "/api-500", &format!("{}/token-500", up.url())),
        ),
        xint(
            "b-token-down",
            oauth_spec(&up, "/api-down", &format!("https://localhost:{dead}/token")),
        ),
    ]);
    let mut sidecar = setup.start_with(&["--log-level", "debug"]).await;

    for (index, name) in [(0, "a-token-500"), (1, "b-token-down")] {
        let req = Request::post(format!("{}/charges", sidecar.url(index)))
            .header("authorization", "Bearer app-held-token")
            .body(Bytes::from_static(b"amount=5"))
            .unwrap();
        let resp = attache_tests::send(req).await.unwrap();
        assert_eq!(resp.status, 502, "{name}: {}", resp.text());
        assert_eq!(
            resp.header("x-attache-error"),
            Some("upstream_auth"),
            "{name}"
        );
        let body = resp.json();
        assert_eq!(body["error"], "upstream_auth");
        assert_eq!(body["integration"], name);
        assert!(!resp.text().contains(CLIENT_SECRET), "{body}");
    }
    assert!(!up.requests_for("/token-500").is_empty());
    let api: Vec<_> = up
        .requests()
        .into_iter()
        .filter(|o| o.key.starts_with("/api"))
        .map(|o| o.path_and_query)
        .collect();
    assert!(
        api.is_empty(),
        "the API saw requests without credentials: {api:?}"
    );

    // The failure is not cached: once the endpoint recovers, requests go through.
    up.clear();
    up.script("/token-500", vec![token("tok-recovered", 3600)]);
    let resp = api_get(&sidecar, "/after").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["headers"]["authorization"],
        "Bearer tok-recovered"
    );
    let output = stopped_output(&mut sidecar).await;
    for secret in [CLIENT_SECRET, "tok-recovered"] {
        assert!(!output.contains(secret), "{secret} logged");
    }
}

#[tokio::test]
async fn an_absurd_expires_in_is_read_as_a_day_not_a_crash() {
    let ca = TestCa::new("oauth ca");
    let up = Upstream::echo(&ca).await;
    // u64::MAX seconds: adding it to the clock overflows.
    up.script("/token", vec![token("tok-forever", u64::MAX)]);
    let (_setup, mut sidecar) = start_one(&up, &ca).await;
    for i in 0..3 {
        let resp = api_get(&sidecar, &format!("/charges/{i}")).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let api = up
        .requests()
        .into_iter()
        .filter(|o| o.key.starts_with("/api/"))
        .collect::<Vec<_>>();
    assert_eq!(api.len(), 3);
    for o in &api {
        assert_eq!(o.header("authorization"), Some("Bearer tok-forever"));
    }
    assert_eq!(up.requests_for("/token").len(), 1, "the token is cached");
    assert!(sidecar.try_status().is_none(), "{}", sidecar.output());
}
