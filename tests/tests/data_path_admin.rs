//! Start-up and the admin listener of the real `attache-sidecar` binary: one log line per
//! listener, listeners numbered by sorted integration name, `/readyz` and `/healthz`, the
//! data-path metrics, and a config that cannot be served failing the start with a message.

use std::time::Duration;

use attache_tests::{ca_bundle_ref, metric_value, xint, HttpClient, LocalSetup, TestCa, Upstream};
use serde_json::json;

#[tokio::test]
async fn startup_logs_each_listener_and_admin_endpoints_answer() {
    let ca = TestCa::new("admin test ca");
    let up = Upstream::echo(&ca).await;
    let mut setup = LocalSetup::trusting(&ca);
    // Written out of order: listeners are numbered by sorted name, not file order.
    let spec = |base: &str| {
        json!({
            "upstream": {"url": format!("{}/{base}", up.url())},
            "tls": {"caBundleRef": ca_bundle_ref()},
        })
    };
    setup.manifest(&[
        xint("zeta", spec("zeta-base")),
        xint("alpha", spec("alpha-base")),
    ]);
    let sidecar = setup.start().await;
    eprintln!("measurement: exec to /readyz 200 in {:?}", sidecar.ready_in);

    // One start-up line per listener, each naming its address (and integration). Local mode
    // also prints the app's ATTACHE_* variables (tests/local_mode_dir.rs); those are not
    // listener lines.
    sidecar
        .wait_for_output("ATTACHE_PROXY_URL", Duration::from_secs(10))
        .await
        .unwrap();
    let output = sidecar.output();
    let lines_with = |needle: &str| -> Vec<&str> {
        output
            .lines()
            .filter(|l| l.contains(needle) && !l.contains("ATTACHE_"))
            .collect()
    };
    for (index, name) in [(0, "alpha"), (1, "zeta")] {
        let addr = sidecar.addr(index).to_string();
        let lines = lines_with(&addr);
        assert_eq!(lines.len(), 1, "one line for {name} on {addr}:\n{output}");
        assert!(lines[0].contains(name), "{}", lines[0]);
    }
    for addr in [sidecar.proxy_addr, sidecar.admin_addr] {
        let lines = lines_with(&addr.to_string());
        assert_eq!(lines.len(), 1, "one line for listener {addr}:\n{output}");
    }

    // Integrations sorted by name get consecutive ports from --first-port.
    for (index, base) in [(0, "/alpha-base/x"), (1, "/zeta-base/x")] {
        let resp = sidecar.get(index, "/x").await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["path_and_query"], base);
        assert_eq!(resp.header("x-attache-attempts"), Some("1"));
    }

    let client = HttpClient::new();
    let readyz = client.get(&sidecar.admin_url("/readyz")).await.unwrap();
    assert_eq!(readyz.status, 200);
    let healthz = client.get(&sidecar.admin_url("/healthz")).await.unwrap();
    assert_eq!(healthz.status, 200);
    let metrics = client.get(&sidecar.admin_url("/metrics")).await.unwrap();
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    let value = |name: &str, labels: &[(&str, &str)]| metric_value(&text, name, labels);
    assert_eq!(
        value(
            "attache_requests_total",
            &[("integration", "alpha"), ("code", "200")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            "attache_request_duration_seconds_count",
            &[("integration", "zeta")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value("attache_inflight_requests", &[("integration", "alpha")]),
        Some(0.0),
        "{text}"
    );
    let attempts: f64 = text
        .lines()
        .filter(|l| l.starts_with("attache_upstream_attempts_total{") && l.contains("\"alpha\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        attempts, 1.0,
        "one attempt for alpha's one request:\n{text}"
    );
    let mem = sidecar.memory();
    eprintln!(
        "measurement: idle sidecar VmRSS {} KiB, VmHWM {} KiB",
        mem.rss_kib, mem.hwm_kib
    );
}

#[tokio::test]
async fn a_config_that_cannot_be_served_fails_the_start_naming_the_problem() {
    let ca = TestCa::new("ca");
    // Plain http:// without allowInsecure.
    let mut insecure = LocalSetup::trusting(&ca);
    insecure.manifest(&[xint(
        "plain",
        json!({"upstream": {"url": "http://localhost:8080"}}),
    )]);
    // A credential Secret that does not exist.
    let mut missing = LocalSetup::trusting(&ca);
    missing.manifest(&[xint(
        "keyless",
        json!({
            "upstream": {"url": "https://localhost:8443"},
            "auth": {"bearer": {"secretKeyRef": {"name": "no-such-secret", "key": "token"}}},
        }),
    )]);
    for (setup, needles) in [
        (&insecure, ["plain", "spec.upstream.url"]),
        (&missing, ["keyless", "no-such-secret"]),
    ] {
        let mut proc = setup.spawn();
        let status = proc
            .wait_exit(Duration::from_secs(30))
            .await
            .expect("the sidecar exits when its config cannot be served");
        assert!(!status.success(), "{status}: {}", proc.output());
        let output = proc.output();
        for needle in needles {
            assert!(
                output.contains(needle),
                "{needle:?} not named in:\n{output}"
            );
        }
        // It stopped before serving anything: no listener was announced.
        assert!(
            !output.contains("http://127.0.0.1"),
            "a listener was started:\n{output}"
        );
    }
    // The same files, fixed, serve.
    missing.manifest(&[xint(
        "keyless",
        json!({
            "upstream": {"url": "https://localhost:8443"},
            "auth": {"bearer": {"secretKeyRef": {"name": "now-there", "key": "token"}}},
            "tls": {"caBundleRef": ca_bundle_ref()},
        }),
    )]);
    missing.secret("now-there", "token", "t0k");
    let sidecar = missing.start().await;
    assert!(sidecar.output().contains("keyless"));
}
