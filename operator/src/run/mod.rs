//! `attache-operator run`: the controller (on the elected leader only), the admission webhook
//! and the admin listener (on every replica).
//!
//! [`execute`] sets up logging and the runtime, then [`run`] starts the [`Components`] and
//! waits for SIGTERM/SIGINT; shutting down finishes the reconciliations in flight, then
//! releases the Lease so another replica takes over at once.

use std::{fmt::Display, future::Future, net::SocketAddr, time::Duration};

use clap::{ArgAction, Args, ValueEnum};
use kube::Client;
use tokio::{sync::watch, task::JoinSet};

use crate::{
    controller,
    leader::{self, Elector, LeaseSettings},
    metrics::Metrics,
};

pub mod admin;

pub use admin::Readiness;

/// Options of `attache-operator run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Address of the plain-HTTP admin listener: /metrics, /healthz, /readyz.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Elect a leader through a Lease, so that of several replicas one reconciles. With
    /// `false`, this process reconciles at once: run one replica only.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the coordination.k8s.io/v1 Lease.
    #[arg(long, value_name = "NAME", default_value = "attache-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the pod's namespace, else the client's default).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Reconciliations running at once.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Serve the admission webhook (HTTPS, --webhook-addr) in this process. Every replica
    /// serves it, whichever leads.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub webhook: bool,
    #[command(flatten)]
    pub webhook_args: crate::admission::WebhookArgs,
    #[command(flatten)]
    pub redis: crate::global::RedisArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Why `run` could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot set up logging: {0}")]
    Logging(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on --metrics-addr {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the Kubernetes API (in-cluster service account or KUBECONFIG): {0}")]
    Client(#[source] kube::Error),
    #[error("{name} stopped: {message}")]
    Component { name: &'static str, message: String },
    #[error("cannot start the admission webhook: {0}")]
    Webhook(#[source] crate::admission::ServeError),
    #[error("global rate limits: {0}")]
    Redis(#[from] crate::global::RedisArgsError),
}

/// The long-running parts of `run`, one task each. A part that ends before shutdown was
/// asked for takes the process down (the Deployment restarts it).
#[derive(Default)]
pub struct Components {
    tasks: JoinSet<(&'static str, Result<(), String>)>,
}

// === impl Components ===

impl Components {
    pub fn spawn<E: Display>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks
            .spawn(async move { (name, task.await.map_err(|e| e.to_string())) });
    }

    /// Waits for the first part to end; `None` when there are none.
    async fn next(&mut self) -> Option<(&'static str, Result<(), String>)> {
        match self.tasks.join_next().await? {
            Ok(done) => Some(done),
            Err(e) => Some((
                "a component",
                Err(format!("panicked or was cancelled: {e}")),
            )),
        }
    }
}

/// Runs `attache-operator run` to completion: logging, runtime, [`run`] until a signal.
pub fn execute(args: RunArgs) -> Result<(), RunError> {
    init_logging(args.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    runtime.block_on(async {
        let client = Client::try_default().await.map_err(RunError::Client)?;
        run(args, client, shutdown_signal()).await
    })
}

/// Starts every component against `client` and runs until `shutdown` resolves.
pub async fn run(
    args: RunArgs,
    client: Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let (stop_tx, stop) = watch::channel(false);
    let mut components = Components::default();

    // ── Admin listener (/metrics, /healthz, /readyz), every replica ──
    let addr = args.metrics_addr;
    let listener = admin::bind(addr)
        .await
        .map_err(|source| RunError::Bind { addr, source })?;
    if let Ok(bound) = listener.local_addr() {
        tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    }
    components.spawn(
        "admin listener",
        ok(admin::serve(
            listener,
            metrics.clone(),
            readiness.clone(),
            stop.clone(),
        )),
    );

    // ── Admission webhook (HTTPS :8443), every replica ──
    // Admission must not depend on which replica leads: a pod must be admitted during a
    // leader change too.
    if args.webhook {
        let admission_metrics = crate::admission::AdmissionMetrics::default();
        admission_metrics.register(&mut metrics.registry_mut());
        let webhook =
            crate::admission::Webhook::new(client.clone(), &args.webhook_args, admission_metrics)
                .await
                .map_err(RunError::Webhook)?;
        let server = webhook.server().clone();
        readiness.add("webhook", move || server.is_ready());
        components.spawn("admission webhook", webhook.serve(stopped(stop.clone())));
    }

    // ── Redis of global rate limits: checked from every replica ──
    let global = crate::global::GlobalLimits::new(args.redis.settings()?);
    if let Some(redis) = &global.redis {
        tracing::info!(url = redis.url(), "global rate limits: Redis");
        components.spawn("Redis check", global.clone().check_forever());
    }

    // ── Controller: the leader only ──
    let identity = leader::default_identity();
    let settings = controller::Settings {
        concurrency: args.concurrency,
        instance: identity.clone(),
        global,
        ..controller::Settings::default()
    };
    let controller_metrics = metrics.controller().clone();
    let start_controller = {
        let client = client.clone();
        let stop = stop.clone();
        move || {
            controller::run(
                client.clone(),
                settings.clone(),
                controller_metrics.clone(),
                stopped(stop.clone()),
            )
        }
    };
    let gauge = metrics.controller().leader.clone();
    if args.leader_election {
        let namespace = args
            .lease_namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let lease = LeaseSettings::new(args.lease_name.clone(), namespace, identity);
        tracing::info!(identity = %lease.identity, lease = %lease.name, namespace = %lease.namespace, "leader election");
        let (leading_tx, leading) = watch::channel(false);
        let (release_tx, release) = watch::channel(false);
        let elector = Elector::new(client.clone(), lease).run(leading_tx, release);
        let supervisor = leader::while_leading(leading, stop.clone(), gauge, start_controller);
        components.spawn("controller", async move {
            let elector = tokio::spawn(elector);
            supervisor.await;
            // Only now, with no reconciliation in flight, let a successor take over.
            release_tx.send_replace(true);
            elector.await.map_err(|e| e.to_string())
        });
    } else {
        tracing::info!("leader election disabled: reconciling at once");
        components.spawn("controller", async move {
            gauge.set(1);
            start_controller().await;
            gauge.set(0);
            Ok::<(), String>(())
        });
    }

    // ── Until a signal, or a component failing ──
    let early = tokio::select! {
        () = shutdown => None,
        done = components.next() => done,
    };
    tracing::info!("shutting down");
    stop_tx.send_replace(true);
    let drain = async {
        while let Some((name, result)) = components.next().await {
            if let Err(e) = result {
                tracing::warn!(component = name, error = %e, "stopped with an error");
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(25), drain)
        .await
        .is_err()
    {
        tracing::warn!("components did not stop within 25 s");
    }
    match early {
        Some((name, Err(message))) => Err(RunError::Component { name, message }),
        Some((name, Ok(()))) => Err(RunError::Component {
            name,
            message: "ended unexpectedly".into(),
        }),
        None => Ok(()),
    }
}

/// Resolves when `stop` turns true (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn ok(f: impl Future<Output = ()>) -> Result<(), std::convert::Infallible> {
    f.await;
    Ok(())
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(format: LogFormat) -> Result<(), RunError> {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let result = match format {
        LogFormat::Text => fmt().with_env_filter(filter).try_init(),
        LogFormat::Json => fmt()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_env_filter(filter)
            .try_init(),
    };
    result.map_err(|e| RunError::Logging(e.to_string()))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> RunArgs {
        let mut argv = vec!["attache-operator", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let a = parse(&[]);
        assert_eq!(a.metrics_addr, "0.0.0.0:8080".parse().unwrap());
        assert!(a.leader_election);
        assert_eq!(a.lease_name, "attache-operator");
        assert_eq!(a.log_format, LogFormat::Text);
        assert_eq!(a.concurrency, 16);
    }

    #[test]
    fn flags() {
        let a = parse(&[
            "--metrics-addr",
            "127.0.0.1:9090",
            "--leader-election=false",
            "--lease-name",
            "x",
            "--lease-namespace",
            "ops",
            "--log-format",
            "json",
        ]);
        assert_eq!(a.metrics_addr, "127.0.0.1:9090".parse().unwrap());
        assert!(!a.leader_election);
        assert_eq!(a.lease_name, "x");
        assert_eq!(a.lease_namespace.as_deref(), Some("ops"));
        assert_eq!(a.log_format, LogFormat::Json);
    }

    #[tokio::test]
    async fn stopped_resolves_on_stop_or_drop() {
        let (tx, rx) = watch::channel(false);
        let f = tokio::spawn(stopped(rx.clone()));
        tx.send_replace(true);
        f.await.unwrap();
        let (tx, rx) = watch::channel(false);
        drop(tx);
        stopped(rx).await;
    }
}
