//! Hot reload in the real `attache-sidecar` binary under continuous traffic: rotated
//! credentials (files replaced by rename, and the kubelet's `..data` symlink swap in
//! config-dir mode) are used within 2 s without failing a request, and an invalid config is
//! rejected, counted, and leaves the previous one serving.

use std::time::{Duration, Instant};

use attache_tests::sidecar::{Sidecar, CA_SECRET};
use attache_tests::{
    assert_no_failures, ca_bundle_ref, render_volume, xint, Action, ConfigDir, LocalSetup,
    Observed, SecretFiles, TestCa, Traffic, Upstream,
};
use serde_json::{json, Value};

/// README, "Local mode": an edited manifest or secret file takes effect within 2 s.
const RELOAD_BOUND: Duration = Duration::from_secs(2);
/// How long to keep looking before declaring a change never applied (reported with timing).
const GIVE_UP: Duration = Duration::from_secs(15);
const PAUSE: Duration = Duration::from_millis(10);

/// Waits for the first request after `since` that satisfies `pred`; returns it.
async fn first_seen(
    up: &Upstream,
    since: Instant,
    pred: impl Fn(&Observed) -> bool,
) -> Option<Observed> {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        if let Some(o) = up.requests().into_iter().find(|o| o.at >= since && pred(o)) {
            return Some(o);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn auth_is(value: String) -> impl Fn(&Observed) -> bool {
    move |o| o.header("authorization") == Some(value.as_str())
}

/// Waits until `n` more requests reached the upstream after `since`.
async fn wait_more_requests(up: &Upstream, since: Instant, n: usize) {
    let deadline = Instant::now() + GIVE_UP;
    while up.requests().iter().filter(|o| o.at >= since).count() < n {
        assert!(Instant::now() < deadline, "traffic stopped flowing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_within_bound(latencies: &[(String, Duration)]) {
    eprintln!(
        "measurement: reload latencies (change → first upstream request using it): {latencies:?}"
    );
    let slow: Vec<_> = latencies
        .iter()
        .filter(|(_, d)| *d > RELOAD_BOUND)
        .collect();
    assert!(
        slow.is_empty(),
        "changes applied later than {RELOAD_BOUND:?}: {slow:?}"
    );
}

async fn reloads(sidecar: &Sidecar, result: &str) -> f64 {
    sidecar
        .metric("attache_config_reloads_total", &[("result", result)])
        .await
        .unwrap_or(0.0)
}

/// When the sidecar counted its first rejected reload; panics naming `what` if it never did.
async fn first_rejection(sidecar: &Sidecar, what: &str) -> Instant {
    sidecar
        .wait_metric(
            "attache_config_reloads_total",
            &[("result", "failure")],
            1.0,
            GIVE_UP,
        )
        .await
        .unwrap_or_else(|v| panic!("{what} never counted as a failure (last {v:?})"))
}

#[tokio::test]
async fn credential_rotation_under_continuous_traffic_fails_no_request() {
    let ca = TestCa::new("reload ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.secret("rotating", "token", "tok-v0");
    setup.manifest(&[xint(
        "rotating",
        json!({
            "upstream": {"url": up.url()},
            "auth": {"bearer": {"secretKeyRef": {"name": "rotating", "key": "token"}}},
            "tls": {"caBundleRef": ca_bundle_ref()},
        }),
    )]);
    let sidecar = setup.start().await;
    // Fast requests, plus slow ones (300 ms upstream) so that some are always in flight when
    // the configuration is swapped.
    up.script(
        "/slow",
        (0..2000)
            .map(|_| Action::echo().delayed(Duration::from_millis(300)))
            .collect(),
    );
    let traffic = Traffic::start(&format!("{}/poll", sidecar.url(0)), 2, PAUSE);
    let slow_traffic = Traffic::start(&format!("{}/slow", sidecar.url(0)), 2, Duration::ZERO);
    assert!(
        first_seen(&up, Instant::now(), auth_is("Bearer tok-v0".into()))
            .await
            .is_some(),
        "traffic flows with the first token"
    );

    let mut latencies = Vec::new();
    for i in 1..=10 {
        let value = format!("tok-v{i}");
        setup.secret("rotating", "token", &value);
        let changed = Instant::now();
        let seen = first_seen(&up, changed, auth_is(format!("Bearer {value}"))).await;
        let seen = seen.unwrap_or_else(|| panic!("{value} never reached the upstream"));
        latencies.push((value, seen.at - changed));
    }
    // Traffic keeps flowing on the last value.
    wait_more_requests(&up, Instant::now(), 20).await;
    let sent = traffic.stop().await;
    let slow_sent = slow_traffic.stop().await;
    let total = assert_no_failures(&sent);
    let slow_total = assert_no_failures(&slow_sent);
    assert!(slow_total >= 10, "slow requests were in flight throughout");
    assert_within_bound(&latencies);
    eprintln!(
        "measurement: {total} fast and {slow_total} slow requests during 10 rotations, none failed"
    );

    let known: Vec<String> = (0..=10).map(|i| format!("Bearer tok-v{i}")).collect();
    for o in up.requests() {
        let auth = o.header("authorization").unwrap_or("<none>");
        assert!(
            known.iter().any(|k| k == auth),
            "unexpected credential {auth:?}"
        );
    }
    assert!(reloads(&sidecar, "success").await >= 10.0);
    assert_eq!(reloads(&sidecar, "failure").await, 0.0);
}

#[tokio::test]
async fn an_invalid_manifest_edit_is_rejected_and_the_previous_config_keeps_serving() {
    let ca = TestCa::new("reload ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.secret("vendor", "key", "k3y");
    let doc = |url: String, prefix: &str| {
        xint(
            "vendor",
            json!({
                "upstream": {"url": url},
                "auth": {"apiKey": {"header": "X-Api-Key", "prefix": prefix,
                                     "secretKeyRef": {"name": "vendor", "key": "key"}}},
                "tls": {"caBundleRef": ca_bundle_ref()},
            }),
        )
    };
    let https_url = up.url();
    let http_url = https_url.replacen("https://", "http://", 1);
    setup.manifest(&[doc(https_url.clone(), "v1 ")]);
    let sidecar = setup.start().await;
    let traffic = Traffic::start(&format!("{}/poll", sidecar.url(0)), 2, PAUSE);
    wait_more_requests(&up, Instant::now(), 5).await;

    // Plain http:// without allowInsecure: invalid, and would send the key in clear text.
    setup.manifest(&[doc(http_url, "v2 ")]);
    let edited = Instant::now();
    let rejected_at = first_rejection(&sidecar, "invalid edit").await;
    let mut latencies = vec![("rejection counted".to_string(), rejected_at - edited)];
    // The old config (https, prefix v1) keeps serving after the rejection.
    let after = Instant::now();
    wait_more_requests(&up, after, 20).await;
    let since: Vec<Observed> = up
        .requests()
        .into_iter()
        .filter(|o| o.at >= after)
        .collect();
    for o in &since {
        assert_eq!(o.header("x-api-key"), Some("v1 k3y"));
    }
    sidecar
        .wait_for_output("spec.upstream.url", Duration::from_secs(10))
        .await
        .expect("the rejection is logged naming the field");

    // A valid edit after the invalid one applies.
    setup.manifest(&[doc(https_url, "v3 ")]);
    let fixed = Instant::now();
    let seen = first_seen(&up, fixed, |o| o.header("x-api-key") == Some("v3 k3y"))
        .await
        .expect("the valid edit after a rejected one applies");
    latencies.push(("valid edit used".to_string(), seen.at - fixed));

    let sent = traffic.stop().await;
    assert_no_failures(&sent);
    assert_within_bound(&latencies);
    assert!(
        up.requests()
            .iter()
            .all(|o| o.header("x-api-key") != Some("v2 k3y")),
        "the rejected config never served"
    );
    assert_eq!(reloads(&sidecar, "failure").await, 1.0);
    assert!(reloads(&sidecar, "success").await >= 1.0);
}

/// One generation of config-dir material: bearer token `cd-tok-N`, client cert `vault-client-N`.
fn generation(doc: &Value, ca: &TestCa, n: u32) -> std::collections::BTreeMap<String, Vec<u8>> {
    let cert = ca.client_cert(&format!("vault-client-{n}"));
    let secrets = SecretFiles::new()
        .with(CA_SECRET, "ca.crt", &ca.cert_pem)
        .with("vault-token", "token", format!("cd-tok-{n}"))
        .with("vault-mtls", "tls.crt", &cert.cert_pem)
        .with("vault-mtls", "tls.key", &cert.key_pem);
    render_volume(doc, &secrets)
}

#[tokio::test]
async fn config_dir_mode_serves_and_follows_kubelet_data_symlink_swaps() {
    let ca = TestCa::new("cluster ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .require_client_cert(&ca.cert_pem)
        .default_action(Action::echo())
        .start()
        .await;
    let doc = xint(
        "vault",
        json!({
            "upstream": {"url": format!("{}/v1", up.url())},
            "auth": {"bearer": {"secretKeyRef": {"name": "vault-token", "key": "token"}}},
            "tls": {"caBundleRef": ca_bundle_ref(), "clientCertificate": {"secretName": "vault-mtls"}},
        }),
    );
    let mut dir = ConfigDir::new();
    dir.publish("vault", &generation(&doc, &ca, 0));
    let sidecar = dir.start(1, &[]).await;

    let traffic = Traffic::start(&format!("{}/secrets", sidecar.url(0)), 2, PAUSE);
    let first = first_seen(&up, Instant::now(), auth_is("Bearer cd-tok-0".into()))
        .await
        .expect("config dir serves");
    assert_eq!(first.client_cert_cn.as_deref(), Some("vault-client-0"));
    assert_eq!(first.path_and_query, "/v1/secrets");

    let mut latencies = Vec::new();
    for n in 1..=3 {
        dir.publish("vault", &generation(&doc, &ca, n));
        let changed = Instant::now();
        let seen = first_seen(&up, changed, auth_is(format!("Bearer cd-tok-{n}")))
            .await
            .unwrap_or_else(|| panic!("generation {n} never used"));
        latencies.push((format!("generation {n}"), seen.at - changed));
        // A rotated client certificate is used for the new configuration's connections.
        let cn = format!("vault-client-{n}");
        let with_new_cert = first_seen(&up, changed, |o| o.client_cert_cn.as_deref() == Some(&cn))
            .await
            .unwrap_or_else(|| panic!("client certificate {cn} never presented"));
        latencies.push((format!("{cn} presented"), with_new_cert.at - changed));
    }

    // An update the sidecar cannot read (a config format from the future) is rejected and the
    // last good generation keeps serving.
    let mut future = generation(&doc, &ca, 4);
    let mut config: Value = serde_json::from_slice(&future["config.json"]).unwrap();
    config["apiVersion"] = json!("attache.dev/sidecar-config/v99");
    future.insert("config.json".into(), serde_json::to_vec(&config).unwrap());
    dir.publish("vault", &future);
    let changed = Instant::now();
    let rejected_at = first_rejection(&sidecar, "unreadable config").await;
    latencies.push(("rejection counted".into(), rejected_at - changed));
    let after = Instant::now();
    wait_more_requests(&up, after, 20).await;
    for o in up.requests().iter().filter(|o| o.at >= after) {
        assert_eq!(o.header("authorization"), Some("Bearer cd-tok-3"));
        assert_eq!(o.client_cert_cn.as_deref(), Some("vault-client-3"));
    }

    let sent = traffic.stop().await;
    assert_no_failures(&sent);
    assert_within_bound(&latencies);
    assert!(reloads(&sidecar, "success").await >= 3.0);
}
