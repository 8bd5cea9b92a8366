//! The built binary as the chart starts it: health at once, JSON logs, leadership, and
//! takeover between two replicas after SIGKILL and after SIGTERM.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use serde_json::Value;

use crate::{
    cluster::{eventually, Cluster, NAMESPACE, RELEASE},
    http,
    replica::Replica,
};

pub async fn starts_as_the_chart_runs_it(c: &mut Cluster) {
    // A fresh replica, to time its start (the first one serves the webhook meanwhile).
    let r = Replica::spawn(c, "attache-operator-startup", false).unwrap();
    let healthy = eventually(
        "/healthz to answer 200",
        Duration::from_secs(10),
        async || {
            matches!(http::get(r.metrics, "/healthz").await, Some((200, _)))
                .then(|| r.started.elapsed())
        },
    )
    .await;
    println!(
        "  /healthz answered {:.0} ms after exec",
        healthy.as_secs_f64() * 1000.0
    );
    assert!(
        healthy < Duration::from_secs(3),
        "/healthz took {healthy:?}"
    );
    // Logs: the chart asks for JSON; every line must be a JSON object (nothing else on stdout).
    r.proc
        .wait_for_output("\"leader election\"", Duration::from_secs(10))
        .await
        .unwrap();
    let out = r.proc.output();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    // SIGTERM is honoured promptly (the deadlock ignored it).
    let mut r = r;
    r.sigterm();
    let status = r.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: {status:?}\n{}",
        r.proc.output()
    );

    // The first replica leads (it is alone) and answers /readyz.
    let first = &c.replicas[0];
    let t = eventually(
        "the first replica to lead",
        Duration::from_secs(30),
        async || first.is_leader().await.then(|| first.started.elapsed()),
    )
    .await;
    println!(
        "  the first replica led {:.1} s after exec",
        t.as_secs_f64()
    );
    eventually("/readyz 200", Duration::from_secs(10), async || {
        matches!(http::get(first.metrics, "/readyz").await, Some((200, _))).then_some(())
    })
    .await;
}

async fn holder(c: &Cluster) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(c.admin.clone(), NAMESPACE);
    leases.get(RELEASE).await.ok()?.spec?.holder_identity
}

/// Two replicas: exactly one leads; SIGKILL of the leader → the other takes over when the
/// Lease expires; SIGTERM of the leader → it releases the Lease and the other takes over at once.
pub async fn leader_takeover(c: &mut Cluster) {
    let b = Replica::spawn(c, "attache-operator-b", false).unwrap();
    c.replicas.push(b);
    let one = eventually(
        "exactly one leader of two",
        Duration::from_secs(30),
        async || {
            let l = c.leaders().await;
            (l.len() == 1).then(|| l[0])
        },
    )
    .await;
    // Stable: still one leader a moment later, and the Lease names it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.leaders().await, vec![one]);
    assert_eq!(
        holder(c).await.as_deref(),
        Some(c.replicas[one].name.as_str())
    );

    for how in ["SIGKILL", "SIGTERM"] {
        let leader = eventually("a leader", Duration::from_secs(60), async || {
            let l = c.leaders().await;
            (l.len() == 1).then(|| l[0])
        })
        .await;
        let other = 1 - leader;
        let t = Instant::now();
        let old = &mut c.replicas[leader];
        let (name, metrics, webhook) = (old.name.clone(), old.metrics, old.webhook);
        if how == "SIGKILL" {
            old.kill();
        } else {
            old.sigterm();
            let status = old.wait_exit(Duration::from_secs(30)).await;
            assert!(
                status.is_some_and(|s| s.success()),
                "SIGTERM exit: {status:?}"
            );
        }
        let successor = c.replicas[other].name.clone();
        let took = eventually(
            &format!("takeover after {how}"),
            Duration::from_secs(45),
            async || {
                (c.replicas[other].is_leader().await
                    && holder(c).await.as_deref() == Some(successor.as_str()))
                .then(|| t.elapsed())
            },
        )
        .await;
        println!(
            "  takeover after {how} of the leader: {:.1} s",
            took.as_secs_f64()
        );
        if how == "SIGTERM" {
            assert!(
                took < Duration::from_secs(10),
                "a released Lease took {took:?} to be taken"
            );
        }
        // Restart the stopped replica on the same addresses (the webhook's :443 among them).
        c.replicas[leader] = Replica::spawn_at(c, &name, metrics, webhook).unwrap();
    }
    // Back to one replica, the webhook's: the others' Lease duties end with them.
    let mut extra = c.replicas.split_off(1);
    for r in &mut extra {
        r.sigterm();
        r.wait_exit(Duration::from_secs(30)).await;
    }
    eventually(
        "the remaining replica to lead",
        Duration::from_secs(45),
        async || c.replicas[0].is_leader().await.then_some(()),
    )
    .await;
}
