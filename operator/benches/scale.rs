//! The operator at scale on a real kube-apiserver (issue 20, item 5).
//!
//! Starts the real-cluster suite's control plane (etcd, kube-apiserver, kube-controller-manager
//! from `scripts/real-apiserver.sh`), installs the CRD and the chart, runs the operator binary as
//! the chart runs it (arguments, `RUST_LOG`, JSON logs, ServiceAccount, the chart's
//! MutatingWebhookConfiguration calling it), then:
//!
//! 1. creates `NAMESPACES` namespaces and `INTEGRATIONS` ExternalIntegrations (each with the
//!    Secret its `apiKey` names) from parallel clients, and times the first create until every
//!    integration is `Ready=True` at its generation, seen through one watch;
//! 2. counts the API requests the operator made meanwhile (the audit log records every request
//!    of its ServiceAccount) and divides by its reconciliations (its own
//!    `attache_operator_reconciliations_total`); the API server's `apiserver_request_total`
//!    delta is printed beside it;
//! 3. samples the operator's VmRSS/VmHWM from /proc: idle, peak, after all Ready, after the pods;
//! 4. creates `PODS` pods at `POD_RATE` per second, each naming one integration for injection,
//!    checks every returned pod carries the sidecar, and reads admission latency from the
//!    operator's `attache_webhook_admission_duration_seconds`, from the API server's
//!    `apiserver_admission_webhook_admission_duration_seconds` and from the client's view
//!    (the whole pod create).
//!
//! The table goes to stdout and `bench/out/operator_scale.md`.
//!
//! ```sh
//! ATTACHE_KUBE_CACHE=/path/to/real-apiserver cargo bench -p attache-operator --bench scale
//! # a smaller run, or another operator build:
//! SCALE_NAMESPACES=10 SCALE_INTEGRATIONS=1000 SCALE_PODS=200 \
//!   ATTACHE_OPERATOR_BIN=target/debug/attache-operator cargo bench -p attache-operator --bench scale
//! ```

#[allow(dead_code)]
#[path = "../tests/real_cluster/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/real_cluster/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "../tests/real_cluster/replica.rs"]
mod replica;

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use attache_api::ExternalIntegration;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::{
    api::{DeleteParams, PostParams},
    runtime::watcher,
    Api, Client,
};
use serde_json::json;

use crate::cluster::Cluster;

/// Creates in flight at once (the API server's default mutating limit is 200).
const PARALLEL: usize = 64;
const SIDECAR: &str = "attache-sidecar";

struct Plan {
    namespaces: usize,
    integrations: usize,
    pods: usize,
    pod_rate: f64,
}

impl Plan {
    fn from_env() -> anyhow::Result<Plan> {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
                Err(_) => Ok(default),
            }
        }
        let plan = Plan {
            namespaces: var("SCALE_NAMESPACES", 100)?,
            integrations: var("SCALE_INTEGRATIONS", 10_000)?,
            pods: var("SCALE_PODS", 2_000)?,
            pod_rate: var("SCALE_POD_RATE", 50.0)?,
        };
        if plan.namespaces == 0 || plan.integrations < plan.namespaces || plan.pod_rate <= 0.0 {
            bail!("need SCALE_INTEGRATIONS >= SCALE_NAMESPACES > 0 and SCALE_POD_RATE > 0");
        }
        Ok(plan)
    }

    fn per_namespace(&self) -> usize {
        self.integrations.div_ceil(self.namespaces)
    }

    /// `(namespace, integration)` of the `i`-th integration.
    fn integration(&self, i: usize) -> (String, String) {
        let per = self.per_namespace();
        (namespace(i / per), format!("int-{:05}", i % per))
    }
}

fn namespace(i: usize) -> String {
    format!("scale-{i:03}")
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing else either.
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let plan = Plan::from_env()?;
    if cluster::built_control_plane().is_none() {
        bail!(
            "the real API server is not built: run `scripts/real-apiserver.sh build` (as root) or \
             set ATTACHE_KUBE_CACHE to a folder holding that build"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(plan))
}

/// Load average (1, 5, 15 minutes) of the machine.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `(VmRSS, VmHWM)` of `pid` in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds (user + system) `pid` has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state (field 3);
    // utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// CPU seconds of the operator, kube-apiserver and etcd (the script's pids file lists etcd,
/// kube-apiserver, kube-controller-manager).
struct Cpu {
    pids: Vec<(&'static str, u32)>,
}

impl Cpu {
    fn new(c: &Cluster, operator: u32) -> Cpu {
        let listed = std::fs::read_to_string(c.dir.path().join("pids")).unwrap_or_default();
        let listed: Vec<u32> = listed
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        let mut pids = vec![("operator", operator)];
        for (name, i) in [("kube-apiserver", 1), ("etcd", 0)] {
            if let Some(p) = listed.get(i) {
                pids.push((name, *p));
            }
        }
        Cpu { pids }
    }

    fn read(&self) -> Vec<f64> {
        self.pids.iter().map(|(_, p)| cpu_seconds(*p)).collect()
    }

    fn describe(&self, before: &[f64], after: &[f64], per: f64, unit: &str) -> String {
        self.pids
            .iter()
            .zip(before.iter().zip(after))
            .map(|((name, _), (b, a))| {
                format!(
                    "{name} {:.1} s ({:.2} ms per {unit})",
                    a - b,
                    (a - b) * 1000.0 / per
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One row of the result table.
struct Row {
    what: String,
    value: String,
    target: String,
    load: String,
}

struct Table(Vec<Row>);

impl Table {
    fn add(&mut self, what: impl Into<String>, value: impl Into<String>, target: &str) {
        let row = Row {
            what: what.into(),
            value: value.into(),
            target: target.into(),
            load: load(),
        };
        println!("scale: {}: {} (load {})", row.what, row.value, row.load);
        self.0.push(row);
    }

    fn markdown(&self) -> String {
        let mut s = String::from(
            "| measure | value | target | load avg (1/5/15 min) |\n|---|---|---|---|\n",
        );
        for r in &self.0 {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} |",
                r.what, r.value, r.target, r.load
            );
        }
        s
    }
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cluster = Cluster::start().await?;
    println!(
        "scale: control plane up, chart installed, operator started in {:.1} s (load {})",
        started.elapsed().as_secs_f64(),
        load()
    );
    let result = measure(&cluster, &plan).await;
    if result.is_err() {
        cluster.dump_logs();
        if let Some(r) = cluster.replicas.first() {
            let out = r.proc.output();
            let tail: Vec<&str> = out.lines().rev().take(40).collect();
            eprintln!("=== last lines of the operator");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
    cluster.stop().await;
    let table = result?;
    let mut doc = format!(
        "Operator at scale on a real kube-apiserver 1.20.2 + etcd 3.4 (one machine, loopback): \
         {} integrations in {} namespaces, {} injected pods at {}/s. Operator: {}. Machine: {} \
         CPUs ({}), {}.\n\n",
        plan.integrations,
        plan.namespaces,
        plan.pods,
        plan.pod_rate,
        operator_build(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        date(),
    );
    doc.push_str(&table.markdown());
    println!("\n{doc}");
    let out = cluster::root().join("bench/out");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("operator_scale.md"), &doc)?;
    println!(
        "scale: written to {}",
        out.join("operator_scale.md").display()
    );
    Ok(())
}

fn operator_build() -> String {
    let bin = replica::operator_binary();
    let profile = if bin.components().any(|c| c.as_os_str() == "debug") {
        "debug"
    } else {
        "release"
    };
    format!("`{}` ({profile} build)", bin.display())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default()
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn measure(c: &Cluster, plan: &Plan) -> anyhow::Result<Table> {
    let mut table = Table(Vec::new());
    let replica = c.replicas.first().context("no operator replica")?;
    let pid = replica.proc.pid();
    let admin = c.admin.clone();

    // The operator leads and its webhook answers through the API server.
    cluster::eventually(
        "the operator to lead",
        Duration::from_secs(60),
        async || replica.is_leader().await.then_some(()),
    )
    .await;
    wait_webhook(c).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, _) = memory(pid);
    table.add("operator RSS, idle (leader, caches synced)", mib(rss), "");

    // Namespaces first (they are not part of the timed creation).
    futures::stream::iter(0..plan.namespaces)
        .map(|i| async move { c.create_namespace(&namespace(i), &[]).await })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;

    // Peak RSS over the run, sampled every 100 ms.
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(memory(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let cpu = Cpu::new(c, pid);
    let before = Snapshot::take(c).await?;
    let cpu_before = cpu.read();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(watch_ready(admin.clone(), plan.integrations, ready_tx));
    // The watch is established before the first create (its initial list is empty).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t0 = Instant::now();
    futures::stream::iter(0..plan.integrations)
        .map(|i| {
            let admin = admin.clone();
            let (ns, name) = plan.integration(i);
            async move { create_integration(&admin, &ns, &name).await }
        })
        .buffer_unordered(PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    let created = t0.elapsed();
    let ready = tokio::time::timeout(Duration::from_secs(900), ready_rx)
        .await
        .context("not every integration was Ready within 900 s")?
        .context("the Ready watch ended")?;
    let all_ready = ready.duration_since(t0);
    watch.abort();
    let rss_peak = peak.load(Ordering::Relaxed);
    let (rss_ready, hwm_ready) = memory(pid);
    table.add(
        format!(
            "create {} Secrets + {} integrations ({PARALLEL} in flight)",
            plan.integrations, plan.integrations
        ),
        format!(
            "{:.1} s ({:.0} objects/s)",
            created.as_secs_f64(),
            2.0 * plan.integrations as f64 / created.as_secs_f64()
        ),
        "",
    );
    table.add(
        "first create → every integration Ready=True",
        format!("{:.1} s", all_ready.as_secs_f64()),
        "≤ 60 s",
    );

    // Settle: requeues, Events and the owned-object echoes land in the counts.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = Snapshot::take(c).await?;
    let cpu_after = cpu.read();
    let reconciles = after.reconciles - before.reconciles;
    let operator_requests = after.operator_requests(&before);
    let total: u64 = operator_requests.values().sum();
    table.add(
        "reconciliations (operator metric, all results)",
        format!(
            "{reconciles:.0} ({:.2} per integration)",
            reconciles / plan.integrations as f64
        ),
        "",
    );
    table.add(
        "operator API requests per reconciliation (audit log)",
        format!(
            "{:.2} ({total} requests: {})",
            total as f64 / reconciles.max(1.0),
            describe(&operator_requests)
        ),
        "",
    );
    let server = after.request_delta(&before);
    table.add(
        "API server requests meanwhile (apiserver_request_total, all clients)",
        describe(&server),
        "",
    );
    table.add(
        "CPU used, first create → Ready + 5 s",
        cpu.describe(
            &cpu_before,
            &cpu_after,
            plan.integrations as f64,
            "integration",
        ),
        "",
    );
    table.add(
        "operator RSS, peak while reconciling (100 ms samples)",
        mib(rss_peak),
        "≤ 100 MiB",
    );
    table.add(
        "operator RSS / VmHWM after all Ready",
        format!("{} / {}", mib(rss_ready), mib(hwm_ready)),
        "≤ 100 MiB",
    );
    table.add(
        "JSON size of one integration's objects (what the operator caches, before it drops managed fields)",
        object_sizes(&admin, plan).await?,
        "",
    );

    // Pods at a fixed rate, each naming one integration.
    let before = Snapshot::take(c).await?;
    let cpu_before = cpu.read();
    let latencies = create_pods(&admin, plan).await?;
    let after = Snapshot::take(c).await?;
    let cpu_after = cpu.read();
    sampler.abort();
    let injected = latencies.iter().filter(|(_, inj)| *inj).count();
    let mut client: Vec<f64> = latencies.iter().map(|(d, _)| *d).collect();
    client.sort_by(f64::total_cmp);
    table.add(
        format!("pods created at {}/s, injected", plan.pod_rate),
        format!("{injected} of {}", plan.pods),
        "all",
    );
    let ours = after.webhook_histogram.delta(&before.webhook_histogram);
    table.add(
        "admission p50 / p99, operator (attache_webhook_admission_duration_seconds)",
        format!("{} / {}", ms(ours.quantile(0.5)), ms(ours.quantile(0.99))),
        "p99 ≤ 2 ms",
    );
    let theirs = after
        .apiserver_webhook_histogram
        .delta(&before.apiserver_webhook_histogram);
    table.add(
        "admission p50 / p99, API server (apiserver_admission_webhook_admission_duration_seconds)",
        format!(
            "≤ {} / ≤ {} (bucket bounds; buckets {})",
            ms(theirs.bound(0.5)),
            ms(theirs.bound(0.99)),
            theirs.describe()
        ),
        "p99 ≤ 2 ms",
    );
    table.add(
        "pod create p50 / p99, client (whole request: admission + etcd write)",
        format!(
            "{} / {}",
            ms(Some(percentile(&client, 0.5))),
            ms(Some(percentile(&client, 0.99)))
        ),
        "",
    );
    table.add(
        "CPU used while the pods were created",
        cpu.describe(&cpu_before, &cpu_after, plan.pods as f64, "pod"),
        "",
    );
    let pod_reconciles = after.reconciles - before.reconciles;
    table.add(
        "reconciliations while the pods were created (pod counts)",
        format!("{pod_reconciles:.0}"),
        "",
    );
    let (rss, hwm) = memory(pid);
    table.add(
        format!("operator RSS / VmHWM after the {} pods", plan.pods),
        format!("{} / {}", mib(rss), mib(hwm)),
        "≤ 100 MiB",
    );
    if injected != plan.pods {
        bail!(
            "{} of {} pods were not injected",
            plan.pods - injected,
            plan.pods
        );
    }
    Ok(table)
}

/// The JSON size of the first integration, its Secret and its generated ConfigMap and Secret.
async fn object_sizes(admin: &Client, plan: &Plan) -> anyhow::Result<String> {
    let (ns, name) = plan.integration(0);
    let generated = attache_operator::contract::generated_name(&name);
    let xint = Api::<ExternalIntegration>::namespaced(admin.clone(), &ns)
        .get(&name)
        .await?;
    let key = Api::<Secret>::namespaced(admin.clone(), &ns)
        .get(&format!("{name}-key"))
        .await?;
    let secret = Api::<Secret>::namespaced(admin.clone(), &ns)
        .get(&generated)
        .await?;
    let config_map = Api::<ConfigMap>::namespaced(admin.clone(), &ns)
        .get(&generated)
        .await?;
    let size = |v: serde_json::Result<Vec<u8>>| v.map_or(0, |b| b.len());
    Ok(format!(
        "integration {} B, its Secret {} B, generated Secret {} B, generated ConfigMap {} B",
        size(serde_json::to_vec(&xint)),
        size(serde_json::to_vec(&key)),
        size(serde_json::to_vec(&secret)),
        size(serde_json::to_vec(&config_map)),
    ))
}

fn ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) => format!("{:.2} ms", s * 1000.0),
        None => "n/a".into(),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn describe(counts: &BTreeMap<String, u64>) -> String {
    let mut v: Vec<_> = counts.iter().filter(|(_, n)| **n > 0).collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Waits until the webhook injects a probe pod through the API server.
async fn wait_webhook(c: &Cluster) -> anyhow::Result<()> {
    c.create_namespace("scale-probe", &[]).await?;
    create_integration(&c.admin, "scale-probe", "probe").await?;
    let pods: Api<Pod> = Api::namespaced(c.admin.clone(), "scale-probe");
    let mut n = 0;
    cluster::eventually(
        "the webhook to inject a probe pod",
        Duration::from_secs(60),
        async || {
            n += 1;
            let name = format!("probe-{n}");
            let created = pods
                .create(&PostParams::default(), &pod(&name, "probe"))
                .await
                .ok()?;
            let _ = pods.delete(&name, &DeleteParams::default()).await;
            has_sidecar(&created).then_some(())
        },
    )
    .await;
    Ok(())
}

/// A pod opting in with one named integration (a namespace here holds more integrations
/// than one sidecar takes).
fn pod(name: &str, integration: &str) -> Pod {
    let annotations =
        json!({"attache.dev/inject": "true", "attache.dev/integrations": integration});
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}))
    .expect("a valid pod")
}

fn has_sidecar(p: &Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| {
        s.containers.iter().any(|c| c.name == SIDECAR)
            || s.init_containers
                .iter()
                .flatten()
                .any(|c| c.name == SIDECAR)
    })
}

async fn create_integration(admin: &Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let key = format!("{name}-key");
    let secret: Secret = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": key, "namespace": ns}, "stringData": {"api-key": format!("key-of-{name}")}}))?;
    Api::<Secret>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .with_context(|| format!("create Secret {ns}/{key}"))?;
    let xint: ExternalIntegration = serde_json::from_value(json!({
        "apiVersion": "attache.dev/v1alpha1", "kind": "ExternalIntegration",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "upstream": {"url": format!("https://{name}.{ns}.example.com")},
            "auth": {"apiKey": {"header": "Authorization", "prefix": "Bearer ",
                "secretKeyRef": {"name": key, "key": "api-key"}}},
        },
    }))?;
    Api::<ExternalIntegration>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &xint)
        .await
        .with_context(|| format!("create ExternalIntegration {ns}/{name}"))?;
    Ok(())
}

fn is_ready(x: &ExternalIntegration) -> bool {
    let Some(status) = x.status.as_ref() else {
        return false;
    };
    status.observed_generation == x.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Watches every integration; sends the instant the `n`-th one became Ready.
async fn watch_ready(admin: Client, n: usize, done: tokio::sync::oneshot::Sender<Instant>) {
    let api: Api<ExternalIntegration> = Api::all(admin);
    let mut ready = HashSet::new();
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    while let Some(event) = events.next().await {
        let x = match event {
            Ok(watcher::Event::Apply(x) | watcher::Event::InitApply(x)) => x,
            Ok(_) => continue,
            Err(e) => {
                eprintln!("scale: watch: {e} (the watcher retries)");
                continue;
            }
        };
        let key = (
            x.metadata.namespace.clone().unwrap_or_default(),
            x.metadata.name.clone().unwrap_or_default(),
        );
        if is_ready(&x) {
            ready.insert(key);
            if ready.len() >= n {
                let _ = done.send(Instant::now());
                return;
            }
        } else {
            ready.remove(&key);
        }
    }
}

/// Creates the pods at the plan's rate; each one's create latency in seconds and whether it
/// came back with the sidecar.
async fn create_pods(admin: &Client, plan: &Plan) -> anyhow::Result<Vec<(f64, bool)>> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / plan.pod_rate));
    let mut tasks = Vec::with_capacity(plan.pods);
    let per = plan.per_namespace();
    for i in 0..plan.pods {
        ticker.tick().await;
        let ns = namespace(i % plan.namespaces);
        let integration = format!("int-{:05}", (i / plan.namespaces) % per);
        let pods: Api<Pod> = Api::namespaced(admin.clone(), &ns);
        let name = format!("pod-{i:05}");
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let created = pods
                .create(&PostParams::default(), &pod(&name, &integration))
                .await
                .with_context(|| format!("create pod {ns}/{name}"))?;
            anyhow::Ok((t.elapsed().as_secs_f64(), has_sidecar(&created)))
        }));
    }
    let mut out = Vec::with_capacity(plan.pods);
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// A cumulative histogram: `(upper bound, count)` sorted by bound, `+Inf` last.
#[derive(Default, Clone)]
struct Histogram(Vec<(f64, f64)>);

impl Histogram {
    /// Sums the `NAME_bucket` series of a text exposition that carry every `filter` label.
    fn parse(text: &str, name: &str, filter: &[&str]) -> Histogram {
        let prefix = format!("{name}_bucket{{");
        let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            if !filter.iter().all(|f| labels.contains(f)) {
                continue;
            }
            let Some(le) = labels
                .split(',')
                .find_map(|l| l.trim().strip_prefix("le=\""))
                .and_then(|l| l.strip_suffix('"'))
            else {
                continue;
            };
            let bound: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let count: f64 = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            let e = buckets.entry(bound.to_bits()).or_insert((bound, 0.0));
            e.1 += count;
        }
        let mut v: Vec<(f64, f64)> = buckets.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram(v)
    }

    fn delta(&self, before: &Histogram) -> Histogram {
        Histogram(
            self.0
                .iter()
                .map(|(b, n)| {
                    let old = before
                        .0
                        .iter()
                        .find(|(ob, _)| ob == b)
                        .map_or(0.0, |(_, n)| *n);
                    (*b, n - old)
                })
                .collect(),
        )
    }

    /// Prometheus' `histogram_quantile`: linear inside the bucket holding the rank.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.0.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(bound, count) in &self.0 {
            if count >= rank {
                if bound.is_infinite() {
                    return Some(lower.0);
                }
                let inside = count - lower.1;
                let frac = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (bound - lower.0) * frac);
            }
            lower = (bound, count);
        }
        None
    }

    /// The upper bound of the bucket holding the `q` quantile: all a coarse histogram can say.
    fn bound(&self, q: f64) -> Option<f64> {
        let total = self.0.last()?.1;
        if total <= 0.0 {
            return None;
        }
        self.0
            .iter()
            .find(|(_, count)| *count >= q * total)
            .map(|(bound, _)| *bound)
    }

    /// `≤bound: count` of every bucket, for the coarse ones.
    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(b, n)| {
                if b.is_infinite() {
                    format!("+Inf:{n:.0}")
                } else {
                    format!("≤{}ms:{n:.0}", b * 1000.0)
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Counters read at one moment.
struct Snapshot {
    /// `attache_operator_reconciliations_total`, every result.
    reconciles: f64,
    /// The operator's requests by `VERB resource[/subresource]`, from the audit log.
    operator: BTreeMap<String, u64>,
    /// `apiserver_request_total` by `VERB resource[/subresource]`.
    server: BTreeMap<String, u64>,
    webhook_histogram: Histogram,
    apiserver_webhook_histogram: Histogram,
}

impl Snapshot {
    async fn take(c: &Cluster) -> anyhow::Result<Snapshot> {
        let replica = c.replicas.first().context("no operator replica")?;
        let (code, ours) = http::get(replica.metrics, "/metrics")
            .await
            .context("the operator's /metrics did not answer")?;
        if code != 200 {
            bail!("the operator's /metrics answered {code}");
        }
        let reconciles = ours
            .lines()
            .filter(|l| l.starts_with("attache_operator_reconciliations_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        let theirs = c
            .admin
            .request_text(http_get("/metrics")?)
            .await
            .context("the API server's /metrics")?;
        let mut server = BTreeMap::new();
        for line in theirs.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or("")
                    .to_string()
            };
            let mut key = format!("{} {}", label("verb"), label("resource"));
            let sub = label("subresource");
            if !sub.is_empty() {
                key = format!("{key}/{sub}");
            }
            *server.entry(key).or_default() += value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        }
        let mut operator = BTreeMap::new();
        let user = format!(
            "system:serviceaccount:{}:{}",
            cluster::NAMESPACE,
            cluster::RELEASE
        );
        for e in c.audit_events(&user) {
            let mut key = format!(
                "{} {}",
                e["verb"].as_str().unwrap_or("?"),
                e["objectRef"]["resource"].as_str().unwrap_or("?")
            );
            if let Some(sub) = e["objectRef"]["subresource"].as_str() {
                key = format!("{key}/{sub}");
            }
            *operator.entry(key).or_default() += 1;
        }
        Ok(Snapshot {
            reconciles,
            operator,
            server,
            webhook_histogram: Histogram::parse(
                &ours,
                "attache_webhook_admission_duration_seconds",
                &[],
            ),
            apiserver_webhook_histogram: Histogram::parse(
                &theirs,
                "apiserver_admission_webhook_admission_duration_seconds",
                &["type=\"admit\""],
            ),
        })
    }

    fn operator_requests(&self, before: &Snapshot) -> BTreeMap<String, u64> {
        delta(&self.operator, &before.operator)
    }

    fn request_delta(&self, before: &Snapshot) -> BTreeMap<String, u64> {
        delta(&self.server, &before.server)
    }
}

fn delta(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n.saturating_sub(*before.get(k).unwrap_or(&0))))
        .collect()
}

fn http_get(path: &str) -> anyhow::Result<::http::Request<Vec<u8>>> {
    Ok(::http::Request::get(path).body(Vec::new())?)
}
