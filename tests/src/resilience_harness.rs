//! Shared pieces of the `resilience_*` end-to-end tests: one HTTPS upstream (the fault-injecting
//! [`Upstream`]) behind one real `attache-sidecar` in local mode, with the integration's
//! resilience settings given as a JSON fragment of the `ExternalIntegration` spec; plus
//! request helpers that play the app, metric reads that treat a missing counter as 0, a
//! wall-clock mapping for [`Observed::at`](crate::Observed) and an HTTP-date formatter for
//! `Retry-After` dates.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::client::{HttpClient, Response};
use crate::pki::TestCa;
use crate::sidecar::{assert_sidecar_error_for, ca_bundle_ref, xint, LocalSetup, Sidecar};
use crate::upstream::{Action, Upstream, KEY_HEADER};

/// The integration's name in every rig (the `integration` label of its metrics).
pub const NAME: &str = "api";

/// An HTTPS upstream, the sidecar in front of it, and a pooled client playing the app.
pub struct Rig {
    pub ca: TestCa,
    /// The upstream, when the rig has one (see [`Rig::dead_upstream`]).
    pub up: Option<Upstream>,
    pub sidecar: Sidecar,
    pub client: HttpClient,
    /// The manifest and secret files; kept so they outlive the sidecar.
    pub setup: LocalSetup,
}

/// The integration's spec: the upstream URL, trust in the test CA, and `policies` (top-level
/// spec keys such as `retry`, `circuitBreaker`, `rateLimit`, `timeouts`, `concurrency`).
pub fn spec(url: &str, policies: Value) -> Value {
    let mut spec = json!({
        "upstream": {"url": url},
        "tls": {"caBundleRef": ca_bundle_ref()},
    });
    let target = spec.as_object_mut().expect("spec is an object");
    if let Value::Object(extra) = policies {
        for (k, v) in extra {
            target.insert(k, v);
        }
    } else {
        panic!("policies must be a JSON object, got {policies}");
    }
    spec
}

impl Rig {
    /// An upstream answering `default_action` to anything unscripted, and a sidecar whose
    /// integration [`NAME`] has `policies`.
    pub async fn start(default_action: Action, policies: Value) -> Rig {
        let ca = TestCa::new("resilience test ca");
        let up = Upstream::builder()
            .tls(ca.localhost_cert())
            .default_action(default_action)
            .start()
            .await;
        let url = up.url();
        Rig::start_at(ca, Some(up), &url, policies).await
    }

    /// A sidecar whose upstream URL is `https://localhost:PORT` where nothing listens (yet):
    /// returns the rig and the port. The CA is the one a later upstream on that port must use.
    pub async fn dead_upstream(policies: Value) -> (Rig, u16) {
        let port = crate::process::free_port();
        let ca = TestCa::new("resilience test ca");
        let rig = Rig::start_at(ca, None, &format!("https://localhost:{port}"), policies).await;
        (rig, port)
    }

    /// A sidecar for an upstream at `url` (which the caller runs), trusting `ca`.
    pub async fn start_at(ca: TestCa, up: Option<Upstream>, url: &str, policies: Value) -> Rig {
        let mut setup = LocalSetup::trusting(&ca);
        setup.manifest(&[xint(NAME, spec(url, policies))]);
        let sidecar = setup.start().await;
        Rig {
            ca,
            up,
            sidecar,
            client: HttpClient::new().with_timeout(Duration::from_secs(60)),
            setup,
        }
    }

    /// The upstream; panics for a rig made by [`Rig::dead_upstream`].
    pub fn up(&self) -> &Upstream {
        self.up.as_ref().expect("this rig has an upstream")
    }

    /// `http://127.0.0.1:PORT/path` on the integration's listener.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sidecar.url(0))
    }

    /// GET `path` through the sidecar.
    pub async fn get(&self, path: &str) -> Response {
        self.send(Request::get(self.url(path)).body(Bytes::new()).unwrap())
            .await
    }

    /// POST `body` to `path` through the sidecar (no idempotency key).
    pub async fn post(&self, path: &str, body: &str) -> Response {
        self.send(
            Request::post(self.url(path))
                .header("content-type", "application/json")
                .body(Bytes::copy_from_slice(body.as_bytes()))
                .unwrap(),
        )
        .await
    }

    /// PATCH `body` to `path` through the sidecar (no idempotency key).
    pub async fn patch(&self, path: &str, body: &'static [u8]) -> Response {
        self.send(
            Request::patch(self.url(path))
                .body(Bytes::from_static(body))
                .unwrap(),
        )
        .await
    }

    /// GET `path` through the sidecar in a task of its own, for requests that must be in
    /// flight at the same time; the task panics if no response came.
    pub fn spawn_get(&self, path: &str) -> JoinHandle<Response> {
        let client = self.client.clone();
        let url = self.url(path);
        tokio::spawn(async move {
            client
                .get(&url)
                .await
                .unwrap_or_else(|e| panic!("no response for {url}: {e:#}"))
        })
    }

    /// GET `path` with the script key `key` (several requests to one path, separate scripts).
    pub async fn get_keyed(&self, path: &str, key: &str) -> Response {
        self.send(
            Request::get(self.url(path))
                .header(KEY_HEADER, key)
                .body(Bytes::new())
                .unwrap(),
        )
        .await
    }

    /// Sends `req` through the app's pooled client; panics if no response came (the sidecar
    /// always answers, with its own error if need be).
    pub async fn send(&self, req: Request<Bytes>) -> Response {
        let uri = req.uri().clone();
        self.client
            .send(req)
            .await
            .unwrap_or_else(|e| panic!("no response for {uri}: {e:#}"))
    }

    /// The series `name{integration="api", labels...}`; a counter never incremented is 0.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut all = vec![("integration", NAME)];
        all.extend_from_slice(labels);
        self.sidecar.metric(name, &all).await.unwrap_or(0.0)
    }

    /// `attache_retries_total{reason}`.
    pub async fn retries(&self, reason: &str) -> f64 {
        self.metric("attache_retries_total", &[("reason", reason)])
            .await
    }

    /// `attache_upstream_attempts_total{result}`.
    pub async fn attempts(&self, result: &str) -> f64 {
        self.metric("attache_upstream_attempts_total", &[("result", result)])
            .await
    }

    /// `attache_rate_limited_total{action}`.
    pub async fn rate_limited(&self, action: &str) -> f64 {
        self.metric("attache_rate_limited_total", &[("action", action)])
            .await
    }

    /// `attache_circuit_state` (0 closed, 1 half-open, 2 open).
    pub async fn circuit_state(&self) -> f64 {
        self.metric("attache_circuit_state", &[]).await
    }

    /// `attache_upstream_throttled_total`.
    pub async fn throttled(&self) -> f64 {
        self.metric("attache_upstream_throttled_total", &[]).await
    }
}

/// Asserts that `resp` is an error the sidecar made itself for integration [`NAME`]: `status`,
/// `x-attache-error: code`, and the JSON body the README documents naming the code and the integration.
pub fn assert_sidecar_error(resp: &Response, status: u16, code: &str) {
    assert_sidecar_error_for(resp, status, code, NAME);
}

/// Asserts that `resp` came from the upstream (no `x-attache-error`) after `attempts` attempts.
pub fn assert_upstream_response(resp: &Response, status: u16, attempts: u32) {
    assert_eq!(
        (
            resp.status,
            resp.header("x-attache-attempts"),
            resp.header("x-attache-error")
        ),
        (status, Some(attempts.to_string().as_str()), None),
        "expected the upstream's {status} after {attempts} attempt(s); got headers {:?}: {}",
        resp.headers,
        resp.text()
    );
}

/// `Retry-After` of a response as whole seconds; panics if absent or not a number.
pub fn retry_after_secs(resp: &Response) -> u64 {
    let v = resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", resp.headers));
    v.trim()
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After {v:?} is not whole seconds: {e}"))
}

/// Slack for comparing instants taken by different processes' clocks (both monotonic, read
/// at slightly different moments).
pub const CLOCK_SLACK: Duration = Duration::from_millis(50);

/// Asserts `later - earlier >= at_least - CLOCK_SLACK`, naming `what`.
pub fn assert_gap_at_least(earlier: Instant, later: Instant, at_least: Duration, what: &str) {
    let gap = later.saturating_duration_since(earlier);
    assert!(
        gap + CLOCK_SLACK >= at_least,
        "{what}: {gap:?} apart, expected at least {at_least:?}"
    );
}

/// Maps this process's monotonic instants (such as `Observed::at`) to wall-clock times.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    instant: Instant,
    system: SystemTime,
}

impl Default for WallClock {
    fn default() -> Self {
        Self::now()
    }
}

impl WallClock {
    pub fn now() -> WallClock {
        WallClock {
            instant: Instant::now(),
            system: SystemTime::now(),
        }
    }

    /// The wall-clock time of `at`.
    pub fn wall(&self, at: Instant) -> SystemTime {
        if at >= self.instant {
            self.system + (at - self.instant)
        } else {
            self.system - (self.instant - at)
        }
    }
}

/// Whole Unix seconds of `t`, rounded up.
pub fn unix_secs_ceil(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).expect("after 1970");
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The IMF-fixdate (RFC 9110 §5.6.7) of Unix second `secs`, e.g.
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (no negatives here).
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {h:02}:{m:02}:{s:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize]
    )
}

/// A TCP listener that accepts connections and never says a word (no TLS handshake), so
/// connecting to it through TLS times out; stops when dropped.
pub struct SilentListener {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentListener {
    pub async fn start() -> SilentListener {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind silent listener");
        let port = listener.local_addr().expect("address").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        SilentListener {
            port,
            accepted,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_767_225_599), "Wed, 31 Dec 2025 23:59:59 GMT");
    }

    #[test]
    fn spec_merges_policies() {
        let s = spec("https://localhost:1", json!({"retry": {"maxAttempts": 1}}));
        assert_eq!(s["upstream"]["url"], "https://localhost:1");
        assert_eq!(s["retry"]["maxAttempts"], 1);
        assert_eq!(s["tls"]["caBundleRef"]["key"], "ca.crt");
    }
}
