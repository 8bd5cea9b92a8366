//! `attache-sidecar demo`: the whole data path on one machine, nothing installed.
//!
//! Starts a fake third party (HTTPS, client certificate required, API key required, flaky),
//! serves `examples/demo.yaml` with a sidecar in this process, sends traffic as an app would
//! (plain HTTP to localhost, no credentials) and prints what happened on each side.

pub mod pki;
mod upstream;
mod webhooks;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use prometheus_client::encoding::text::encode;

use crate::{
    app::{Sidecar, SidecarOptions},
    config::ConfigSource,
    resilience::breaker::CircuitState,
};

/// `attache-sidecar demo`'s arguments.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Requests the demo app sends.
    #[arg(long, default_value_t = 320)]
    pub requests: usize,
}

/// The manifest the demo serves, shipped in examples/ so users can read it.
const DEMO_MANIFEST: &str = include_str!("../../../examples/demo.yaml");
const DEMO_API_KEY: &str = "sk_demo_4f9c2e7a1b";
/// The app's request rate: fast enough to show limits, slow enough to outlast the outage.
const RATE_PER_SECOND: u64 = 80;
/// Requests the app keeps in flight at most.
const CONCURRENCY: usize = 32;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("attache-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the demo's temp dir")?;
    let result = run_in(&dir, args).await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    println!(
        "\nDemo finished in {:.1} s.",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

async fn run_in(dir: &std::path::Path, args: DemoArgs) -> anyhow::Result<()> {
    println!(
        "Attaché demo: an app calls a flaky, mTLS-protected payments API through the sidecar.\n"
    );
    let pki = pki::DemoPki::generate().context("generating demo certificates")?;
    let third_party = upstream::start(&pki, DEMO_API_KEY).await?;
    println!(
        "  third party   https://localhost:{}  (requires a client certificate and an API key)",
        third_party.addr.port()
    );

    // Secrets as files, the way local mode reads them: DIR/<secret>/<key>.
    let secrets = dir.join("secrets");
    for (rel, content) in [
        ("demo-api-key/api-key", DEMO_API_KEY),
        ("demo-ca/ca.crt", pki.ca_pem.as_str()),
        ("demo-client-cert/tls.crt", pki.client_cert_pem.as_str()),
        ("demo-client-cert/tls.key", pki.client_key_pem.as_str()),
        ("demo-webhook/signing-secret", webhooks::SIGNING_SECRET),
    ] {
        let p = secrets.join(rel);
        std::fs::create_dir_all(p.parent().expect("has parent"))?;
        std::fs::write(&p, content)?;
    }
    let app = webhooks::start_app().await?;
    let manifest = dir.join("demo.yaml");
    std::fs::write(
        &manifest,
        DEMO_MANIFEST
            .replace(
                "localhost:8443",
                &format!("localhost:{}", third_party.addr.port()),
            )
            .replace("127.0.0.1:8080", &app.addr.to_string()),
    )?;

    let any = |port| SocketAddr::from(([127, 0, 0, 1], port));
    let sidecar = Sidecar::start(SidecarOptions {
        source: ConfigSource::Local {
            manifests: vec![manifest],
            secrets_dir: Some(secrets),
            redis: Default::default(),
        },
        first_port: 0,
        listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        proxy_addr: any(0),
        admin_addr: any(0),
        webhook_addr: any(0),
        limits: Default::default(),
        telemetry: Default::default(),
    })
    .await
    .context("starting the sidecar")?;
    let (name, addr) = sidecar.integration_addrs[0].clone();
    println!(
        "  sidecar       http://{addr}  (integration {name}, admin http://{})",
        sidecar.admin_addr
    );

    // 1. Without the sidecar, the app cannot even connect: it has no client certificate.
    let direct = direct_call_without_cert(&pki, third_party.addr).await;
    println!("\n1. Direct call from the app, no client certificate:  {direct}");

    // 2. Through the sidecar: plain HTTP on localhost, no credentials in the app.
    println!(
        "2. {} payment requests through the sidecar at {RATE_PER_SECOND}/s (the app sends no credentials;\n   \
         the third party fails now and then, throttles once and has an outage at 2.5-2.9 s)...",
        args.requests
    );
    let outcome = drive(addr, args.requests).await;
    let trips = sidecar
        .live
        .load()
        .by_name(&name)
        .map_or(0, |i| i.policies.breaker.times_opened());

    let s = &third_party.stats;
    let (keys_seen, retried_keys, duplicate_charges) = {
        let keys = s.keys.lock().expect("not poisoned");
        (
            keys.len(),
            keys.values().filter(|(seen, _)| *seen > 1).count(),
            keys.values().filter(|(_, charged)| *charged > 1).count(),
        )
    };
    println!("\nWhat the app saw:");
    for (status, n) in &outcome.statuses {
        println!("  {status:<28} {n:>5}");
    }
    println!(
        "  latency p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms",
        outcome.percentile(50.0),
        outcome.percentile(99.0),
        outcome.percentile(100.0)
    );
    println!("\nWhat the third party saw:");
    for (what, count) in [
        ("requests received", &s.requests),
        ("errors it served (5xx)", &s.failures_served),
        ("throttles it served (429)", &s.throttles_served),
        ("requests without valid key", &s.unauthorized),
        ("TLS handshakes rejected", &s.handshakes_rejected),
    ] {
        println!("  {what:<28} {:>5}", count.load(Ordering::Relaxed));
    }
    println!("  payments (idempotency keys)  {keys_seen:>5} ({retried_keys} retried, {duplicate_charges} charged twice)");

    let circuit_closed = sidecar
        .live
        .load()
        .by_name(&name)
        .is_none_or(|i| i.policies.breaker.state() == CircuitState::Closed);
    let story = Story {
        requests: &outcome.requests,
        trips,
        circuit_closed,
        errors_served: s.failures_served.load(Ordering::Relaxed),
        throttles_served: s.throttles_served.load(Ordering::Relaxed),
        retried_keys,
        duplicate_charges,
    };
    println!("\nIn short:");
    for line in story.lines() {
        println!("  {line}");
    }
    if let Some(addr) = sidecar.webhook_addr {
        println!(
            "\n3. The third party calls back: Stripe-style signed webhooks to the sidecar's webhook \
             listener\n   (http://{addr}/webhooks/demo-payments), verified before the app sees them:"
        );
        for line in webhooks::callbacks(addr, "/webhooks/demo-payments").await {
            println!("  {line}");
        }
        println!(
            "  the app received {} verified webhook (x-attache-webhook-verified: stripe)",
            app.verified.load(Ordering::Relaxed)
        );
    }
    println!("\nWhat the sidecar did (from its /metrics):");
    for line in metric_summary(&sidecar) {
        println!("  {line}");
    }
    sidecar.shutdown(Duration::from_secs(2)).await;
    if outcome.transport_errors > 0 {
        anyhow::bail!(
            "{} requests failed to reach the sidecar at all",
            outcome.transport_errors
        );
    }
    Ok(())
}

async fn direct_call_without_cert(pki: &pki::DemoPki, addr: SocketAddr) -> String {
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()).flatten() {
        let _ = roots.add(c);
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let Ok(cfg) = cfg else {
        return "could not build a TLS client".into();
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls_pki_types::ServerName::try_from("localhost").expect("valid");
        let tls = connector.connect(name, tcp).await?;
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(std::io::Error::other)?;
        let conn = tokio::spawn(conn);
        let req = http::Request::get("/v1/charges")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .map_err(std::io::Error::other)?;
        match send.send_request(req).await {
            Ok(resp) => Ok::<_, std::io::Error>(resp.status()),
            // The request only learns that its connection went away; the connection's own
            // error says why (the server's TLS alert).
            Err(e) => Err(match conn.await {
                Ok(Err(why)) => std::io::Error::other(why),
                _ => std::io::Error::other(e),
            }),
        }
    };
    match tokio::time::timeout(Duration::from_secs(3), attempt).await {
        Ok(Ok(status)) => format!("got HTTP {status} (unexpected)"),
        Ok(Err(e)) => format!("refused: {}", why_refused(&e)),
        Err(_) => "timed out".into(),
    }
}

/// Why a TLS peer refused us, from anywhere in the error's chain: the TLS alert it sent if
/// there is one, else the innermost message.
fn why_refused(e: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = e.to_string();
    let mut next = Some(e);
    while let Some(err) = next {
        // An io::Error hides the error it wraps from `source()`: look inside it too.
        let wrapped = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        for candidate in [Some(err), wrapped].into_iter().flatten() {
            if let Some(rustls::Error::AlertReceived(alert)) = candidate.downcast_ref() {
                return match alert {
                    rustls::AlertDescription::CertificateRequired => {
                        "the third party requires a client certificate (TLS alert \
                         certificate_required)"
                            .into()
                    }
                    other => format!("the third party sent the TLS alert {other:?}"),
                };
            }
            innermost = candidate.to_string();
        }
        next = wrapped.and_then(|w| w.source()).or_else(|| err.source());
    }
    short(&innermost)
}

fn short(s: &str) -> String {
    s.chars().take(90).collect()
}

/// One request the demo app sent.
/// What happened, told only as far as it did happen: every number is counted from this run,
/// and the requests it speaks of add up to all of them.
struct Story<'a> {
    requests: &'a [Sent],
    trips: u64,
    circuit_closed: bool,
    errors_served: u64,
    throttles_served: u64,
    retried_keys: usize,
    duplicate_charges: usize,
}

impl Story<'_> {
    fn lines(&self) -> Vec<String> {
        let succeeded = |rs: &[&Sent]| rs.iter().filter(|r| r.label.starts_with('2')).count();
        // The outage and the second after it (the breaker's open time and its probe), and the
        // rest of the run: the two add up to every request.
        let recovered_by = upstream::OUTAGE.end + Duration::from_secs(1);
        let (during, outside): (Vec<&Sent>, Vec<&Sent>) = self
            .requests
            .iter()
            .partition(|r| r.started >= upstream::OUTAGE.start && r.started <= recovered_by);
        let all: Vec<&Sent> = self.requests.iter().collect();
        let mut lines = vec![format!(
            "{} of {} payments succeeded: {} of {} outside the outage, {} of {} during it or in \
             the second after it.",
            succeeded(&all),
            all.len(),
            succeeded(&outside),
            outside.len(),
            succeeded(&during),
            during.len(),
        )];
        if self.errors_served + self.throttles_served > 0 {
            lines.push(format!(
                "The third party served {} error(s) (5xx) and {} throttle(s) (429); the sidecar \
                 retried {} payment(s) with the same idempotency key, so {} were charged twice.",
                self.errors_served,
                self.throttles_served,
                self.retried_keys,
                self.duplicate_charges,
            ));
        } else {
            lines.push("The third party served no error and no throttle: nothing to retry.".into());
        }
        if during.is_empty() {
            lines.push(format!(
                "The run ended before the outage at {:.1} s: no request met it.",
                upstream::OUTAGE.start.as_secs_f64()
            ));
        } else {
            let fast: Vec<f64> = during
                .iter()
                .filter(|r| r.label.contains("circuit_open"))
                .map(|r| r.ms)
                .collect();
            let other_failures = during.len() - succeeded(&during) - fast.len();
            let mut line = format!(
                "The circuit opened {} time(s) in all. In the {:.1} s outage and the second \
                 after it, {} request(s) failed fast (median {:.2} ms) with 503 circuit_open \
                 instead of piling onto a failing service, and {} got the third party's own \
                 error after retries",
                self.trips,
                (upstream::OUTAGE.end - upstream::OUTAGE.start).as_secs_f64(),
                fast.len(),
                percentile(&fast, 50.0),
                other_failures,
            );
            line.push_str(if self.trips > 0 && self.circuit_closed {
                "; a probe closed the circuit once the service recovered."
            } else {
                "."
            });
            lines.push(line);
        }
        if self.throttles_served > 0 {
            lines.push(format!(
                "The 429(s) (Retry-After: 1) paused the whole integration for 1 s (queued, not \
                 failed) instead of every request discovering the throttle on its own ({} \
                 served).",
                self.throttles_served
            ));
        }
        lines
    }
}

struct Sent {
    label: String,
    ms: f64,
    /// When it was sent, from the first request on.
    started: Duration,
}

struct Outcome {
    statuses: BTreeMap<String, usize>,
    requests: Vec<Sent>,
    transport_errors: usize,
}

impl Outcome {
    fn percentile(&self, p: f64) -> f64 {
        let v: Vec<f64> = self.requests.iter().map(|r| r.ms).collect();
        percentile(&v, p)
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

async fn drive(addr: SocketAddr, total: usize) -> Outcome {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE_PER_SECOND));
    let mut tasks = Vec::with_capacity(total);
    let first = Instant::now();
    for i in 0..total {
        tick.tick().await;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            let body = format!(r#"{{"amount": {}, "currency": "eur"}}"#, 100 + i);
            let req = http::Request::post(format!("http://{addr}/charges"))
                .header("content-type", "application/json")
                // A stale key left in the app: the sidecar replaces it.
                .header("authorization", "Bearer sk_stale_from_app")
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
            let t = Instant::now();
            let started = t - first;
            let label = match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let err = resp
                        .headers()
                        .get("x-attache-error")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let _ = resp.into_body().collect().await;
                    match err {
                        Some(code) => format!("{status} {code} (sidecar)"),
                        None => format!("{status} from upstream"),
                    }
                }
                Err(_) => "transport error".to_string(),
            };
            Sent {
                label,
                ms: t.elapsed().as_secs_f64() * 1000.0,
                started,
            }
        }));
    }
    let mut out = Outcome {
        statuses: BTreeMap::new(),
        requests: Vec::new(),
        transport_errors: 0,
    };
    for t in tasks {
        let Ok(sent) = t.await else { continue };
        if sent.label == "transport error" {
            out.transport_errors += 1;
        }
        *out.statuses.entry(sent.label.clone()).or_default() += 1;
        out.requests.push(sent);
    }
    out
}

/// The interesting series of the sidecar's metrics, in Prometheus text form.
fn metric_summary(sidecar: &Sidecar) -> Vec<String> {
    let mut text = String::new();
    let _ = encode(&mut text, &sidecar.metrics.registry);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            [
                "attache_requests_total",
                "attache_upstream_attempts_total",
                "attache_retries_total",
                "attache_circuit_state",
                "attache_rate_limited_total",
                "attache_upstream_throttled_total",
                "attache_webhooks_total",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}
