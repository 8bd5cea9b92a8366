//! Bounds on the connections apps (and anyone who can reach a listener) open to the sidecar:
//! how long a request head may take to arrive, how long a keep-alive connection may sit idle,
//! and how many connections a listener holds at once (README, "Listeners").
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive connection waits for its
//! next request, so it cannot tell a slow head from an idle connection; each connection gets a
//! small watchdog instead, fed by the connection's reads and by its requests starting and
//! ending.
//!
//! Connection caps: each listener has its own (`--max-connections`), and the integration and
//! proxy listeners also share what the process's open-files limit leaves after a reserve, so
//! that running out of file descriptors can never stop the admin listener from answering
//! probes and scrapes.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};

use crate::clock;

/// File descriptors kept out of the shared connection budget: the admin listener's
/// connections, config and secret files, listeners, the runtime's own.
pub const RESERVED_FDS: u64 = 128;
/// Connections the admin listener holds at once (probes and scrapes need a handful).
pub const ADMIN_MAX_CONNECTIONS: usize = 32;
/// The shared budget never drops below this, whatever the open-files limit says.
const MIN_SHARED_CONNECTIONS: u64 = 16;

/// The limits every listener applies to its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// The head of a request must arrive within this, from the connection's first byte (or
    /// its opening).
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// Connections one listener holds at once; more are closed as soon as accepted.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 10_000,
        }
    }
}

/// Connection slots of one listener: its own cap, plus (integration and proxy listeners) the
/// budget they share.
#[derive(Clone)]
pub struct Slots {
    own: Arc<Semaphore>,
    shared: Option<Arc<Semaphore>>,
}

/// Held for as long as a connection is open.
pub struct Slot {
    _own: OwnedSemaphorePermit,
    _shared: Option<OwnedSemaphorePermit>,
}

impl Slots {
    pub fn new(max: usize, shared: Option<Arc<Semaphore>>) -> Self {
        Self {
            own: Arc::new(Semaphore::new(max.max(1))),
            shared,
        }
    }

    /// A slot for one more connection, or `None` when the listener (or the shared budget)
    /// is full.
    pub fn try_take(&self) -> Option<Slot> {
        let own = self.own.clone().try_acquire_owned().ok()?;
        let shared = match &self.shared {
            Some(s) => Some(s.clone().try_acquire_owned().ok()?),
            None => None,
        };
        Some(Slot {
            _own: own,
            _shared: shared,
        })
    }
}

/// How many app connections the integration and proxy listeners may hold together: each may
/// cost two descriptors (the app's and one to the upstream), after [`RESERVED_FDS`].
pub fn shared_budget(
    open_files_limit: Option<u64>,
    per_listener: usize,
    listeners: usize,
) -> usize {
    let by_listeners = per_listener.saturating_mul(listeners.max(1));
    match open_files_limit {
        Some(n) => {
            let by_fds = (n.saturating_sub(RESERVED_FDS) / 2).max(MIN_SHARED_CONNECTIONS);
            by_listeners.min(usize::try_from(by_fds).unwrap_or(usize::MAX))
        }
        None => by_listeners,
    }
}

/// The soft limit on open files of this process (`/proc/self/limits`); `None` if unknown or
/// unlimited.
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What one connection is doing, as its watchdog needs to know.
///
/// The watchdog does not follow every request: it sleeps until the earliest moment the
/// connection could be due, then looks. A phase change (a request ending, the first byte of
/// the next head) only wakes it when it moves that moment earlier than the watchdog's alarm;
/// on a busy keep-alive connection that is about once per header timeout, not twice per
/// request (each wake re-polled the connection and re-armed a timer: 3 % of the CPU a
/// proxied request costs).
pub struct Activity {
    born: Instant,
    header_timeout: Duration,
    idle_timeout: Duration,
    /// Requests whose head arrived and whose response has not finished.
    active: AtomicUsize,
    /// True from a connection's opening, or from the first byte after it went idle, until the
    /// next request head is complete.
    reading_head: AtomicBool,
    /// Once a connection carried HTTP/2, bytes between requests are frames (pings, settings),
    /// not a slow head.
    h2: AtomicBool,
    /// When the current phase (reading a head, or idle) began, in nanoseconds after `born`.
    phase_at: AtomicU64,
    /// When the watchdog's alarm rings, in nanoseconds after `born`.
    alarm_at: AtomicU64,
    changed: Notify,
}

impl Activity {
    pub fn new(limits: &ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            born: Instant::now(),
            header_timeout: limits.header_timeout,
            idle_timeout: limits.idle_timeout,
            active: AtomicUsize::new(0),
            reading_head: AtomicBool::new(true),
            h2: AtomicBool::new(false),
            phase_at: AtomicU64::new(0),
            alarm_at: AtomicU64::new(u64::MAX),
            changed: Notify::new(),
        })
    }

    fn nanos_since_born(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        clock::after(self.born, Duration::from_nanos(nanos))
    }

    /// A phase that ends the connection after `timeout` begins now: wakes the watchdog if its
    /// alarm would ring later than that.
    fn phase_began(&self, timeout: Duration) {
        let now = self.nanos_since_born(Instant::now());
        // SeqCst: this store and the alarm's load below are ordered against the watchdog's
        // alarm store and its re-read of the phase (see `expired`), so one of the two sees
        // the other.
        self.phase_at.store(now, Ordering::SeqCst);
        let due = now.saturating_add(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX));
        if due < self.alarm_at.load(Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived from the client.
    fn on_read(&self) {
        if self.active.load(Ordering::Acquire) == 0
            && !self.reading_head.load(Ordering::Acquire)
            && !self.h2.load(Ordering::Relaxed)
        {
            self.reading_head.store(true, Ordering::SeqCst);
            self.phase_began(self.header_timeout);
        }
    }

    /// A request head arrived; the returned guard ends the request when dropped (with the
    /// response body, or with the request if it never got a response).
    pub fn begin(self: &Arc<Self>, h2: bool) -> InUse {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        self.reading_head.store(false, Ordering::SeqCst);
        InUse(self.clone())
    }

    fn end(&self) {
        if self.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.phase_began(self.idle_timeout);
        }
    }

    /// When the connection is due to close, and why; `None` while a request is in flight.
    fn deadline(&self) -> Option<(Instant, Expired)> {
        if self.active.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let since = self.at(self.phase_at.load(Ordering::SeqCst));
        Some(if self.reading_head.load(Ordering::SeqCst) {
            (
                clock::after(since, self.header_timeout),
                Expired::HeaderTimeout,
            )
        } else {
            (clock::after(since, self.idle_timeout), Expired::Idle)
        })
    }

    /// Resolves when the connection has been idle, or slow to send a head, for too long.
    pub async fn expired(&self) -> Expired {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let deadline = self.deadline();
            let alarm = match deadline {
                Some((at, why)) if now >= at => return why,
                Some((at, _)) => at,
                // In flight: no phase that follows can end sooner than this.
                None => clock::after(now, self.header_timeout.min(self.idle_timeout)),
            };
            self.alarm_at
                .store(self.nanos_since_born(alarm), Ordering::SeqCst);
            // A phase that began before the alarm was set did not see it: look again.
            if self.deadline() != deadline {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(alarm) => {}
                _ = changed => {}
            }
        }
    }
}

/// Why a connection's watchdog closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    HeaderTimeout,
    Idle,
}

impl Expired {
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::HeaderTimeout => "no complete request head within the header timeout",
            Expired::Idle => "idle past the idle timeout",
        }
    }
}

/// One request in flight on a connection.
pub struct InUse(Arc<Activity>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A response body that keeps its request counted as in flight until it is done.
pub struct Tracked<B> {
    inner: B,
    _in_use: InUse,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_use: InUse) -> Self {
        Self {
            inner,
            _in_use: in_use,
        }
    }
}

impl<B> HttpBody for Tracked<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection that tells its [`Activity`] when bytes arrive.
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(90),
        max_connections: 2,
    };

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_gets_the_header_timeout() {
        let a = Activity::new(&LIMITS);
        let started = Instant::now();
        assert_eq!(a.expired().await, Expired::HeaderTimeout);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_between_requests_gets_the_idle_timeout_and_a_new_head_the_header_timeout() {
        let a = Activity::new(&LIMITS);
        let req = a.begin(false);
        // In flight: never expires, however long.
        let waited = tokio::time::timeout(Duration::from_secs(1000), a.expired()).await;
        assert!(waited.is_err());
        drop(req);
        let idle_from = Instant::now();
        assert_eq!(a.expired().await, Expired::Idle);
        assert_eq!(idle_from.elapsed(), Duration::from_secs(90));

        // Idle for a while, then the first byte of a head: 10 s from that byte.
        let a = Activity::new(&LIMITS);
        drop(a.begin(false));
        tokio::time::advance(Duration::from_secs(60)).await;
        a.on_read();
        let head_from = Instant::now();
        assert_eq!(a.expired().await, Expired::HeaderTimeout);
        assert_eq!(head_from.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn h2_frames_between_requests_are_not_a_slow_head() {
        let a = Activity::new(&LIMITS);
        drop(a.begin(true));
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read();
        assert_eq!(a.expired().await, Expired::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_starting_while_the_watchdog_waits_for_idle_brings_its_alarm_forward() {
        let a = Activity::new(&LIMITS);
        let watchdog = tokio::spawn({
            let a = a.clone();
            async move { a.expired().await }
        });
        drop(a.begin(false));
        // The watchdog sets its alarm for the idle timeout (90 s from now).
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(!watchdog.is_finished());
        a.on_read();
        let head_from = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expired::HeaderTimeout);
        assert_eq!(head_from.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_does_not_wake_its_watchdog_per_request() {
        let a = Activity::new(&LIMITS);
        let looks = Arc::new(AtomicUsize::new(0));
        let watchdog = tokio::spawn({
            let (a, looks) = (a.clone(), looks.clone());
            async move {
                // Counts the watchdog's polls: each one is a wake of the connection's task.
                let mut expired = std::pin::pin!(a.expired());
                std::future::poll_fn(|cx| {
                    looks.fetch_add(1, Ordering::Relaxed);
                    std::future::Future::poll(expired.as_mut(), cx)
                })
                .await
            }
        });
        // 1,000 requests over 100 s, each head arriving 10 ms after the last response ended.
        let started = Instant::now();
        for _ in 0..1_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            a.on_read();
            let req = a.begin(false);
            tokio::time::sleep(Duration::from_millis(90)).await;
            drop(req);
        }
        assert_eq!(started.elapsed(), Duration::from_secs(100));
        let looks = looks.load(Ordering::Relaxed);
        // About one look per header timeout (10 s), not two per request.
        assert!(looks <= 25, "the watchdog looked {looks} times");
        assert!(!watchdog.is_finished());
        // Then idle: closed 90 s after the last response.
        let idle_from = Instant::now();
        assert_eq!(watchdog.await.unwrap(), Expired::Idle);
        assert_eq!(idle_from.elapsed(), Duration::from_secs(90));
    }

    #[test]
    fn slots_cap_each_listener_and_the_shared_budget() {
        let shared = Arc::new(Semaphore::new(3));
        let a = Slots::new(2, Some(shared.clone()));
        let b = Slots::new(2, Some(shared));
        let a1 = a.try_take().expect("first");
        let _a2 = a.try_take().expect("second");
        assert!(a.try_take().is_none(), "listener cap");
        let _b1 = b.try_take().expect("shared budget has one left");
        assert!(b.try_take().is_none(), "shared budget");
        drop(a1);
        assert!(b.try_take().is_some(), "freed");
    }

    #[test]
    fn budget_follows_the_open_files_limit() {
        assert_eq!(shared_budget(None, 10_000, 3), 30_000);
        assert_eq!(shared_budget(Some(1024), 10_000, 3), (1024 - 128) / 2);
        assert_eq!(shared_budget(Some(1_048_576), 10_000, 3), 30_000);
        assert_eq!(shared_budget(Some(64), 10_000, 3), 16);
        assert_eq!(shared_budget(Some(1024), 5, 2), 10);
    }

    #[test]
    fn open_files_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(text), Some(1024));
        assert_eq!(
            parse_open_files_limit("Max open files  unlimited unlimited files"),
            None
        );
        assert!(open_files_limit().is_some());
    }
}
