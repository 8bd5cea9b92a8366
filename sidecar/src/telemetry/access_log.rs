//! `--access-log json`: one JSON line per request on stdout (README, "Access log").
//!
//! A line holds what the sidecar knows about the request (method, path, the codes and times
//! it produced) and never what the app sent as data: no header value, no query string (API
//! keys travel there with `queryParam` credentials), no body. Lines are written by one thread
//! of their own so that a slow stdout (a full pipe to the container runtime) never stalls a
//! request: when its queue is full, a line is dropped and counted.

use std::{
    io::Write,
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;

use super::{context::hex, trail::Trail};
use crate::{metrics::LabelValue, resilience::retry::RetryReason};

/// Lines waiting for stdout; beyond this a burst is dropped (and counted) instead of queued.
const QUEUE: usize = 16 * 1024;

/// `--access-log`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// No access log (the default of the binary).
    #[default]
    Off,
    /// One JSON object per line on stdout.
    Json,
}

/// The access log's line, field for field (README, "Access log").
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// RFC 3339, UTC, milliseconds: when the request's head was read.
    pub time: String,
    /// Empty when the proxy listener could not route the request to an integration.
    pub integration: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The sidecar's error code when it answered itself.
    pub code: Option<&'a str>,
    pub attempts: u32,
    pub duration_ms: f64,
    pub upstream_ms: f64,
    pub retry_reasons: Vec<&'a str>,
    pub trace_id: String,
    pub request_id: String,
}

impl<'a> Line<'a> {
    /// The line for `trail`, answered with `status` (and the sidecar's `code`, if any).
    pub fn of(
        trail: &'a Trail,
        integration: &'a str,
        status: u16,
        code: Option<&'a str>,
        duration: Duration,
    ) -> Self {
        Line {
            time: rfc3339_millis(trail.started_at),
            integration,
            method: trail.method.as_str(),
            path: &trail.path,
            status,
            code,
            attempts: trail.attempts.len() as u32,
            duration_ms: millis(duration),
            upstream_ms: millis(trail.upstream_time()),
            retry_reasons: trail
                .attempts
                .iter()
                .filter_map(|a| a.retry_reason.as_ref())
                .map(RetryReason::label)
                .collect(),
            trace_id: hex(&trail.trace.trace_id),
            request_id: hex(&trail.span_id),
        }
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// The writer: lines go to a queue that one thread empties onto stdout.
#[derive(Clone)]
pub struct AccessLog {
    queue: SyncSender<String>,
    dropped: Counter,
}

impl AccessLog {
    /// Starts the writer thread; `dropped` counts lines lost to a full queue.
    pub fn start(dropped: Counter) -> std::io::Result<Self> {
        let (queue, lines) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, std::io::stdout()))?;
        Ok(Self { queue, dropped })
    }

    /// Queues `line`; never waits.
    pub fn write(&self, line: &Line<'_>) {
        let Ok(mut text) = serde_json::to_string(line) else {
            // Unreachable: every field serializes.
            self.dropped.inc();
            return;
        };
        text.push('\n');
        match self.queue.try_send(text) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// Writes lines as they come, flushing whenever the queue is empty (so a quiet sidecar's
/// lines appear at once, and a busy one's go out in large writes).
fn write_lines(lines: Receiver<String>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = lines.recv() {
        let mut ok = out.write_all(line.as_bytes()).is_ok();
        while let Ok(line) = lines.try_recv() {
            ok &= out.write_all(line.as_bytes()).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            // stdout is gone (closed pipe): nothing more can be written; stop reading so
            // further lines count as dropped.
            return;
        }
    }
}

/// `2026-12-03T05:30:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        let at = |secs: u64, ms: u64| {
            rfc3339_millis(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(ms))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_764_739_845, 123), "2025-12-03T05:30:45.123Z");
        assert_eq!(at(4_102_444_799, 999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_writer_flushes_every_line() {
        let (tx, rx) = mpsc::sync_channel(4);
        tx.send("a\n".to_string()).unwrap();
        tx.send("b\n".to_string()).unwrap();
        drop(tx);
        let mut out = Vec::new();
        write_lines(rx, &mut out);
        assert_eq!(out, b"a\nb\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (queue, _lines) = mpsc::sync_channel(1);
        let log = AccessLog {
            queue,
            dropped: Counter::default(),
        };
        let trail = Trail::new(
            &http::Method::GET,
            "/x",
            crate::telemetry::context::TraceContext::from_app(None),
        );
        let line = Line::of(&trail, "api", 200, None, Duration::ZERO);
        log.write(&line);
        log.write(&line);
        assert_eq!(log.dropped.get(), 1);
    }
}
