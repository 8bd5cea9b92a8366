//! The benchmark's load client: keep-alive HTTP/1.1 over a fixed set of connections, either at a
//! fixed rate (open loop) or as fast as the connections allow (closed loop), latencies in an HDR
//! histogram, one JSON object on stdout.
//!
//! Why not only oha: oha opens its connections inside the measured window, so the direct
//! target's mTLS handshakes (and the requests queued behind them) land in its tail, while the
//! proxies' upstream connections are already warm; and its rate mode follows tokio's 1 ms timer,
//! which sends requests in bursts. This client connects and warms up every connection first,
//! then measures; a pacer thread spaces the requests evenly.
//!
//! Latency of a request is counted from the moment it was handed to an idle connection, or from
//! its scheduled time when every connection was busy (the wait is the target's fault, so it
//! counts: no coordinated omission).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header::HeaderName, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use serde::Serialize;
use tokio::{net::TcpStream, sync::mpsc};
use tokio_rustls::TlsConnector;

/// What to send, how fast and for how long.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target URL (http:// or https://); every request is a GET of its path.
    #[arg(long)]
    pub url: Uri,
    /// Keep-alive connections, all opened before measuring.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Requests per second (open loop). Without it: as fast as the connections allow.
    #[arg(long)]
    pub rate: Option<u32>,
    /// Measured seconds (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seconds of load before measuring, results discarded.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stop after this many measured requests instead of after `--seconds` (closed loop only).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Extra request header, "name: value"; repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// A header whose value is a fresh counter on every request (e.g. `X-GitHub-Delivery`,
    /// so that the sidecar's webhook listener sees distinct deliveries, not replays).
    #[arg(long, value_name = "NAME")]
    pub sequence_header: Option<String>,
    /// CA bundle for https targets.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate chain (PEM) for mTLS.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mTLS.
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
}

/// One run's result, printed as JSON.
#[derive(Debug, Serialize)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Requests that found every connection busy (their latency includes the wait).
    pub waited_for_connection: u64,
    /// p99 of how late the pacer handed a request over (client-side scheduling noise).
    pub dispatch_lag_p99_us: f64,
    /// Failures by kind: "status 503", "transport: ...".
    pub errors: BTreeMap<String, u64>,
}

/// Runs the load on a single-threaded runtime (the caller pins the process to a core).
pub fn run(args: LoadArgs) -> anyhow::Result<Report> {
    let target = Target::from_args(&args)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(drive(args, target))
}

/// Where and how to connect, and the request template.
pub(crate) struct Target {
    addr: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    path: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    sequence: Option<(HeaderName, std::sync::atomic::AtomicU64)>,
}

impl Target {
    pub(crate) fn from_args(args: &LoadArgs) -> anyhow::Result<Self> {
        let url = &args.url;
        let host = url.host().context("--url has no host")?.to_string();
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => bail!("--url scheme must be http or https, got {other:?}"),
        };
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let connector = tls_connector(args)?;
            let name = ServerName::try_from(host.clone())
                .with_context(|| format!("--url host {host:?} is not a valid TLS server name"))?;
            Some((connector, name))
        } else {
            None
        };
        let path = url
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse::<Uri>()?;
        let mut headers = vec![(
            http::header::HOST,
            HeaderValue::from_str(&format!("{host}:{port}"))?,
        )];
        for h in &args.headers {
            let (name, value) = h
                .split_once(':')
                .with_context(|| format!("header {h:?} is not \"name: value\""))?;
            headers.push((name.trim().parse()?, HeaderValue::from_str(value.trim())?));
        }
        let sequence = match &args.sequence_header {
            Some(name) => Some((name.parse()?, std::sync::atomic::AtomicU64::new(0))),
            None => None,
        };
        Ok(Self {
            addr: format!("{host}:{port}"),
            tls,
            path,
            headers,
            sequence,
        })
    }

    /// A new keep-alive HTTP/1.1 connection; its driver runs as a task.
    pub(crate) async fn connect(&self) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let sender = match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                sender
            }
        };
        Ok(sender)
    }

    pub(crate) fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = self.path.clone();
        for (name, value) in &self.headers {
            req.headers_mut().append(name.clone(), value.clone());
        }
        if let Some((name, counter)) = &self.sequence {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            req.headers_mut().insert(name.clone(), HeaderValue::from(n));
        }
        req
    }
}

fn tls_connector(args: &LoadArgs) -> anyhow::Result<TlsConnector> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let mut roots = RootCertStore::empty();
    let ca = args
        .cacert
        .as_ref()
        .context("https target needs --cacert")?;
    for cert in CertificateDer::pem_slice_iter(&read(ca)?) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(&read(cert)?).collect::<Result<_, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_slice(&read(key)?)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Latencies and counts of the measured window.
struct Stats {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    ok: u64,
    failed: u64,
    waited: u64,
    errors: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            // Nanoseconds, 3 significant digits, up to 100 s.
            latency: Histogram::new_with_bounds(1, 100_000_000_000, 3)?,
            lag: Histogram::new_with_bounds(1, 100_000_000_000, 3)?,
            ok: 0,
            failed: 0,
            waited: 0,
            errors: BTreeMap::new(),
        })
    }

    fn record(&mut self, outcome: Result<http::StatusCode, String>, latency: Duration) {
        let _ = self.latency.record(latency.as_nanos().max(1) as u64);
        match outcome {
            Ok(status) if status.is_success() => self.ok += 1,
            Ok(status) => self.fail(format!("status {}", status.as_u16())),
            Err(e) => self.fail(format!("transport: {e}")),
        }
    }

    fn fail(&mut self, kind: String) {
        self.failed += 1;
        *self.errors.entry(kind).or_default() += 1;
    }
}

type Shared = Arc<Mutex<Stats>>;
type Sender = SendRequest<Empty<Bytes>>;

/// Sends one request and reads the whole response body. A connection that is closed or broken
/// (the server closed it while idle, or an earlier exchange failed on it) is replaced first:
/// this is the one place connections are renewed, and a failed reconnect is this request's
/// failure.
async fn exchange(sender: &mut Sender, target: &Target) -> Result<http::StatusCode, String> {
    if sender.ready().await.is_err() {
        *sender = target
            .connect()
            .await
            .map_err(|e| format!("reconnect: {e:#}"))?;
        sender.ready().await.map_err(|e| e.to_string())?;
    }
    let resp = sender
        .send_request(target.request())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        frame.map_err(|e| e.to_string())?;
    }
    Ok(status)
}

async fn drive(args: LoadArgs, target: Target) -> anyhow::Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let target = Arc::new(target);
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        senders.push(target.connect().await?);
    }
    let stats: Shared = Arc::new(Mutex::new(Stats::new()?));
    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(args.warmup);
    let until = measure_from + Duration::from_secs_f64(args.seconds);
    let (from, end) = match args.rate {
        Some(rate) => open_loop(&args, &target, senders, &stats, rate, measure_from, until).await?,
        None => closed_loop(&args, &target, senders, &stats, measure_from, until).await?,
    };
    let window = end.saturating_duration_since(from).as_secs_f64();
    let s = stats
        .lock()
        .map_err(|_| anyhow::anyhow!("stats lock poisoned"))?;
    let q = |p: f64| s.latency.value_at_quantile(p) as f64 / 1000.0;
    let requests = s.ok + s.failed;
    Ok(Report {
        requests,
        ok: s.ok,
        failed: s.failed,
        rps: if window > 0.0 {
            requests as f64 / window
        } else {
            0.0
        },
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: s.latency.max() as f64 / 1000.0,
        waited_for_connection: s.waited,
        dispatch_lag_p99_us: s.lag.value_at_quantile(0.99) as f64 / 1000.0,
        errors: s.errors.clone(),
    })
}

/// Fixed rate: a pacer thread emits the schedule, requests go to idle connections.
/// Returns the measured window.
async fn open_loop(
    args: &LoadArgs,
    target: &Arc<Target>,
    senders: Vec<Sender>,
    stats: &Shared,
    rate: u32,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<(Instant, Instant)> {
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    if args.requests.is_some() {
        bail!("--requests is for the closed loop (without --rate)");
    }
    let (idle_tx, mut idle_rx) = mpsc::unbounded_channel::<Sender>();
    for s in senders {
        let _ = idle_tx.send(s);
    }
    let (tick_tx, mut tick_rx) = mpsc::unbounded_channel::<Instant>();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let first = Instant::now();
    let pacer = std::thread::spawn(move || {
        // Each request's due time is computed from the start, so sleep overshoot never drifts.
        let mut due = first;
        while due < until {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tick_tx.send(due).is_err() {
                return;
            }
            due += interval;
        }
    });
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(due) = tick_rx.recv().await {
        let measured = due >= measure_from;
        let (mut sender, began) = match idle_rx.try_recv() {
            Ok(s) => (s, Instant::now()),
            Err(_) => {
                if measured {
                    lock(stats).waited += 1;
                }
                (idle_rx.recv().await.context("all connections lost")?, due)
            }
        };
        if measured {
            let lag = began.saturating_duration_since(due).as_nanos().max(1) as u64;
            let _ = lock(stats).lag.record(lag);
        }
        let (target, stats, idle_tx) = (target.clone(), stats.clone(), idle_tx.clone());
        in_flight.spawn(async move {
            let outcome = exchange(&mut sender, &target).await;
            if measured {
                lock(&stats).record(outcome, began.elapsed());
            }
            // Back even when broken: the next exchange on it replaces it, so the pool keeps
            // its size.
            let _ = idle_tx.send(sender);
        });
        // Reap finished tasks so the set does not grow with the run.
        while in_flight.try_join_next().is_some() {}
    }
    let _ = pacer.join();
    let end = Instant::now().min(until);
    // Requests still in flight at the deadline finish and count (bounded wait).
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    Ok((measure_from, end))
}

/// As fast as possible: one loop per connection. Returns the measured window; with a request
/// budget there is no warm-up and the window is the whole run.
async fn closed_loop(
    args: &LoadArgs,
    target: &Arc<Target>,
    senders: Vec<Sender>,
    stats: &Shared,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<(Instant, Instant)> {
    let started = Instant::now();
    let budget = args
        .requests
        .map(|n| Arc::new(std::sync::atomic::AtomicU64::new(n)));
    let mut loops = tokio::task::JoinSet::new();
    for mut sender in senders {
        let (target, stats, budget) = (target.clone(), stats.clone(), budget.clone());
        loops.spawn(async move {
            loop {
                let began = Instant::now();
                let measured = began >= measure_from || budget.is_some();
                if budget.is_none() && began >= until {
                    return;
                }
                if let Some(b) = &budget {
                    let left = b.fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |n| n.checked_sub(1),
                    );
                    if left.is_err() {
                        return;
                    }
                }
                let outcome = exchange(&mut sender, &target).await;
                if measured {
                    lock(&stats).record(outcome, began.elapsed());
                }
            }
        });
    }
    while loops.join_next().await.is_some() {}
    Ok(if budget.is_some() {
        (started, Instant::now())
    } else {
        (measure_from, Instant::now().min(until))
    })
}

fn lock(stats: &Shared) -> std::sync::MutexGuard<'_, Stats> {
    // A panic while holding the lock can only come from this module's own bug; the counts
    // are still meaningful, so keep going with them.
    stats
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
