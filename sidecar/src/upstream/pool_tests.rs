//! The pool against real sockets on 127.0.0.1: a tiny hyper server (plain HTTP/1.1, or TLS
//! with ALPN `h2`) that tags each response with the id of the connection that served it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::{pki_types::CertificateDer, RootCertStore};
use rustls_pki_types::{pem::PemObject, PrivateKeyDer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::Barrier,
    task::{AbortHandle, JoinSet},
};

use super::*;
use crate::{body, demo::pki::DemoPki};

const BIG: usize = 1 << 20;

// === the test server ===

#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    closed: AtomicUsize,
    uris: Mutex<Vec<String>>,
    conns: Mutex<Vec<AbortHandle>>,
}

struct Server {
    addr: SocketAddr,
    seen: Arc<Seen>,
    tls: Option<DemoPki>,
    accept: AbortHandle,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.seen.conns.lock().unwrap().iter() {
            c.abort();
        }
    }
}

/// Plain HTTP/1.1. `/hold` waits until `hold` requests are in, then answers a 1 MiB body;
/// `/big` answers 1 MiB at once; `/endless` sends one chunk and never finishes; anything else
/// answers `ok`. Every response carries `x-conn`, the serving connection's number.
async fn server(hold: usize) -> Server {
    start(hold, false).await
}

/// The same over TLS, offering only `h2`.
async fn h2_server() -> Server {
    start(1, true).await
}

async fn start(hold: usize, h2: bool) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let barrier = Arc::new(Barrier::new(hold));
    let pki = h2.then(|| DemoPki::generate().unwrap());
    let acceptor = pki.as_ref().map(|p| {
        let chain = CertificateDer::pem_slice_iter(p.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(p.server_key_pem.as_bytes()).unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let s = seen.clone();
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let id = s.accepted.fetch_add(1, Ordering::SeqCst) + 1;
            let (seen, barrier, acceptor) = (s.clone(), barrier.clone(), acceptor.clone());
            let task = tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (seen, barrier) = (seen.clone(), barrier.clone());
                    async move { Ok::<_, Infallible>(handle(req, id, &seen, &barrier).await) }
                });
                match acceptor {
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    }
                    None => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            });
            let seen = s.clone();
            seen.conns.lock().unwrap().push(task.abort_handle());
            tokio::spawn(async move {
                let _ = task.await;
                seen.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    })
    .abort_handle();
    Server {
        addr,
        seen,
        tls: pki,
        accept,
    }
}

async fn handle(
    req: Request<Incoming>,
    id: usize,
    seen: &Seen,
    barrier: &Barrier,
) -> Response<Body> {
    seen.uris.lock().unwrap().push(req.uri().to_string());
    let body = match req.uri().path() {
        "/hold" => {
            barrier.wait().await;
            body::full(vec![b'x'; BIG])
        }
        "/big" => body::full(vec![b'x'; BIG]),
        "/endless" => body::boxed(Endless(false)),
        _ => body::full("ok"),
    };
    Response::builder().header("x-conn", id).body(body).unwrap()
}

/// One chunk, then nothing, ever.
struct Endless(bool);

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 {
            return Poll::Pending;
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first")))))
    }
}

impl Server {
    fn accepted(&self) -> usize {
        self.seen.accepted.load(Ordering::SeqCst)
    }

    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    fn pool(&self, config: PoolConfig) -> Pool {
        let mut roots = RootCertStore::empty();
        if let Some(p) = &self.tls {
            for c in CertificateDer::pem_slice_iter(p.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = Connector::new(Arc::new(tls), Duration::from_secs(5), None, true);
        Pool::new(connector, self.url("/").parse().unwrap(), config)
    }

    async fn wait_closed(&self, n: usize) {
        eventually(
            || self.seen.closed.load(Ordering::SeqCst) >= n,
            "server saw the closes",
        )
        .await;
    }
}

fn request(server: &Server, path: &str) -> Request<Body> {
    Request::get(server.url(path))
        .header("host", "upstream.test")
        .body(body::empty())
        .unwrap()
}

/// Sends and reads the whole body; returns the serving connection's number.
async fn get(pool: &Pool, server: &Server, path: &str) -> usize {
    let resp = pool.send(request(server, path)).await.expect("response");
    let conn = conn_of(&resp);
    resp.into_body().collect().await.expect("body");
    conn
}

fn conn_of(resp: &Response<Incoming>) -> usize {
    resp.headers()["x-conn"].to_str().unwrap().parse().unwrap()
}

async fn eventually(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting: {what}");
}

// === HTTP/1.1 ===

#[tokio::test]
async fn sequential_requests_reuse_one_connection_in_origin_form() {
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    for _ in 0..5 {
        assert_eq!(get(&pool, &s, "/v1/charges?limit=3").await, 1);
        // A body larger than any buffer: the connection comes back only once it is read.
        assert_eq!(get(&pool, &s, "/big").await, 1);
    }
    assert_eq!(s.accepted(), 1);
    let uris = s.seen.uris.lock().unwrap().clone();
    assert_eq!(
        uris[0], "/v1/charges?limit=3",
        "HTTP/1.1 requests go out in origin form"
    );
    assert_eq!(uris[1], "/big");
}

/// Opens connections 1, 2, 3 and returns them to the pool in that order.
async fn three_idle(s: &Server, pool: &Pool) {
    let mut held = JoinSet::new();
    for _ in 0..3 {
        let (pool, req) = (pool.clone(), request(s, "/hold"));
        held.spawn(async move { pool.send(req).await.expect("response") });
    }
    let mut resps = held.join_all().await;
    resps.sort_by_key(conn_of);
    for (n, resp) in resps.into_iter().enumerate() {
        resp.into_body().collect().await.expect("body");
        eventually(|| pool.idle_count() == n + 1, "connection back in the pool").await;
    }
    assert_eq!(s.accepted(), 3);
}

#[tokio::test]
async fn the_most_recently_used_connection_goes_first() {
    let s = server(3).await;
    let pool = s.pool(PoolConfig::default());
    three_idle(&s, &pool).await;
    // Unread 1 MiB bodies keep each connection busy, so each request takes the next one.
    let mut busy = Vec::new();
    for expected in [3, 2, 1] {
        let resp = pool.send(request(&s, "/big")).await.expect("response");
        assert_eq!(conn_of(&resp), expected);
        busy.push(resp);
    }
    assert_eq!(pool.idle_count(), 0);
    // All three busy: a fourth connection.
    assert_eq!(get(&pool, &s, "/").await, 4);
}

#[tokio::test]
async fn at_most_max_idle_connections_are_kept() {
    let s = server(3).await;
    let pool = s.pool(PoolConfig {
        max_idle: 2,
        ..PoolConfig::default()
    });
    let mut held = JoinSet::new();
    for _ in 0..3 {
        let (pool, req) = (pool.clone(), request(&s, "/hold"));
        held.spawn(async move { pool.send(req).await.expect("response") });
    }
    for resp in held.join_all().await {
        resp.into_body().collect().await.expect("body");
    }
    eventually(
        || s.seen.closed.load(Ordering::SeqCst) == 1,
        "the oldest idle one closed",
    )
    .await;
    assert_eq!(pool.idle_count(), 2);
}

#[tokio::test]
async fn expired_connections_are_not_checked_out() {
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    get(&pool, &s, "/").await;
    eventually(|| pool.idle_count() == 1, "connection back in the pool").await;
    let later = Instant::now() + IDLE_TIMEOUT - Duration::from_secs(1);
    assert!(pool.shared.take_pooled(later).is_some(), "still fresh");
    get(&pool, &s, "/").await;
    eventually(|| pool.idle_count() == 1, "connection back in the pool").await;
    assert!(pool
        .shared
        .take_pooled(Instant::now() + IDLE_TIMEOUT)
        .is_none());
    assert_eq!(pool.idle_count(), 0, "the expired connection was dropped");
    s.wait_closed(2).await;
}

#[tokio::test]
async fn the_reaper_closes_idle_connections_and_rearms() {
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    for round in 1..=2 {
        assert_eq!(get(&pool, &s, "/").await, round);
        eventually(|| pool.idle_count() == 1, "connection back in the pool").await;
        // Time stands still for the sockets' sake, except for this jump.
        tokio::time::pause();
        tokio::time::advance(IDLE_TIMEOUT - Duration::from_secs(1)).await;
        tokio::task::yield_now().await;
        assert_eq!(pool.idle_count(), 1, "not yet");
        // (Timers fire on the next whole millisecond.)
        tokio::time::advance(Duration::from_millis(1002)).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(pool.idle_count(), 0, "reaped");
        tokio::time::resume();
        s.wait_closed(round).await;
    }
}

#[tokio::test]
async fn the_reaper_stops_with_the_pool() {
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    get(&pool, &s, "/").await;
    let reaper = pool.reaper().expect("a reaper once connected");
    assert!(!reaper.is_finished());
    drop(pool);
    eventually(|| reaper.is_finished(), "reaper gone").await;
    s.wait_closed(1).await;
}

/// An upstream that closes every connection right after its response, without saying
/// `Connection: close`: each reuse finds the connection closed (or hands the request back
/// unsent) and the request goes out on a new one, invisibly.
#[tokio::test]
async fn connections_the_upstream_closes_are_replaced_invisibly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let srv = tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            });
        }
    });
    let connector = Connector::new(
        Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        ),
        Duration::from_secs(5),
        None,
        true,
    );
    let pool = Pool::new(
        connector,
        format!("http://{addr}/").parse().unwrap(),
        PoolConfig::default(),
    );
    for i in 0..50 {
        let req = Request::get(format!("http://{addr}/n/{i}"))
            .header("host", "upstream.test")
            .body(body::empty())
            .unwrap();
        let resp = pool.send(req).await.expect("no error reaches the caller");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        if i % 2 == 0 {
            // Give the close time to arrive while the connection is idle.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 50);
    srv.abort();
}

#[tokio::test]
async fn a_connection_whose_body_was_dropped_midway_is_not_reused() {
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    let resp = pool.send(request(&s, "/endless")).await.expect("response");
    assert_eq!(conn_of(&resp), 1);
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().unwrap(), "first");
    drop(body);
    // Connection 1 still owes the rest of that body: never hand it out.
    assert_eq!(get(&pool, &s, "/").await, 2);
    assert_eq!(get(&pool, &s, "/").await, 2);
    assert_eq!(pool.idle_count(), 1);
}

/// Sends `GET /` through a new pool to `addr`, an address none of the test servers own.
async fn send_to(addr: std::net::SocketAddr) -> Result<Response<Incoming>, PoolError> {
    let connector = server(1)
        .await
        .pool(PoolConfig::default())
        .shared
        .connector
        .clone();
    let pool = Pool::new(
        connector,
        format!("http://{addr}/").parse().unwrap(),
        PoolConfig::default(),
    );
    let req = Request::get(format!("http://{addr}/"))
        .body(body::empty())
        .unwrap();
    pool.send(req).await
}

#[tokio::test]
async fn a_refused_connection_is_a_typed_connect_error() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    match send_to(addr).await {
        Err(PoolError::Connect(ConnectError::Connect { .. })) => {}
        other => panic!("expected a connect error, got {other:?}"),
    }
}

// === HTTP/2 ===

#[tokio::test]
async fn http2_requests_share_one_connection() {
    let s = h2_server().await;
    let pool = s.pool(PoolConfig::default());
    assert_eq!(get(&pool, &s, "/first").await, 1);
    assert!(pool.has_h2());
    let mut all = JoinSet::new();
    for _ in 0..10 {
        let (pool, req) = (pool.clone(), request(&s, "/big"));
        all.spawn(async move {
            let resp = pool.send(req).await.expect("response");
            let conn = conn_of(&resp);
            resp.into_body().collect().await.expect("body");
            conn
        });
    }
    assert_eq!(all.join_all().await, vec![1; 10]);
    assert_eq!(s.accepted(), 1);
    assert_eq!(pool.idle_count(), 0, "no HTTP/1.1 connections");
    let uri = s.seen.uris.lock().unwrap()[0].clone();
    assert_eq!(
        uri,
        s.url("/first"),
        ":scheme and :authority come from the URI"
    );
}

#[tokio::test]
async fn a_closed_http2_connection_is_replaced() {
    let s = h2_server().await;
    let pool = s.pool(PoolConfig::default());
    assert_eq!(get(&pool, &s, "/").await, 1);
    for c in s.seen.conns.lock().unwrap().iter() {
        c.abort();
    }
    s.wait_closed(1).await;
    eventually(
        || {
            pool.shared
                .lock()
                .h2
                .as_ref()
                .is_some_and(|h| h.tx.is_closed())
        },
        "the client noticed",
    )
    .await;
    assert_eq!(get(&pool, &s, "/").await, 2);
    assert_eq!(get(&pool, &s, "/").await, 2);
}

#[tokio::test]
async fn closed_pooled_connections_are_skipped() {
    // The server drops connection 1 while it is idle.
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    assert_eq!(get(&pool, &s, "/").await, 1);
    eventually(|| pool.idle_count() == 1, "connection back in the pool").await;
    for c in s.seen.conns.lock().unwrap().iter() {
        c.abort();
    }
    s.wait_closed(1).await;
    eventually(
        || {
            pool.shared
                .lock()
                .idle
                .back()
                .is_some_and(|i| i.conn.tx.is_closed())
        },
        "the client noticed",
    )
    .await;
    assert_eq!(get(&pool, &s, "/").await, 2);
}

// === requests handed back unsent ===

/// A connection the pool did not open, to the pool's upstream.
async fn raw_connection(pool: &Pool) -> UpstreamConn {
    let shared = &pool.shared;
    shared
        .connector
        .connect(&shared.dst)
        .await
        .expect("connect")
}

/// Drives a hyper connection until the returned sender fires; then, before polling it again,
/// drops it, as hyper does once it reads the upstream's close.
fn drive_until_killed<F>(conn: F) -> tokio::sync::oneshot::Sender<()>
where
    F: std::future::Future + Send + 'static,
{
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = killed => {}
            _ = conn => {}
        }
    });
    kill
}

/// The upstream closed a pooled keep-alive connection and hyper learns it only when the next
/// request is already queued on it: the request comes back unsent and goes out on a new
/// connection, and the caller sees a plain response.
#[tokio::test]
async fn a_request_handed_back_by_a_reused_http1_connection_is_resent() {
    let s = server(1).await;
    let pool = s.pool(PoolConfig::default());
    let io = raw_connection(&pool).await;
    let (tx, conn) = http1::handshake::<_, Body>(io).await.expect("handshake");
    let kill = drive_until_killed(conn);
    let conn = Http1 {
        tx,
        home: Arc::new(Home {
            pool: Arc::downgrade(&pool.shared),
            tls: TlsFailure::default(),
            parked: Mutex::new(None),
        }),
    };
    eventually(|| conn.tx.is_ready(), "connection ready").await;
    pool.shared.check_in(conn);
    kill.send(()).expect("driver alive");
    // Connection 1 is in the pool and still looks ready; hyper hands the request back.
    assert_eq!(get(&pool, &s, "/").await, 2);
    assert_eq!(s.accepted(), 2);
    assert_eq!(
        s.seen.uris.lock().unwrap().as_slice(),
        ["/"],
        "sent once, in origin form"
    );
}

#[tokio::test]
async fn a_request_handed_back_by_the_shared_http2_connection_is_resent() {
    let s = h2_server().await;
    let pool = s.pool(PoolConfig::default());
    let io = raw_connection(&pool).await;
    let (tx, conn) = pool
        .shared
        .h2
        .handshake::<_, Body>(io)
        .await
        .expect("handshake");
    let kill = drive_until_killed(conn);
    pool.shared.share_h2(&tx, &TlsFailure::default());
    kill.send(()).expect("driver alive");
    assert_eq!(get(&pool, &s, "/").await, 2);
    assert_eq!(
        get(&pool, &s, "/").await,
        2,
        "the new connection is the shared one"
    );
}

/// A fresh connection that fails before sending is the upstream refusing us, not a stale
/// keep-alive: that is an error, not a loop.
#[tokio::test]
async fn a_fresh_connection_that_fails_is_an_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            drop(tcp);
        }
    });
    match send_to(addr).await {
        Err(PoolError::Http { .. }) => {}
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    srv.abort();
}
