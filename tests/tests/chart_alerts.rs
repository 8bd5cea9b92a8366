//! The chart's alerting rules (charts/attache/rules/attache.rules.yaml), checked with the real
//! Prometheus tools: `promtool check rules`, `promtool test rules` with the unit tests of
//! tests/promtool/ (every alert has one), and the real `prometheus` server scraping a running
//! sidecar whose circuit opens, until its HTTP API shows `AttacheCircuitOpen` pending.
//!
//! promtool and prometheus come from Debian's `prometheus` package; without them these tests
//! say so and pass, unless ATTACHE_TEST_TOOLS=required (CI), where they fail.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use attache_tests::{free_port, get, resilience_harness::Rig, sidecar::TempDir, Proc};
use serde_json::{json, Value};

const RULES: &str = "charts/attache/rules/attache.rules.yaml";
const RULE_TESTS: &str = "tests/promtool/attache.rules.test.yaml";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `name` if it runs; else `None` after saying why (a failure when the tools are required).
fn tool(name: &str) -> Option<PathBuf> {
    let runs = Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if runs {
        return Some(PathBuf::from(name));
    }
    let required = std::env::var("ATTACHE_TEST_TOOLS").is_ok_and(|v| v == "required");
    assert!(
        !required,
        "{name} is required (ATTACHE_TEST_TOOLS=required): install Debian's prometheus package (scripts/install-test-tools.sh)"
    );
    eprintln!("skipped: {name} is not installed (Debian package prometheus; scripts/install-test-tools.sh)");
    None
}

fn yaml(rel: &str) -> Value {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn alert_names(rules: &Value) -> Vec<String> {
    rules["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn every_alert_has_a_unit_test() {
    let alerts = alert_names(&yaml(RULES));
    assert_eq!(alerts.len(), 6, "{alerts:?}");
    let tests = yaml(RULE_TESTS);
    let tested: Vec<&str> = tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .filter(|t| t["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()))
        .filter_map(|t| t["alertname"].as_str())
        .collect();
    for a in &alerts {
        assert!(
            tested.contains(&a.as_str()),
            "{a} has no test that fires it"
        );
    }
}

#[test]
fn promtool_checks_the_rules_and_passes_their_unit_tests() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    for args in [["check", "rules", RULES], ["test", "rules", RULE_TESTS]] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(root())
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The alerts in state `state` that Prometheus' HTTP API lists.
async fn alerts(api: &str, state: &str) -> Vec<Value> {
    let Ok(resp) = get(&format!("{api}/api/v1/alerts")).await else {
        return Vec::new();
    };
    let body = resp.json();
    body["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["state"] == state)
        .cloned()
        .collect()
}

#[tokio::test]
async fn prometheus_shows_the_circuit_alert_pending_for_an_open_circuit() {
    let Some(prometheus) = tool("prometheus") else {
        return;
    };
    // Nothing listens upstream: one failed attempt opens the circuit.
    let (rig, _port) = Rig::dead_upstream(json!({
        "retry": {"maxAttempts": 1},
        "circuitBreaker": {"consecutiveFailures": 1},
    }))
    .await;
    let dir = TempDir::new("prometheus");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: sidecar\n    static_configs:\n      - targets: ['{}']\n",
        root().join(RULES).display(),
        rig.sidecar.admin_addr
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = free_port();
    let api = format!("http://127.0.0.1:{port}");
    let _server = Proc::spawn(
        &prometheus,
        &[
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );

    let resp = rig.get("/v1/charges").await;
    assert_eq!(resp.header("x-attache-error"), Some("upstream_connect"));
    let resp = rig.get("/v1/charges").await;
    assert_eq!(resp.header("x-attache-error"), Some("circuit_open"));

    // AttacheCircuitOpen has `for: 5m`: it is pending from the first evaluation that sees
    // the open circuit, and firing five minutes later (the promtool unit test covers that).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pending = alerts(&api, "pending").await;
        if let Some(a) = pending
            .iter()
            .find(|a| a["labels"]["alertname"] == "AttacheCircuitOpen")
        {
            assert_eq!(a["labels"]["integration"], "api");
            assert_eq!(a["labels"]["severity"], "critical");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no pending AttacheCircuitOpen within 30 s; alerts: {:?}",
            alerts(&api, "firing").await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
