//! Measurement, not a check: the real `attache-operator run` binary reconciling 1,000
//! integrations served by the fake API server over HTTP on loopback. Prints wall time, the
//! operator process's peak RSS and the API traffic.
//!
//! ```sh
//! cargo test -p attache-operator --test controller_scale -- --ignored --nocapture
//! # with a release build of the operator (the fake stays in the test process):
//! cargo build --release -p attache-operator
//! ATTACHE_OPERATOR_BIN=target/release/attache-operator \
//!   cargo test -p attache-operator --test controller_scale -- --ignored --nocapture
//! ```

mod support;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use http::Method;
use serde_json::json;
use support::*;

const INTEGRATIONS: usize = 1000;
const NAMESPACES: usize = 20;
const PODS: usize = 500;

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn ready_count(fake: &FakeApi) -> usize {
    fake.list(XINTS)
        .iter()
        .filter(|x| ready(x).is_some_and(|r| r.0 == "True"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run with --ignored --nocapture"]
async fn reconcile_1000_integrations() {
    let fake = FakeApi::new();
    let mut objects = Vec::new();
    for i in 0..INTEGRATIONS {
        let ns = format!("team-{}", i % NAMESPACES);
        let name = format!("api-{i}");
        let key = format!("{name}-key");
        objects.push(secret(&ns, &key, &[("api-key", &format!("sk_{i}"))]));
        let mut spec = api_key_spec(&format!("https://{name}.example.com"), &key);
        if i % 4 == 0 {
            spec["rateLimit"] = json!({"requests": 100, "scope": "shared"});
        }
        objects.push(xint(&ns, &name, spec));
    }
    for p in 0..PODS {
        let i = p % INTEGRATIONS;
        objects.push(injected_pod(
            &format!("team-{}", i % NAMESPACES),
            &format!("pod-{p}"),
            &format!("api-{i}"),
        ));
    }
    fake.seed(objects);
    let addr = fake.serve_tcp().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut f = std::fs::File::create(&kubeconfig).unwrap();
    write!(
        f,
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
         clusters: [{{name: fake, cluster: {{server: \"http://{addr}\"}}}}]\n\
         users: [{{name: fake, user: {{token: fake}}}}]\n\
         contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: default}}}}]\n"
    )
    .unwrap();
    drop(f);

    let bin = std::env::var("ATTACHE_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_attache-operator").to_string());
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .args([
            "run",
            "--leader-election=false",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the operator");
    let pid = child.id();

    let mut first_ready = None;
    loop {
        let n = ready_count(&fake);
        if n > 0 && first_ready.is_none() {
            first_ready = Some(started.elapsed());
        }
        if n == INTEGRATIONS {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = child.kill();
            panic!("only {n} of {INTEGRATIONS} Ready after 10 min");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_ready = started.elapsed();
    let requests = fake.requests(Some("tcp"));
    let writes = requests.iter().filter(|r| r.method != Method::GET).count();
    let rss_ready = status_kib(pid, "VmRSS:");

    // Steady state: nothing to do, nothing written.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady: Vec<_> = fake
        .requests(Some("tcp"))
        .into_iter()
        .skip(requests.len())
        .filter(|r| !r.watch)
        .collect();

    // Rotate 100 referenced Secrets at once.
    let user = User::new(&fake);
    let rotated = Instant::now();
    for i in 0..100 {
        let ns = format!("team-{}", i % NAMESPACES);
        user.merge(
            SECRETS,
            &ns,
            &format!("api-{i}-key"),
            json!({"data": {"api-key": "cm90YXRlZA=="}}),
        )
        .await;
    }
    eventually_long(|| {
        (0..100).all(|i| {
            fake.get(
                SECRETS,
                &format!("team-{}", i % NAMESPACES),
                &format!("attache-api-{i}"),
            )
            .and_then(|s| secret_value(&s, "auth-credential"))
            .is_some_and(|v| v == "rotated")
        })
    })
    .await;
    let rotation = rotated.elapsed();

    let hwm = status_kib(pid, "VmHWM:");
    let rss = status_kib(pid, "VmRSS:");
    let _ = child.kill();
    let _ = child.wait();

    println!("--- attache-operator run: {INTEGRATIONS} integrations, {NAMESPACES} namespaces, {PODS} injected pods ---");
    println!("binary:                         {bin}");
    println!(
        "first Ready after:              {:?}",
        first_ready.unwrap_or_default()
    );
    println!("all {INTEGRATIONS} Ready after:           {all_ready:?} (process start included)");
    println!(
        "API requests until all Ready:   {} ({} writes: SSA applies, status patches, events)",
        requests.len(),
        writes
    );
    println!(
        "requests in 5 s of steady state: {} (excluding open watches)",
        steady.len()
    );
    println!("100 Secrets rotated, propagated: {rotation:?}");
    println!("operator VmRSS when all Ready:  {} KiB", rss_ready);
    println!("operator VmRSS at the end:      {rss} KiB");
    println!("operator VmHWM (peak RSS):      {hwm} KiB");
}

async fn eventually_long(mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !f() {
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
