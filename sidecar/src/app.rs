//! Starting, reloading and stopping a sidecar.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use crate::{
    admin::{self, Readiness},
    config::{watch::fingerprint, ConfigSource},
    integration::Snapshot,
    metrics::{Metrics, ReloadResult},
    proxy::{
        self,
        connections::{self, ConnectionLimits, Slots},
        listener::{self, Bounds},
        Live,
    },
    telemetry::{Telemetry, TelemetryOptions},
};

/// How often config files are checked for changes; changes apply within 2 s (README, "Local mode").
const RELOAD_POLL: Duration = Duration::from_millis(500);

/// Everything `attache-sidecar run` needs.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    pub source: ConfigSource,
    /// Integration `i` (sorted by name) listens on `first_port + i`; 0 picks free ports.
    pub first_port: u16,
    pub listen_ip: std::net::IpAddr,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The webhook listener's address; bound only when an integration has `webhooks`.
    pub webhook_addr: SocketAddr,
    /// Header and idle timeouts and the per-listener connection cap of every listener.
    pub limits: ConnectionLimits,
    /// The access log and tracing.
    pub telemetry: TelemetryOptions,
}

/// A running sidecar.
pub struct Sidecar {
    pub integration_addrs: Vec<(String, SocketAddr)>,
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The webhook listener's address, when one is bound.
    pub webhook_addr: Option<SocketAddr>,
    pub metrics: Metrics,
    pub live: Live,
    ready: Readiness,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    graceful: Arc<GracefulShutdown>,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Load(#[from] crate::config::LoadError),
    #[error("configuration: {0}")]
    Build(#[from] crate::integration::BuildError),
    #[error("cannot listen on {addr} for {what}: {source}{}", hint(.source, .flag))]
    Bind {
        addr: SocketAddr,
        what: String,
        /// The flag that moves this listener.
        flag: &'static str,
        source: std::io::Error,
    },
    #[error("--first-port {first} leaves no room for {count} integrations")]
    Ports { first: u16, count: usize },
    #[error("cannot start the access log's writer: {0}")]
    Telemetry(std::io::Error),
}

/// What to do about a listener that cannot bind: the flag that moves it.
fn hint(e: &std::io::Error, flag: &str) -> String {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!(" (another process listens there: choose another address with {flag})")
        }
        _ => format!(" (set by {flag})"),
    }
}

impl Sidecar {
    /// Loads the config, binds every listener and starts serving. Fails before binding
    /// anything if the config is invalid.
    pub async fn start(opts: SidecarOptions) -> Result<Self, StartError> {
        let metrics = Metrics::new();
        let loaded = opts.source.load()?;
        let snapshot = Snapshot::build(&loaded, &metrics, None)?;
        let live: Live = Arc::new(ArcSwap::from_pointee(snapshot));
        let telemetry =
            Telemetry::start(&opts.telemetry, &metrics).map_err(StartError::Telemetry)?;
        let names: Vec<String> = loaded.iter().map(|l| l.config.name.clone()).collect();
        if opts.first_port != 0 && usize::from(opts.first_port) + names.len() > 65_536 {
            return Err(StartError::Ports {
                first: opts.first_port,
                count: names.len(),
            });
        }

        let mut bound = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let port = if opts.first_port == 0 {
                0
            } else {
                opts.first_port + i as u16
            };
            let addr = SocketAddr::new(opts.listen_ip, port);
            bound.push((
                name.clone(),
                bind(addr, &format!("integration {name}"), "--first-port").await?,
            ));
        }
        let proxy_listener = bind(opts.proxy_addr, "the HTTP proxy", "--proxy-addr").await?;
        let admin_listener = bind(opts.admin_addr, "the admin endpoints", "--admin-addr").await?;
        let webhook_listener = if crate::webhooks::any(&live) {
            Some(bind(opts.webhook_addr, "the webhook listener", "--webhook-addr").await?)
        } else {
            None
        };

        // The integration and proxy listeners share what the open-files limit allows, so that
        // the admin listener can always accept.
        let nofile = connections::open_files_limit();
        let shared =
            connections::shared_budget(nofile, opts.limits.max_connections, names.len() + 1);
        tracing::info!(
            header_timeout = ?opts.limits.header_timeout, idle_timeout = ?opts.limits.idle_timeout,
            max_connections = opts.limits.max_connections, open_files_limit = ?nofile,
            app_connections = shared, "connection limits"
        );
        let shared = Arc::new(tokio::sync::Semaphore::new(shared.max(1)));
        let bounds = |what: &str, slots: Slots| Bounds {
            limits: opts.limits,
            slots,
            what: what.into(),
        };
        let data_bounds = |what: &str| {
            bounds(
                what,
                Slots::new(opts.limits.max_connections, Some(shared.clone())),
            )
        };

        let (stop, stop_rx) = watch::channel(false);
        let graceful = Arc::new(GracefulShutdown::new());
        let ready = Readiness::default();
        let mut tasks = Vec::new();
        let mut integration_addrs = Vec::new();
        for (name, l) in bound {
            let addr = l.local_addr().expect("bound socket has an address");
            tracing::info!(integration = %name, %addr, "listening for integration {name} on http://{addr}");
            integration_addrs.push((name.clone(), addr));
            let live = live.clone();
            let listener_bounds = data_bounds(&format!("integration {name}"));
            let tel = telemetry.clone();
            let handler = move |req| {
                let (live, tel) = (live.clone(), tel.clone());
                let name = name.clone();
                async move { proxy::serve_integration(&live, &tel, &name, req).await }
            };
            tasks.push(tokio::spawn(listener::serve(
                l,
                handler,
                stop_rx.clone(),
                graceful.clone(),
                listener_bounds,
            )));
        }
        let proxy_addr = proxy_listener.local_addr().expect("bound");
        tracing::info!(addr = %proxy_addr, "HTTP proxy (routes by upstream host) on http://{proxy_addr}");
        let live2 = live.clone();
        tasks.push(tokio::spawn(listener::serve(
            proxy_listener,
            move |req| {
                let (live, tel) = (live2.clone(), telemetry.clone());
                async move { proxy::serve_proxy(&live, &tel, req).await }
            },
            stop_rx.clone(),
            graceful.clone(),
            data_bounds("the HTTP proxy"),
        )));
        let admin_addr = admin_listener.local_addr().expect("bound");
        tracing::info!(addr = %admin_addr, "admin (/metrics, /healthz, /readyz) on http://{admin_addr}");
        let (m, r) = (metrics.clone(), ready.clone());
        // Admin connections are not drained: probes must not hold shutdown open.
        tasks.push(tokio::spawn(listener::serve(
            admin_listener,
            move |req| {
                let (m, r) = (m.clone(), r.clone());
                async move { admin::serve(m, r, req).await }
            },
            stop_rx.clone(),
            Arc::new(GracefulShutdown::new()),
            bounds(
                "admin",
                Slots::new(
                    opts.limits
                        .max_connections
                        .min(connections::ADMIN_MAX_CONNECTIONS),
                    None,
                ),
            ),
        )));
        let webhook_addr = webhook_listener.map(|l| {
            serve_webhooks(
                l,
                &live,
                &metrics,
                &stop_rx,
                &graceful,
                data_bounds("the webhook listener"),
                &mut tasks,
            )
        });
        tasks.push(tokio::spawn(reload_loop(
            opts.source.clone(),
            live.clone(),
            metrics.clone(),
            names,
            webhook_addr.is_some(),
            stop_rx,
        )));
        ready.set(true);
        Ok(Self {
            integration_addrs,
            proxy_addr,
            admin_addr,
            webhook_addr,
            metrics,
            live,
            ready,
            stop,
            tasks,
            graceful,
        })
    }

    /// Stops accepting, waits up to `drain` for requests in flight, and returns whether they
    /// all finished.
    pub async fn shutdown(self, drain: Duration) -> bool {
        self.ready.set(false);
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let inflight = self.graceful.count();
        tracing::info!(connections = inflight, ?drain, "draining");
        let graceful = match Arc::try_unwrap(self.graceful) {
            Ok(g) => g,
            Err(_) => return false,
        };
        tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_ok()
    }
}

/// Starts the webhook listener's accept loop; returns its address.
fn serve_webhooks(
    listener: TcpListener,
    live: &Live,
    metrics: &Metrics,
    stop: &watch::Receiver<bool>,
    graceful: &Arc<GracefulShutdown>,
    bounds: Bounds,
    tasks: &mut Vec<JoinHandle<()>>,
) -> SocketAddr {
    let addr = listener.local_addr().expect("bound");
    let paths: Vec<String> = live
        .load()
        .integrations
        .iter()
        .filter_map(|i| {
            i.webhook
                .as_ref()
                .map(|w| format!("{} ({})", w.config.path, i.name))
        })
        .collect();
    tracing::info!(%addr, paths = ?paths, "webhooks (verified, then forwarded to the app) on http://{addr}");
    let (live, metrics) = (live.clone(), metrics.clone());
    tasks.push(tokio::spawn(listener::serve(
        listener,
        move |req| {
            let (live, metrics) = (live.clone(), metrics.clone());
            async move { crate::webhooks::serve(&live, &metrics, req).await }
        },
        stop.clone(),
        graceful.clone(),
        bounds,
    )));
    addr
}

async fn bind(addr: SocketAddr, what: &str, flag: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind {
            addr,
            what: what.to_string(),
            flag,
            source,
        })
}

/// Reloads the config when its files change. A config that does not load or build is
/// rejected (logged, counted) and the running one keeps serving.
async fn reload_loop(
    source: ConfigSource,
    live: Live,
    metrics: Metrics,
    names: Vec<String>,
    webhooks_bound: bool,
    mut stop: watch::Receiver<bool>,
) {
    let roots: Vec<PathBuf> = source.watched_roots();
    let mut seen = fingerprint(&roots);
    let count = |result: ReloadResult| metrics.config_reload(result);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(RELOAD_POLL) => {}
        }
        let roots2 = roots.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&roots2)).await else {
            continue;
        };
        if now == seen {
            continue;
        }
        seen = now;
        let started = Instant::now();
        let src = source.clone();
        let loaded = match tokio::task::spawn_blocking(move || src.load()).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "config reload rejected; still serving the previous config");
                count(ReloadResult::Failure);
                continue;
            }
            Err(_) => continue,
        };
        let new_names: Vec<String> = loaded.iter().map(|l| l.config.name.clone()).collect();
        if new_names != names {
            tracing::error!(
                running = ?names, new = ?new_names,
                "config reload rejected: the set of integrations changed; listener ports are \
                 assigned at start, so restart the sidecar to add or remove integrations"
            );
            count(ReloadResult::Failure);
            continue;
        }
        match Snapshot::build(&loaded, &metrics, Some(&live.load())) {
            Ok(s) => {
                if !webhooks_bound && s.integrations.iter().any(|i| i.webhook.is_some()) {
                    tracing::warn!(
                        "an integration gained webhooks, but the webhook listener is bound at \
                         start only: restart the sidecar to serve them"
                    );
                }
                live.store(Arc::new(s));
                count(ReloadResult::Success);
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "config reloaded"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; still serving the previous config");
                count(ReloadResult::Failure);
            }
        }
    }
}
