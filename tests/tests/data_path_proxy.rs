//! The real `attache-sidecar` binary's HTTP proxy listener: absolute-form `http://HOST/...`
//! requests are routed to the integration whose upstream URL names HOST (TLS originated and
//! credentials added as on the integration's own listener); any other host is refused with
//! `unknown_destination`, and `CONNECT` tunnels with `bad_request`.

use attache_tests::client::send_via_proxy;
use attache_tests::sidecar::Sidecar;
use attache_tests::{ca_bundle_ref, xint, LocalSetup, Response, TestCa, Upstream};
use bytes::Bytes;
use http::{Method, Request};
use serde_json::json;

const KEY_LOCALHOST: &str = "key_5ecr3t_localhost";
const KEY_IP: &str = "key_5ecr3t_ip";

struct Fixture {
    by_name: Upstream,
    by_ip: Upstream,
    sidecar: Sidecar,
    _setup: LocalSetup,
}

/// Two integrations: `by-name` at `https://localhost:P1` and `by-ip` at `https://127.0.0.1:P2`,
/// each with its own API key, in front of two echo upstreams.
async fn start() -> Fixture {
    let ca = TestCa::new("proxy ca");
    let by_name = Upstream::echo(&ca).await;
    let by_ip = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.secret("key-localhost", "key", KEY_LOCALHOST);
    setup.secret("key-ip", "key", KEY_IP);
    let spec = |url: String, secret: &str| {
        json!({
            "upstream": {"url": url},
            "auth": {"apiKey": {"header": "X-Api-Key", "secretKeyRef": {"name": secret, "key": "key"}}},
            "tls": {"caBundleRef": ca_bundle_ref()},
        })
    };
    assert!(by_name.url().starts_with("https://localhost:"));
    setup.manifest(&[
        xint("by-name", spec(by_name.url(), "key-localhost")),
        xint(
            "by-ip",
            spec(
                format!("https://127.0.0.1:{}", by_ip.addr().port()),
                "key-ip",
            ),
        ),
    ]);
    let sidecar = setup.start().await;
    Fixture {
        by_name,
        by_ip,
        sidecar,
        _setup: setup,
    }
}

async fn via_proxy(f: &Fixture, method: Method, uri: &str) -> Response {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", "Bearer app-held-token")
        .body(Bytes::new())
        .unwrap();
    send_via_proxy(f.sidecar.proxy_addr, req)
        .await
        .unwrap_or_else(|e| panic!("{uri} via the proxy: {e:#}"))
}

fn assert_sidecar_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(resp.status, status, "{}", resp.text());
    assert_eq!(resp.header("x-attache-error"), Some(code), "{resp:?}");
    assert_eq!(resp.json()["error"], code, "{}", resp.text());
}

#[tokio::test]
async fn absolute_form_requests_are_routed_by_upstream_host() {
    let f = start().await;
    let port = f.by_name.addr().port();

    for uri in [
        "http://localhost/v1/charges?limit=3".to_string(),
        format!("http://localhost:{port}/v1/charges?limit=3"),
        "http://LOCALHOST/v1/charges?limit=3".to_string(),
    ] {
        let resp = via_proxy(&f, Method::GET, &uri).await;
        assert_eq!(resp.status, 200, "{uri}: {}", resp.text());
        assert_eq!(resp.header("x-attache-attempts"), Some("1"));
        let echo = resp.json();
        assert_eq!(echo["path_and_query"], "/v1/charges?limit=3", "{uri}");
        assert_eq!(
            echo["headers"]["host"],
            format!("localhost:{port}"),
            "{uri}"
        );
        assert_eq!(echo["headers"]["x-api-key"], KEY_LOCALHOST, "{uri}");
        assert!(echo["headers"].get("authorization").is_none(), "{echo}");
    }
    assert_eq!(f.by_name.count(), 3);

    let resp = via_proxy(&f, Method::POST, "http://127.0.0.1/v2/refunds").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path_and_query"], "/v2/refunds");
    assert_eq!(echo["headers"]["x-api-key"], KEY_IP);
    assert_eq!(f.by_ip.count(), 1);
    assert_eq!(
        f.by_name.count(),
        3,
        "routed by host, not to the first integration"
    );
}

#[tokio::test]
async fn a_host_no_integration_names_is_refused_with_unknown_destination() {
    let f = start().await;
    for uri in [
        "http://api.example.test/v1/charges",
        "http://localhost.evil.test/v1/charges",
        "http://[::1]/v1/charges",
    ] {
        let resp = via_proxy(&f, Method::GET, uri).await;
        assert_sidecar_error(&resp, 403, "unknown_destination");
    }
    assert_eq!(f.by_name.count() + f.by_ip.count(), 0);
    assert_eq!(
        f.by_name.connection_count() + f.by_ip.connection_count(),
        0,
        "no upstream connection for a refused destination"
    );
}

#[tokio::test]
async fn connect_tunnels_are_refused_with_bad_request() {
    let f = start().await;
    let port = f.by_name.addr().port();
    let authority = format!("localhost:{port}");
    let resp = via_proxy(&f, Method::CONNECT, &authority).await;
    assert_sidecar_error(&resp, 400, "bad_request");
    assert!(
        !resp.json()["message"].as_str().unwrap_or("").is_empty(),
        "the refusal explains itself"
    );
    // Also on an integration's own listener.
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(authority.as_str())
        .body(Bytes::new())
        .unwrap();
    let resp = send_via_proxy(f.sidecar.addr(0), req).await.unwrap();
    assert_sidecar_error(&resp, 400, "bad_request");
    assert_eq!(
        f.by_name.connection_count() + f.by_ip.connection_count(),
        0,
        "no tunnel was opened"
    );
}

/// An upstream URL with a base path (`https://host/v1`, as in the openai, twilio and bank
/// examples): through the proxy the app names the third party's full URL, so the base path
/// is already in it and must reach the upstream once; on the integration's own listener the
/// app's path is relative to the base path.
#[tokio::test]
async fn a_base_path_reaches_the_upstream_once_through_either_listener() {
    let ca = TestCa::new("proxy base path ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.secret("key-localhost", "key", KEY_LOCALHOST);
    setup.manifest(&[xint(
        "with-base",
        json!({
            "upstream": {"url": format!("{}/v1", up.url())},
            "auth": {"apiKey": {"header": "X-Api-Key", "secretKeyRef": {"name": "key-localhost", "key": "key"}}},
            "tls": {"caBundleRef": ca_bundle_ref()},
        }),
    )]);
    let sidecar = setup.start().await;

    let req = Request::get("http://localhost/v1/chat/completions?stream=false")
        .body(Bytes::new())
        .unwrap();
    let resp = send_via_proxy(sidecar.proxy_addr, req).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echo = resp.json();
    assert_eq!(
        echo["path_and_query"], "/v1/chat/completions?stream=false",
        "through the proxy"
    );
    assert_eq!(echo["headers"]["x-api-key"], KEY_LOCALHOST);

    let resp = sidecar.get(0, "/chat/completions?stream=false").await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["path_and_query"],
        "/v1/chat/completions?stream=false",
        "on the integration's own listener"
    );
    assert_eq!(up.count(), 2);
}
