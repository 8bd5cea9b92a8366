//! Keeps connections to one upstream authority open between requests.
//!
//! An integration talks to one authority, so there is nothing to look up: the pool is a stack
//! of idle HTTP/1.1 connections and at most one shared HTTP/2 connection behind one mutex.
//! (hyper-util's pooled client hashed its key with SipHash on every request and wrapped every
//! failure in its own error, which the caller then had to unpick.)
//!
//! - HTTP/1.1: idle connections are reused most recently used first (its TCP window, TLS
//!   session and the upstream's caches are the warmest), at most `max_idle` of them, each
//!   closed after `idle_timeout` unused: on checkout, and by a reaper task that sleeps until
//!   the oldest one expires, so that we close the sockets the third party would otherwise drop
//!   under us. A connection comes back only when hyper is ready to write its next request,
//!   i.e. once the response body was read to the end (or drained after being dropped);
//!   hyper's readiness signal wakes the pool directly, with no task per request.
//! - HTTP/2 (when ALPN picks `h2`): one connection, shared by cloning its `SendRequest`,
//!   replaced once it closes.
//! - A request that a reused connection hands back unsent (the upstream closed the keep-alive
//!   connection just as we picked it) goes out on another connection; the app never sees it.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use http::{uri::Parts, Request, Response, Uri};
use hyper::{
    body::Incoming,
    client::conn::{http1, http2, TrySendError},
};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::{sync::Notify, task::AbortHandle, time::Instant};

use super::connector::{ConnectError, Connector, TlsFailure, UpstreamConn};
use crate::body::Body;

/// Idle connections are closed after this; third parties commonly drop them at 60-120 s.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Header fields an HTTP/1.1 upstream response may have (README, "Limits"); more is a 502.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Bytes of header fields an HTTP/2 upstream response may have (README, "Limits").
pub const MAX_RESPONSE_HEADER_LIST_BYTES: u32 = 16 * 1024;
/// Idle HTTP/1.1 connections kept at most; a burst's extra connections are closed after it.
pub const MAX_IDLE: usize = 64;

/// How many connections to keep, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_idle: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            idle_timeout: IDLE_TIMEOUT,
            max_idle: MAX_IDLE,
        }
    }
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made: nothing was sent.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection failed during the handshake or the exchange. `tls` is the connection's
    /// record of a TLS-level refusal, which hyper's error may have reduced to "canceled".
    #[error("HTTP exchange with the upstream failed")]
    Http {
        #[source]
        error: hyper::Error,
        tls: TlsFailure,
    },
}

/// The connections to one scheme + authority. Cheap to clone; dropping the last clone closes
/// the idle connections and stops the reaper.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    connector: Connector,
    /// `scheme://authority/`, what the connector dials.
    dst: Uri,
    config: PoolConfig,
    h2: http2::Builder<TokioExecutor>,
    state: Mutex<State>,
    /// Wakes the reaper when there is something to watch again.
    reaper_wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// Back = most recently used. Check-ins happen in time order, so the front is the oldest.
    idle: VecDeque<Idle>,
    h2: Option<SharedH2>,
    next_id: u64,
    reaper: Option<AbortHandle>,
    /// The reaper found nothing to watch and waits for `reaper_wake`.
    reaper_parked: bool,
}

struct Idle {
    conn: Http1,
    since: Instant,
}

struct SharedH2 {
    tx: http2::SendRequest<Body>,
    tls: TlsFailure,
    id: u64,
    /// Last checkout. Expiring on it may drop our handle while a long response still streams:
    /// that stream finishes, then hyper closes the connection.
    last_used: Instant,
}

/// One HTTP/1.1 connection, while it is out of the idle stack.
struct Http1 {
    tx: http1::SendRequest<Body>,
    home: Arc<Home>,
}

/// What an HTTP/1.1 connection needs to find its way back to the pool. It is also the waker
/// hyper calls when the connection is ready for its next request: the connection waits in
/// `parked` until then.
struct Home {
    pool: Weak<Shared>,
    tls: TlsFailure,
    parked: Mutex<Option<http1::SendRequest<Body>>>,
}

/// A connection to send one request on.
struct Checkout {
    conn: Conn,
    /// Came from the pool rather than being opened for this request. Only a reused
    /// connection may hand a request back to be sent elsewhere: a fresh one that fails before
    /// sending is the upstream refusing us, not a stale keep-alive.
    reused: bool,
}

enum Conn {
    Http1(Http1),
    Http2 {
        tx: http2::SendRequest<Body>,
        tls: TlsFailure,
        id: u64,
    },
}

/// How sending on one connection failed.
struct Failed {
    error: hyper::Error,
    /// The request, when hyper gave it back before writing any of it.
    unsent: Option<Request<Body>>,
    tls: TlsFailure,
    /// The shared HTTP/2 connection it failed on, if it was that.
    h2_id: Option<u64>,
}

// === impl Pool ===

impl Pool {
    /// A pool for the scheme and authority of `dst`.
    pub fn new(connector: Connector, dst: Uri, config: PoolConfig) -> Self {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(MAX_RESPONSE_HEADER_LIST_BYTES);
        Self {
            shared: Arc::new(Shared {
                connector,
                dst,
                config,
                h2,
                state: Mutex::new(State::default()),
                reaper_wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// True when this pool connects to `uri`'s scheme and authority.
    pub fn serves(&self, uri: &Uri) -> bool {
        uri.authority() == self.shared.dst.authority() && uri.scheme() == self.shared.dst.scheme()
    }

    /// Sends `req` (absolute-form URI) and returns once the response head arrived.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, PoolError> {
        loop {
            let Checkout { conn, reused } = match self.shared.take_pooled(Instant::now()) {
                Some(c) => c,
                None => self.connect().await?,
            };
            let failed = match conn {
                Conn::Http1(c) => match c.send(req).await {
                    Ok(resp) => return Ok(resp),
                    Err(failed) => failed,
                },
                Conn::Http2 { mut tx, tls, id } => match tx.try_send_request(req).await {
                    Ok(resp) => return Ok(resp),
                    Err(err) => Failed::new(err, tls, Some(id)),
                },
            };
            match failed.unsent {
                // Each such retry removes a pooled connection, and fresh ones are not retried,
                // so this ends.
                Some(unsent) if reused => {
                    tracing::debug!(error = %failed.error,
                        "a pooled connection closed before the request went out: resending");
                    if let Some(id) = failed.h2_id {
                        self.shared.evict_h2(id);
                    }
                    req = unsent;
                }
                _ => {
                    return Err(PoolError::Http {
                        error: failed.error,
                        tls: failed.tls,
                    })
                }
            }
        }
    }

    async fn connect(&self) -> Result<Checkout, PoolError> {
        let io = self.shared.connector.connect(&self.shared.dst).await?;
        self.shared.ensure_reaper();
        let tls = io.tls_failure().clone();
        let conn = if io.is_h2() {
            self.handshake_h2(io, tls).await?
        } else {
            self.handshake_h1(io, tls).await?
        };
        Ok(Checkout {
            conn,
            reused: false,
        })
    }

    async fn handshake_h1(&self, io: UpstreamConn, tls: TlsFailure) -> Result<Conn, PoolError> {
        let (tx, conn) = match http1::Builder::new()
            .max_headers(MAX_RESPONSE_HEADERS)
            .handshake(io)
            .await
        {
            Ok(h) => h,
            Err(error) => return Err(PoolError::Http { error, tls }),
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection failed");
            }
        });
        Ok(Conn::Http1(Http1 {
            tx,
            home: Arc::new(Home {
                pool: Arc::downgrade(&self.shared),
                tls,
                parked: Mutex::new(None),
            }),
        }))
    }

    async fn handshake_h2(&self, io: UpstreamConn, tls: TlsFailure) -> Result<Conn, PoolError> {
        let (tx, conn) = match self.shared.h2.handshake(io).await {
            Ok(h) => h,
            Err(error) => return Err(PoolError::Http { error, tls }),
        };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection failed");
            }
        });
        let id = self.shared.share_h2(&tx, &tls);
        Ok(Conn::Http2 { tx, tls, id })
    }

    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.shared.lock().idle.len()
    }

    #[cfg(test)]
    fn has_h2(&self) -> bool {
        self.shared.lock().h2.is_some()
    }

    #[cfg(test)]
    fn reaper(&self) -> Option<AbortHandle> {
        self.shared.lock().reaper.clone()
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the stack consistent (every change
        // is a single push or pop), so keep serving rather than fail every request after it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A pooled connection that can take a request now, if any; drops what has expired or closed.
    fn take_pooled(&self, now: Instant) -> Option<Checkout> {
        let timeout = self.config.idle_timeout;
        let mut closed: Vec<Http1> = Vec::new();
        let mut old_h2 = None;
        let mut st = self.lock();
        if let Some(h2) = &mut st.h2 {
            if h2.tx.is_ready() && now < h2.last_used + timeout {
                h2.last_used = now;
                return Some(Checkout {
                    conn: Conn::Http2 {
                        tx: h2.tx.clone(),
                        tls: h2.tls.clone(),
                        id: h2.id,
                    },
                    reused: true,
                });
            }
            old_h2 = st.h2.take();
        }
        while st.idle.front().is_some_and(|i| now >= i.since + timeout) {
            closed.extend(st.idle.pop_front().map(|i| i.conn));
        }
        let mut found = None;
        while let Some(Idle { conn, .. }) = st.idle.pop_back() {
            // Idle connections are ready or, if the upstream closed them since, closed.
            if conn.tx.is_ready() {
                found = Some(conn);
                break;
            }
            closed.push(conn);
        }
        drop(st);
        drop((closed, old_h2));
        found.map(|conn| Checkout {
            conn: Conn::Http1(conn),
            reused: true,
        })
    }

    fn check_in(&self, conn: Http1) {
        let mut st = self.lock();
        let evicted = if st.idle.len() >= self.config.max_idle {
            st.idle.pop_front()
        } else {
            None
        };
        st.idle.push_back(Idle {
            conn,
            since: Instant::now(),
        });
        self.unpark_reaper(&mut st);
        drop(st);
        drop(evicted);
    }

    /// Makes a new HTTP/2 connection the shared one unless an open one is already there (two
    /// requests may have connected at once); returns its id.
    fn share_h2(&self, tx: &http2::SendRequest<Body>, tls: &TlsFailure) -> u64 {
        let mut st = self.lock();
        st.next_id += 1;
        let id = st.next_id;
        let old = match &st.h2 {
            Some(h2) if h2.tx.is_ready() => return id,
            _ => st.h2.replace(SharedH2 {
                tx: tx.clone(),
                tls: tls.clone(),
                id,
                last_used: Instant::now(),
            }),
        };
        self.unpark_reaper(&mut st);
        drop(st);
        drop(old);
        id
    }

    /// Drops the shared HTTP/2 connection if it is still the one with `id`.
    fn evict_h2(&self, id: u64) {
        let mut st = self.lock();
        let old = match &st.h2 {
            Some(h2) if h2.id == id => st.h2.take(),
            _ => None,
        };
        drop(st);
        drop(old);
    }

    /// Closes what has been idle too long; returns when the next connection will expire.
    fn reap(&self, now: Instant) -> Option<Instant> {
        let timeout = self.config.idle_timeout;
        let mut expired: Vec<Http1> = Vec::new();
        let mut st = self.lock();
        while st.idle.front().is_some_and(|i| now >= i.since + timeout) {
            expired.extend(st.idle.pop_front().map(|i| i.conn));
        }
        let old_h2 = match &st.h2 {
            Some(h2) if now >= h2.last_used + timeout => st.h2.take(),
            _ => None,
        };
        let next = [
            st.idle.front().map(|i| i.since + timeout),
            st.h2.as_ref().map(|h| h.last_used + timeout),
        ]
        .into_iter()
        .flatten()
        .min();
        st.reaper_parked = next.is_none();
        drop(st);
        drop((expired, old_h2));
        next
    }

    fn unpark_reaper(&self, st: &mut State) {
        if st.reaper_parked {
            st.reaper_parked = false;
            self.reaper_wake.notify_one();
        }
    }

    /// Starts the reaper on the first connection (we are in the runtime then).
    fn ensure_reaper(self: &Arc<Self>) {
        let mut st = self.lock();
        if st.reaper.is_none() {
            let task = tokio::spawn(reaper(Arc::downgrade(self), self.reaper_wake.clone()));
            st.reaper = Some(task.abort_handle());
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let st = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(reaper) = st.reaper.take() {
            reaper.abort();
        }
    }
}

/// Closes idle connections as they expire, sleeping in between; holds only a weak reference,
/// and is aborted when the pool goes.
async fn reaper(pool: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = match pool.upgrade() {
            Some(pool) => pool.reap(Instant::now()),
            None => return,
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => wake.notified().await,
        }
    }
}

// === impl Http1 ===

impl Http1 {
    /// Sends in origin form (`/path?query`), as HTTP/1.1 wants it of a client that is not
    /// talking to a proxy. An unsent request comes back with its absolute URI restored.
    async fn send(mut self, mut req: Request<Body>) -> Result<Response<Incoming>, Failed> {
        let origin = origin_form(req.uri());
        let absolute = std::mem::replace(req.uri_mut(), origin);
        match self.tx.try_send_request(req).await {
            Ok(resp) => {
                self.release();
                Ok(resp)
            }
            Err(err) => {
                let mut failed = Failed::new(err, self.home.tls.clone(), None);
                if let Some(unsent) = &mut failed.unsent {
                    *unsent.uri_mut() = absolute;
                }
                Err(failed)
            }
        }
    }

    /// Back to the pool as soon as the connection can take another request: now, or when
    /// hyper wakes [`Home`] (the response body has been read, or drained after a drop).
    fn release(self) {
        if self.tx.is_ready() {
            return self.check_in();
        }
        if self.tx.is_closed() {
            return;
        }
        let Http1 { mut tx, home } = self;
        let waker = Waker::from(home.clone());
        match tx.poll_ready(&mut Context::from_waker(&waker)) {
            Poll::Ready(Ok(())) => return Http1 { tx, home }.check_in(),
            Poll::Ready(Err(_)) => return,
            Poll::Pending => {}
        }
        *home.parked() = Some(tx);
        // The wake may have come between registering and parking, and found nothing: look
        // again now that the connection is parked.
        let woken = {
            let mut parked = home.parked();
            match &*parked {
                Some(tx) if tx.is_ready() || tx.is_closed() => parked.take(),
                _ => None,
            }
        };
        if let Some(tx) = woken {
            Http1 { tx, home }.release();
        }
    }

    fn check_in(self) {
        if let Some(pool) = self.home.pool.upgrade() {
            pool.check_in(self);
        }
    }
}

// === impl Home ===

impl Home {
    fn parked(&self) -> std::sync::MutexGuard<'_, Option<http1::SendRequest<Body>>> {
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Wake for Home {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let tx = self.parked().take();
        if let Some(tx) = tx {
            Http1 {
                tx,
                home: self.clone(),
            }
            .release();
        }
    }
}

// === impl Failed ===

impl Failed {
    fn new(mut err: TrySendError<Request<Body>>, tls: TlsFailure, h2_id: Option<u64>) -> Self {
        Self {
            unsent: err.take_message(),
            error: err.into_error(),
            tls,
            h2_id,
        }
    }
}

/// The path-and-query of an absolute URI (`/` when it has none).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => {
            let mut parts = Parts::default();
            parts.path_and_query = Some(pq.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
