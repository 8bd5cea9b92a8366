//! One replica of the operator: the built binary, started with the arguments and environment
//! of the chart's Deployment. Only what a pod would get from Kubernetes differs: the listen
//! addresses (loopback ports instead of the pod's), POD_NAME/POD_NAMESPACE from the downward
//! API, and KUBECONFIG pointing at the chart ServiceAccount's token instead of the mounted one.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::Context;
use attache_tests::process::{free_port, Proc};
use serde_json::Value;

use crate::{
    cluster::{Cluster, NAMESPACE},
    http,
};

pub struct Replica {
    pub name: String,
    pub metrics: SocketAddr,
    pub webhook: SocketAddr,
    pub started: Instant,
    pub proc: Proc,
}

impl Replica {
    /// Starts a replica; `serves_webhook` puts its webhook server where the chart's webhook
    /// Service sends the API server's calls (the Service's ClusterIP, port 443).
    pub fn spawn(cluster: &Cluster, name: &str, serves_webhook: bool) -> anyhow::Result<Replica> {
        let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let webhook: SocketAddr = if serves_webhook {
            (cluster.webhook_ip, 443).into()
        } else {
            ([127, 0, 0, 1], free_port()).into()
        };
        Replica::spawn_at(cluster, name, metrics, webhook)
    }

    pub fn spawn_at(
        cluster: &Cluster,
        name: &str,
        metrics: SocketAddr,
        webhook: SocketAddr,
    ) -> anyhow::Result<Replica> {
        let container = chart_container(&cluster.chart)?;
        let mut cmd = Command::new(operator_binary());
        cmd.env_clear();
        for arg in container["args"].as_array().context("the chart's args")? {
            let arg = arg.as_str().context("a non-string arg")?;
            cmd.arg(if arg.starts_with("--metrics-addr=") {
                format!("--metrics-addr={metrics}")
            } else if arg.starts_with("--webhook-addr=") {
                format!("--webhook-addr={webhook}")
            } else {
                arg.to_string()
            });
        }
        for e in container["env"].as_array().into_iter().flatten() {
            let key = e["name"].as_str().context("env name")?;
            let value = match (
                &e["value"],
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Value::String(v), _) => v.clone(),
                (_, Some("metadata.name")) => name.to_string(),
                (_, Some("metadata.namespace")) => NAMESPACE.to_string(),
                other => anyhow::bail!("env {key}: cannot stand in for {other:?}"),
            };
            cmd.env(key, value);
        }
        cmd.env("KUBECONFIG", &cluster.operator_kubeconfig);
        Ok(Replica {
            name: name.to_string(),
            metrics,
            webhook,
            started: Instant::now(),
            proc: Proc::spawn_command(cmd),
        })
    }

    pub async fn is_leader(&self) -> bool {
        match http::get(self.metrics, "/metrics").await {
            Some((200, body)) => http::sample(&body, "attache_operator_leader") == Some(1.0),
            _ => false,
        }
    }

    pub fn sigterm(&self) {
        self.proc.sigterm();
    }

    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.proc.wait_exit(timeout).await
    }
}

/// The operator binary to run: `ATTACHE_OPERATOR_BIN` if set (another build, e.g. a release
/// build for the scale benchmark), else the one Cargo built for this target.
pub fn operator_binary() -> PathBuf {
    std::env::var_os("ATTACHE_OPERATOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_attache-operator")))
}

/// The operator container of the chart's Deployment.
pub fn chart_container(chart: &[Value]) -> anyhow::Result<&Value> {
    chart
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .and_then(|d| d["spec"]["template"]["spec"]["containers"].as_array())
        .and_then(|c| c.iter().find(|c| c["name"] == "operator"))
        .context("the chart renders no Deployment with an `operator` container")
}
