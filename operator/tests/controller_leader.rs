//! Leader election against the fake API server, with short timings (1 s lease, 600 ms renew
//! deadline, 100 ms retry period). Each replica has its own kube client, so the fake records
//! and fails their requests separately.

mod support;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use attache_operator::leader::{while_leading, Attempt, Elector, LeaseSettings};
use http::Method;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::json;
use support::*;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{sleep, Instant},
};

const LEASE_NS: &str = "attache-system";

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(100),
        ..LeaseSettings::new("attache-operator", LEASE_NS, identity)
    }
}

struct Replica {
    leading: watch::Receiver<bool>,
    release: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn replica(fake: &FakeApi, identity: &str) -> Replica {
    let (tx, leading) = watch::channel(false);
    let (release, release_rx) = watch::channel(false);
    let elector = Elector::new(fake.client(identity), settings(identity));
    let task = tokio::spawn(elector.run(tx, release_rx));
    Replica {
        leading,
        release,
        task,
    }
}

impl Replica {
    fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}

fn holder(fake: &FakeApi) -> Option<String> {
    fake.get(LEASES, LEASE_NS, "attache-operator")?["spec"]["holderIdentity"]
        .as_str()
        .map(String::from)
}

/// Watches both replicas every 5 ms for `d`; fails if both ever lead at once.
async fn never_both(a: &Replica, b: &Replica, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        assert!(!(a.leads() && b.leads()), "two leaders at once");
        sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn exactly_one_of_two_replicas_leads_and_keeps_leading() {
    let fake = FakeApi::new();
    let a = replica(&fake, "a");
    let b = replica(&fake, "b");
    let leader = eventually("a leader", || match (a.leads(), b.leads()) {
        (true, false) => Some("a"),
        (false, true) => Some("b"),
        _ => None,
    })
    .await;
    never_both(&a, &b, Duration::from_secs(2)).await;
    // Still the same leader: renewals kept the lease.
    assert_eq!(holder(&fake).as_deref(), Some(leader));
    assert!(if leader == "a" { a.leads() } else { b.leads() });
    let lease = fake.get(LEASES, LEASE_NS, "attache-operator").unwrap();
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 1);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    // Only get, create and update on the Lease (what RBAC grants).
    for r in fake.requests(None) {
        assert!(
            [Method::GET, Method::POST, Method::PUT].contains(&r.method),
            "{} {}",
            r.method,
            r.path
        );
    }
    assert_within_rbac(&fake, "a");
    assert_within_rbac(&fake, "b");
    a.task.abort();
    b.task.abort();
}

#[tokio::test]
async fn racing_replicas_cannot_both_win() {
    // Free Lease: both create at once; the API server accepts one.
    let fake = FakeApi::new();
    let mut a = Elector::new(fake.client("a"), settings("a"));
    let mut b = Elector::new(fake.client("b"), settings("b"));
    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
    let wins = [ra.unwrap(), rb.unwrap()]
        .iter()
        .filter(|r| **r == Attempt::Leading)
        .count();
    assert_eq!(wins, 1);

    // An expired Lease held by a dead replica: both update it with the same
    // resourceVersion; one gets 409 Conflict.
    let fake = FakeApi::new();
    fake.seed([json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "attache-operator", "namespace": LEASE_NS},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 1,
                 "renewTime": "2026-01-01T00:00:00.000000Z"},
    })]);
    let mut a = Elector::new(fake.client("a"), settings("a"));
    let mut b = Elector::new(fake.client("b"), settings("b"));
    // Held by someone else: wait one lease duration from first sight (own clock, not the
    // renewTime in the object).
    assert_eq!(
        a.try_acquire_or_renew().await.unwrap(),
        Attempt::Following {
            holder: Some("ghost".into())
        }
    );
    b.try_acquire_or_renew().await.unwrap();
    sleep(Duration::from_millis(1100)).await;
    let (ra, rb) = tokio::join!(a.try_acquire_or_renew(), b.try_acquire_or_renew());
    let results = [ra.unwrap(), rb.unwrap()];
    assert_eq!(
        results.iter().filter(|r| **r == Attempt::Leading).count(),
        1,
        "{results:?}"
    );
    let lease = fake.get(LEASES, LEASE_NS, "attache-operator").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert!(fake
        .requests(None)
        .iter()
        .any(|r| r.method == Method::PUT && r.status == 409));
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_the_lease_expires() {
    let fake = FakeApi::new();
    let a = replica(&fake, "a");
    eventually("a leads", || a.leads().then_some(())).await;
    let b = replica(&fake, "b");
    never_both(&a, &b, Duration::from_millis(300)).await;
    assert!(!b.leads());

    // a crashes: no release, no more renewals.
    a.task.abort();
    let crashed = Instant::now();
    eventually("b takes over", || b.leads().then_some(())).await;
    let took = crashed.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "took over after {took:?}, before expiry"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(holder(&fake).as_deref(), Some("b"));
    let lease = fake.get(LEASES, LEASE_NS, "attache-operator").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    b.task.abort();
}

#[tokio::test]
async fn a_leader_that_cannot_renew_steps_down_before_anyone_takes_over() {
    let fake = FakeApi::new();
    let a = replica(&fake, "a");
    eventually("a leads", || a.leads().then_some(())).await;
    let b = replica(&fake, "b");
    sleep(Duration::from_millis(200)).await;

    // The API server refuses a's renewals (a partition, say).
    fake.inject_fault(Some("a"), Method::PUT, "/leases/", 500, usize::MAX);
    let start = Instant::now();
    let mut a_down = None;
    let mut b_up = None;
    while b_up.is_none() {
        assert!(start.elapsed() < Duration::from_secs(5), "no takeover");
        if a_down.is_none() && !a.leads() {
            a_down = Some(start.elapsed());
        }
        if b.leads() {
            b_up = Some(start.elapsed());
        }
        assert!(!(a.leads() && b.leads()), "two leaders at once");
        sleep(Duration::from_millis(5)).await;
    }
    let (a_down, b_up) = (a_down.expect("a stepped down"), b_up.unwrap());
    assert!(
        a_down <= Duration::from_millis(800),
        "a stepped down after {a_down:?}"
    );
    assert!(a_down < b_up, "a down at {a_down:?}, b up at {b_up:?}");
    a.task.abort();
    b.task.abort();
}

#[tokio::test]
async fn shutdown_releases_the_lease_for_an_immediate_takeover() {
    let fake = FakeApi::new();
    let a = replica(&fake, "a");
    eventually("a leads", || a.leads().then_some(())).await;
    let b = replica(&fake, "b");
    sleep(Duration::from_millis(200)).await;

    a.release.send_replace(true);
    a.task.await.unwrap();
    let released = Instant::now();
    assert_eq!(holder(&fake), None);
    eventually("b takes over", || b.leads().then_some(())).await;
    // Well within the 1 s it would take for an expiry.
    assert!(
        released.elapsed() < Duration::from_millis(600),
        "{:?}",
        released.elapsed()
    );
    b.task.abort();
}

#[tokio::test]
async fn only_the_leader_runs_the_controller() {
    let fake = FakeApi::new();
    let active = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (_stop, stop_rx) = watch::channel(false);

    let mut supervisors = Vec::new();
    let mut electors = Vec::new();
    let mut gauges = Vec::new();
    let mut releases = Vec::new();
    for id in ["a", "b"] {
        let (tx, leading) = watch::channel(false);
        let (release, release_rx) = watch::channel(false);
        releases.push(release);
        electors.push(tokio::spawn(
            Elector::new(fake.client(id), settings(id)).run(tx, release_rx),
        ));
        let gauge = Gauge::<i64>::default();
        gauges.push(gauge.clone());
        let (active, most) = (active.clone(), most.clone());
        supervisors.push(tokio::spawn(while_leading(
            leading,
            stop_rx.clone(),
            gauge,
            move || {
                let (active, most) = (active.clone(), most.clone());
                async move {
                    // The "controller": counts itself while it runs, until dropped.
                    struct Running(Arc<AtomicUsize>);
                    impl Drop for Running {
                        fn drop(&mut self) {
                            self.0.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                    let n = active.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    let _running = Running(active);
                    std::future::pending::<()>().await;
                }
            },
        )));
    }
    eventually("a controller running", || {
        (active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    let leader = gauges
        .iter()
        .position(|g| g.get() == 1)
        .expect("a leader gauge");
    assert_eq!(gauges.iter().map(|g| g.get()).sum::<i64>(), 1);

    // The leader loses the API server: it steps down, its controller is dropped, and only
    // then does the other replica's start.
    fake.inject_fault(
        Some(["a", "b"][leader]),
        Method::PUT,
        "/leases/",
        500,
        usize::MAX,
    );
    let other = 1 - leader;
    eventually("the other controller running", || {
        (gauges[other].get() == 1 && active.load(Ordering::SeqCst) == 1).then_some(())
    })
    .await;
    assert_eq!(gauges[leader].get(), 0);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two controllers ran at once"
    );
    for t in electors.iter().chain(&supervisors) {
        t.abort();
    }
}

/// GET over a raw HTTP/1.1 connection: (status line, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[tokio::test]
async fn run_elects_reconciles_serves_metrics_and_releases_on_shutdown() {
    use attache_operator::run::{run, LogFormat, RunArgs};
    let fake = FakeApi::new();
    let user = User::new(&fake);
    user.create(
        SECRETS,
        secret("payments", "stripe-key", &[("api-key", "sk")]),
    )
    .await;
    user.create(
        XINTS,
        xint(
            "payments",
            "stripe",
            api_key_spec("https://api.stripe.com", "stripe-key"),
        ),
    )
    .await;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let args = RunArgs {
        metrics_addr: addr,
        leader_election: true,
        lease_name: "attache-operator".into(),
        lease_namespace: Some(LEASE_NS.into()),
        log_format: LogFormat::Text,
        concurrency: 4,
        // The fake API server has no webhook configuration or namespaces to serve it.
        webhook: false,
        webhook_args: Default::default(),
        redis: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(run(args, fake.client("operator"), async {
        let _ = stopped.await;
    }));

    eventually("Ready=True", || {
        (ready(&fake.get(XINTS, "payments", "stripe")?)?.0 == "True").then_some(())
    })
    .await;
    assert!(holder(&fake).is_some());
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("attache_operator_leader 1"), "{body}");
    assert!(
        body.contains("attache_operator_reconciliations_total{result=\"success\"}"),
        "{body}"
    );
    assert!(
        body.contains("attache_operator_reconcile_duration_seconds_bucket"),
        "{body}"
    );
    assert!(http_get(addr, "/healthz").await.0.contains("200"));
    assert!(http_get(addr, "/readyz").await.0.contains("200"));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), operator)
        .await
        .expect("run stops")
        .unwrap()
        .expect("clean shutdown");
    assert_eq!(holder(&fake), None, "the lease is released on shutdown");
    assert_within_rbac(&fake, "operator");
}
