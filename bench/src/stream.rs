//! Streams through a proxy: how late each event of a live stream reaches the reader (the
//! upstream stamps every event with the wall-clock time it was handed to hyper; reader and
//! upstream run on one machine, so the clocks are the same), and how fast a bulk stream moves
//! (the caller reads the proxy's CPU time from /proc around it).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::bail;
use bytes::Bytes;
use http::{header::CONTENT_TYPE, HeaderValue, Response, Uri};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{combinators::BoxBody, BodyExt};
use serde::Serialize;

use crate::load::{LoadArgs, Target};

/// What to read. The target's URL, TLS files and headers are the `load` command's; its rate
/// and connection settings do not apply.
#[derive(Debug, clap::Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub target: LoadArgs,
    /// Events of the live stream (`/events`).
    #[arg(long, default_value_t = 500)]
    pub events: u32,
    /// Milliseconds between two events.
    #[arg(long, default_value_t = 5)]
    pub every_ms: u64,
    /// Instead of events: MiB of the bulk stream (`/bulk`) to read.
    #[arg(long)]
    pub bulk_mib: Option<u64>,
}

#[derive(Debug, Serialize, Default)]
pub struct StreamReport {
    pub events: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub bytes: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
}

pub fn run(args: StreamArgs) -> anyhow::Result<StreamReport> {
    let target = Target::from_args(&args.target)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(read(args, target))
}

async fn read(args: StreamArgs, target: Target) -> anyhow::Result<StreamReport> {
    let mut sender = target.connect().await?;
    let mut req = target.request();
    let path = match args.bulk_mib {
        Some(mib) => format!("/bulk?mib={mib}"),
        None => format!("/events?n={}&every_ms={}", args.events, args.every_ms),
    };
    *req.uri_mut() = path.parse()?;
    let started = Instant::now();
    let resp = sender.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("{path}: status {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut report = StreamReport::default();
    let mut late_us = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        let now = unix_nanos();
        report.bytes += data.len() as u64;
        if args.bulk_mib.is_none() {
            for sent in stamps(&data) {
                late_us.push(now.saturating_sub(sent) as f64 / 1000.0);
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.mib_per_s = report.bytes as f64 / (1024.0 * 1024.0) / report.seconds;
    if args.bulk_mib.is_none() {
        if late_us.len() as u64 != u64::from(args.events) {
            bail!("expected {} events, read {}", args.events, late_us.len());
        }
        late_us.sort_by(f64::total_cmp);
        let at = |q: f64| late_us[((late_us.len() - 1) as f64 * q).round() as usize];
        report.events = late_us.len() as u64;
        report.p50_us = at(0.5);
        report.p90_us = at(0.9);
        report.p99_us = at(0.99);
        report.max_us = at(1.0);
    }
    Ok(report)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The `"t":NANOS` stamps of the events in a chunk.
fn stamps(data: &[u8]) -> Vec<u64> {
    let text = String::from_utf8_lossy(data);
    text.match_indices("\"t\":")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest.find(|c: char| !c.is_ascii_digit())?;
            rest[..end].parse().ok()
        })
        .collect()
}

// --- the upstream's side ------------------------------------------------------------------

type Streamed = Response<BoxBody<Bytes, std::convert::Infallible>>;

/// The streamed answer for `/events` and `/bulk`, or `None` for other paths.
pub fn respond(uri: &Uri) -> Option<Streamed> {
    let query = |key: &str| -> Option<u64> {
        uri.query()?
            .split('&')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let body = match uri.path() {
        "/events" => Events {
            left: query("n").unwrap_or(100),
            every: Duration::from_millis(query("every_ms").unwrap_or(10)),
            wait: None,
            first: true,
        }
        .boxed(),
        "/bulk" => Bulk {
            left: query("mib").unwrap_or(64) * 1024 * 1024,
            chunk: bulk_chunk(),
        }
        .boxed(),
        _ => return None,
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    Some(resp)
}

/// One event every `every`, stamped when it is produced.
struct Events {
    left: u64,
    every: Duration,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
    first: bool,
}

impl HttpBody for Events {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if !this.first {
            let every = this.every;
            let wait = this
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(every)));
            if wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.wait = None;
        }
        this.first = false;
        this.left -= 1;
        let event = format!(
            "data: {{\"t\":{},\"choices\":[{{\"delta\":{{\"content\":\"tok\"}}}}]}}\n\n",
            unix_nanos()
        );
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

/// 16 KiB of event lines, the bulk stream's chunk.
fn bulk_chunk() -> Bytes {
    let line = format!("data: {{\"content\":\"{}\"}}\n\n", "x".repeat(100));
    let mut chunk = String::with_capacity(16 * 1024);
    while chunk.len() + line.len() <= 16 * 1024 {
        chunk.push_str(&line);
    }
    Bytes::from(chunk)
}

struct Bulk {
    left: u64,
    chunk: Bytes,
}

impl HttpBody for Bulk {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = (this.chunk.len() as u64).min(this.left) as usize;
        this.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_read_from_every_event_of_a_chunk() {
        let chunk = b"data: {\"t\":12,\"x\":1}\n\ndata: {\"t\":345,\"y\":2}\n\n";
        assert_eq!(stamps(chunk), vec![12, 345]);
        assert!(stamps(b"data: {\"content\":\"x\"}\n\n").is_empty());
    }

    #[test]
    fn only_the_stream_paths_stream() {
        assert!(respond(&"/events?n=3&every_ms=1".parse().unwrap()).is_some());
        assert!(respond(&"/bulk?mib=1".parse().unwrap()).is_some());
        assert!(respond(&"/".parse().unwrap()).is_none());
    }
}
