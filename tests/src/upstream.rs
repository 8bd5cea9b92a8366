//! A scriptable, fault-injecting HTTP(S) upstream standing in for a third-party API, so
//! end-to-end tests can see exactly what the sidecar sent and make it misbehave on cue.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::pki::{certs_from_pem, init_crypto, provider, CertPair, TestCa};

/// Header whose value, when present, is the script key of a request (else its path).
pub const KEY_HEADER: &str = "x-test-key";

/// How long a faulty response waits after its partial body before cutting the connection,
/// so the bytes already written reach the client first.
const PARTIAL_BODY_GRACE: Duration = Duration::from_millis(100);

/// Declared length of the `ResetAfterHeaders` body, of which only a part is sent.
const TRUNCATED_LENGTH: u64 = 1 << 20;
const TRUNCATED_SENT: usize = 1024;

/// What the upstream does with one request, after it has read it completely. Faults cut the
/// whole connection, so over HTTP/2 they also end the other streams on it.
#[derive(Clone, Debug)]
pub enum Action {
    /// A normal response.
    Respond {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Bytes,
    },
    /// A JSON description of the request as received (see [`Action::echo`]).
    Echo {
        status: u16,
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// Waits before running the inner action: slow response headers.
    Delay(Duration, Box<Action>),
    /// Never answers; the connection stays open until the client gives up.
    Hang,
    /// Closes the TCP connection with a RST (SO_LINGER 0) and no response bytes.
    ResetBeforeResponse,
    /// Closes the connection gracefully (FIN) without any response bytes.
    CloseWithoutResponse,
    /// Sends 200 and a `content-length` larger than the body, part of the body, then closes.
    ResetAfterHeaders,
    /// A 200 whose body of `total_bytes` is generated in `chunk`-sized pieces, never buffered.
    Stream { total_bytes: u64, chunk: usize },
    /// A 200 streamed (chunked) as these chunks, each sent after its delay: a scripted event
    /// stream (an LLM's server-sent events).
    Events {
        headers: Vec<(HeaderName, HeaderValue)>,
        chunks: Vec<(Duration, Bytes)>,
    },
}

impl Action {
    /// A plain-text response.
    pub fn respond(status: u16, body: &str) -> Action {
        Action::Respond {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            body: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, value: serde_json::Value) -> Action {
        Action::Respond {
            status,
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body: Bytes::from(value.to_string()),
        }
    }

    /// 200 with a JSON body `{method, path_and_query, headers, body, key, connection_id,
    /// client_cert_cn}`; header names are lowercase and repeated values joined by ", ".
    pub fn echo() -> Action {
        Action::Echo {
            status: 200,
            headers: Vec::new(),
        }
    }

    /// A streamed body of `total_bytes`, produced on the fly.
    pub fn stream(total_bytes: u64, chunk: usize) -> Action {
        Action::Stream { total_bytes, chunk }
    }

    /// A `text/event-stream` 200 of `chunks` lines, `tick 0\n`, `tick 1\n`, ..., sent
    /// `every` apart, the first at once.
    pub fn drip(chunks: usize, every: Duration) -> Action {
        Action::events(
            (0..chunks)
                .map(|i| {
                    let delay = if i == 0 { Duration::ZERO } else { every };
                    (delay, format!("tick {i}\n"))
                })
                .collect(),
        )
    }

    /// A `text/event-stream` 200 of `chunks`, each sent after its delay.
    pub fn events(chunks: Vec<(Duration, String)>) -> Action {
        Action::Events {
            headers: vec![(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"))],
            chunks: chunks
                .into_iter()
                .map(|(d, c)| (d, Bytes::from(c)))
                .collect(),
        }
    }

    /// Runs `action` after `delay`.
    pub fn delay(delay: Duration, action: Box<Action>) -> Action {
        Action::Delay(delay, action)
    }

    /// This action, after `delay` (slow headers).
    pub fn delayed(self, delay: Duration) -> Action {
        Action::Delay(delay, Box::new(self))
    }

    /// Adds a response header; panics on actions that send no headers of their own.
    pub fn with_header(self, name: &str, value: &str) -> Action {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|e| panic!("invalid header name {name:?}: {e}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|e| panic!("invalid header value {value:?}: {e}"));
        self.push_header(name, value)
    }

    fn push_header(self, name: HeaderName, value: HeaderValue) -> Action {
        match self {
            Action::Respond {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value));
                Action::Respond {
                    status,
                    headers,
                    body,
                }
            }
            Action::Echo {
                status,
                mut headers,
            } => {
                headers.push((name, value));
                Action::Echo { status, headers }
            }
            Action::Events {
                mut headers,
                chunks,
            } => {
                headers.push((name, value));
                Action::Events { headers, chunks }
            }
            Action::Delay(d, inner) => Action::Delay(d, Box::new(inner.push_header(name, value))),
            other => panic!("with_header does not apply to {other:?}"),
        }
    }
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Observed {
    pub key: String,
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// Subject CN of the client certificate, when the client presented one.
    pub client_cert_cn: Option<String>,
    /// Distinguishes connections, to check pooling and keep-alive.
    pub connection_id: u64,
}

impl Observed {
    /// The header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Configures an [`Upstream`] before it starts listening.
pub struct UpstreamBuilder {
    tls: Option<CertPair>,
    client_ca_pem: Option<String>,
    default_action: Action,
    http1_only: bool,
    tls12_only: bool,
    port: u16,
}

impl UpstreamBuilder {
    /// Serves HTTPS with this certificate (give it `localhost` and `127.0.0.1` SANs).
    pub fn tls(mut self, server: CertPair) -> Self {
        self.tls = Some(server);
        self
    }

    /// Requires a client certificate issued by `ca_pem` (mTLS); implies nothing without `tls`.
    pub fn require_client_cert(mut self, ca_pem: &str) -> Self {
        self.client_ca_pem = Some(ca_pem.to_string());
        self
    }

    /// The action used when no scripted action is left for a key.
    pub fn default_action(mut self, action: Action) -> Self {
        self.default_action = action;
        self
    }

    /// Speaks HTTP/1.1 only (and advertises only `http/1.1` over ALPN).
    pub fn http1_only(mut self) -> Self {
        self.http1_only = true;
        self
    }

    /// Offers TLS 1.2 only, to test a client's minimum-version setting.
    pub fn tls12_only(mut self) -> Self {
        self.tls12_only = true;
        self
    }

    /// Listens on a fixed port, e.g. to bring a stopped upstream back on the same address.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Binds 127.0.0.1 and starts serving in the background.
    pub async fn start(self) -> Upstream {
        init_crypto();
        let acceptor = self.tls.as_ref().map(|pair| {
            TlsAcceptor::from(Arc::new(server_config(
                pair,
                self.client_ca_pem.as_deref(),
                self.http1_only,
                self.tls12_only,
            )))
        });
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("bind upstream on 127.0.0.1:{}: {e}", self.port));
        let addr = listener.local_addr().expect("listener address");
        let state = Arc::new(State {
            scripts: Mutex::new(HashMap::new()),
            default_action: Mutex::new(self.default_action),
            observed: Mutex::new(Vec::new()),
            connections: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            resumed_handshakes: AtomicU64::new(0),
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        tokio::spawn(accept_loop(
            listener,
            acceptor,
            state.clone(),
            shutdown_rx,
            self.http1_only,
        ));
        Upstream {
            inner: Arc::new(Handle {
                addr,
                tls: self.tls.is_some(),
                state,
                shutdown,
            }),
        }
    }
}

/// A running fake upstream; clones share it, and it stops when the last clone is dropped.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<Handle>,
}

struct Handle {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

struct State {
    scripts: Mutex<HashMap<String, VecDeque<Action>>>,
    default_action: Mutex<Action>,
    observed: Mutex<Vec<Observed>>,
    connections: AtomicU64,
    handshake_failures: AtomicU64,
    /// TLS handshakes that resumed an earlier session (no certificate exchange).
    resumed_handshakes: AtomicU64,
}

impl State {
    fn next_action(&self, key: &str) -> Action {
        let scripted = lock(&self.scripts)
            .get_mut(key)
            .and_then(VecDeque::pop_front);
        scripted.unwrap_or_else(|| lock(&self.default_action).clone())
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Upstream {
    /// Starts configuring an upstream (plain HTTP, answering 200 "ok" by default).
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder {
            tls: None,
            client_ca_pem: None,
            default_action: Action::respond(200, "ok"),
            http1_only: false,
            tls12_only: false,
            port: 0,
        }
    }

    /// The upstream most data-path tests need: HTTPS with a `localhost` certificate from `ca`,
    /// answering every request with its echo ([`Action::echo`]).
    pub async fn echo(ca: &TestCa) -> Upstream {
        Upstream::builder()
            .tls(ca.localhost_cert())
            .default_action(Action::echo())
            .start()
            .await
    }

    /// HTTPS with a `localhost` certificate from `ca`, answering `200 ok`, except `flaky`,
    /// which answers 503 once and then 200: one request that takes a retry.
    pub async fn ok_with_a_flaky_path(ca: &TestCa, flaky: &str) -> Upstream {
        let up = Upstream::builder()
            .tls(ca.localhost_cert())
            .default_action(Action::respond(200, "ok"))
            .start()
            .await;
        up.script(
            flaky,
            vec![Action::respond(503, "busy"), Action::respond(200, "ok")],
        );
        up
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `https://localhost:PORT` with TLS, else `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        if self.inner.tls {
            format!("https://localhost:{}", self.inner.addr.port())
        } else {
            format!("http://127.0.0.1:{}", self.inner.addr.port())
        }
    }

    /// Queues `actions` for the next requests with this key, after any already queued.
    pub fn script(&self, key: &str, actions: Vec<Action>) {
        lock(&self.inner.state.scripts)
            .entry(key.to_string())
            .or_default()
            .extend(actions);
    }

    /// Replaces the fallback action, e.g. to let a failing upstream recover.
    pub fn set_default_action(&self, action: Action) {
        *lock(&self.inner.state.default_action) = action;
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Observed> {
        lock(&self.inner.state.observed).clone()
    }

    /// The requests received with this key.
    pub fn requests_for(&self, key: &str) -> Vec<Observed> {
        lock(&self.inner.state.observed)
            .iter()
            .filter(|o| o.key == key)
            .cloned()
            .collect()
    }

    /// Number of requests received so far.
    pub fn count(&self) -> usize {
        lock(&self.inner.state.observed).len()
    }

    /// Number of TCP connections accepted so far (including failed handshakes).
    pub fn connection_count(&self) -> u64 {
        self.inner.state.connections.load(Ordering::SeqCst)
    }

    /// Number of TLS handshakes that failed, e.g. a client without a certificate under mTLS.
    pub fn handshake_failures(&self) -> u64 {
        self.inner.state.handshake_failures.load(Ordering::SeqCst)
    }

    /// TLS handshakes that resumed a session the client kept (the upstream's view).
    pub fn resumed_handshakes(&self) -> u64 {
        self.inner.state.resumed_handshakes.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests and pending scripts (the default action stays).
    pub fn clear(&self) {
        lock(&self.inner.state.observed).clear();
        lock(&self.inner.state.scripts).clear();
    }

    /// Waits until at least `n` requests have arrived; false on timeout.
    pub async fn wait_for_count(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.count() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes the listener and every open connection; later connects are refused.
    pub fn stop(&self) {
        let _ = self.inner.shutdown.send(true);
    }
}

fn server_config(
    pair: &CertPair,
    client_ca_pem: Option<&str>,
    http1_only: bool,
    tls12_only: bool,
) -> rustls::ServerConfig {
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .expect("protocol versions supported by ring");
    let builder = match client_ca_pem {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certs_from_pem(pem) {
                roots.add(cert).expect("client CA is a valid certificate");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(pair.cert_chain(), pair.private_key())
        .expect("server certificate and key match");
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    config
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    http1_only: bool,
) {
    loop {
        let tcp = tokio::select! {
            _ = shutdown.wait_for(|&stop| stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let conn_id = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(serve_connection(
            tcp,
            acceptor.clone(),
            state.clone(),
            shutdown.clone(),
            http1_only,
            conn_id,
        ));
    }
}

/// How a fault ends a connection.
#[derive(Clone, Copy, Debug)]
enum Abort {
    Reset,
    Close,
}

/// Per-connection data the request handler needs.
struct ConnCtx {
    state: Arc<State>,
    conn_id: u64,
    client_cert_cn: Option<String>,
    abort: mpsc::UnboundedSender<Abort>,
}

async fn serve_connection(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    http1_only: bool,
    conn_id: u64,
) {
    let _ = tcp.set_nodelay(true);
    // hyper owns the stream; a second descriptor lets a fault set SO_LINGER 0 on it later.
    let Ok((tcp, twin)) = duplicate(tcp) else {
        return;
    };
    let (abort_tx, abort_rx) = mpsc::unbounded_channel();
    let mut ctx = ConnCtx {
        state: state.clone(),
        conn_id,
        client_cert_cn: None,
        abort: abort_tx,
    };
    let abort = match acceptor {
        None => drive(TokioIo::new(tcp), ctx, abort_rx, shutdown, http1_only).await,
        Some(acceptor) => {
            let handshake = tokio::select! {
                _ = shutdown.wait_for(|&stop| stop) => return,
                hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)) => hs,
            };
            let tls = match handshake {
                Ok(Ok(tls)) => tls,
                _ => {
                    state.handshake_failures.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            };
            if tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                state.resumed_handshakes.fetch_add(1, Ordering::SeqCst);
            }
            ctx.client_cert_cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|der| common_name(der));
            drive(TokioIo::new(tls), ctx, abort_rx, shutdown, http1_only).await
        }
    };
    if let Some(Abort::Reset) = abort {
        let _ = TcpSocket::from_std_stream(twin).set_zero_linger();
    }
}

/// Splits a stream into the one hyper will own and a twin descriptor of the same socket.
fn duplicate(tcp: TcpStream) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let std = tcp.into_std()?;
    let twin = std.try_clone()?;
    Ok((TcpStream::from_std(std)?, twin))
}

fn common_name(der: &rustls_pki_types::CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// Serves HTTP on `io` until the client leaves, shutdown, or a fault asks to abort; dropping
/// the connection future then closes the socket without sending anything more.
async fn drive<I>(
    io: I,
    ctx: ConnCtx,
    mut abort_rx: mpsc::UnboundedReceiver<Abort>,
    mut shutdown: watch::Receiver<bool>,
    http1_only: bool,
) -> Option<Abort>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let ctx = Arc::new(ctx);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http1_only {
        builder = builder.http1_only();
    }
    let service = service_fn(move |req| handle(ctx.clone(), req));
    let conn = builder.serve_connection(io, service);
    tokio::select! {
        _ = conn => None,
        Some(abort) = abort_rx.recv() => Some(abort),
        _ = shutdown.wait_for(|&stop| stop) => None,
    }
}

type RespBody = BoxBody<Bytes, Infallible>;

async fn handle(
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<http::Response<RespBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
        // The client vanished mid-body: nothing to record or answer.
        return Ok(empty_response(StatusCode::BAD_REQUEST));
    };
    let key = parts
        .headers
        .get(KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| parts.uri.path().to_string());
    let observed = Observed {
        key,
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".to_string()),
        headers: parts.headers,
        body,
        at: Instant::now(),
        client_cert_cn: ctx.client_cert_cn.clone(),
        connection_id: ctx.conn_id,
    };
    lock(&ctx.state.observed).push(observed.clone());

    let mut action = ctx.state.next_action(&observed.key);
    while let Action::Delay(delay, inner) = action {
        tokio::time::sleep(delay).await;
        action = *inner;
    }
    let response = match action {
        Action::Respond {
            status,
            headers,
            body,
        } => build(status, &headers, Full::new(body).boxed()),
        Action::Echo { status, headers } => {
            let mut all = vec![(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
            all.extend(headers);
            let body = Bytes::from(echo_json(&observed).to_string());
            build(status, &all, Full::new(body).boxed())
        }
        Action::Stream { total_bytes, chunk } => {
            let headers = [(CONTENT_LENGTH, HeaderValue::from(total_bytes))];
            build(200, &headers, Generated::new(total_bytes, chunk).boxed())
        }
        Action::Events { headers, chunks } => build(200, &headers, Scheduled::new(chunks).boxed()),
        Action::ResetAfterHeaders => {
            let headers = [(CONTENT_LENGTH, HeaderValue::from(TRUNCATED_LENGTH))];
            let abort = ctx.abort.clone();
            tokio::spawn(async move {
                tokio::time::sleep(PARTIAL_BODY_GRACE).await;
                let _ = abort.send(Abort::Close);
            });
            let partial = Bytes::from(vec![b'x'; TRUNCATED_SENT]);
            build(200, &headers, Truncated(Some(partial)).boxed())
        }
        Action::ResetBeforeResponse => abort_and_wait(&ctx, Abort::Reset).await,
        Action::CloseWithoutResponse => abort_and_wait(&ctx, Abort::Close).await,
        Action::Hang => std::future::pending().await,
        Action::Delay(..) => unreachable!("delays are unwrapped above"),
    };
    Ok(response)
}

/// Asks the connection task to drop the connection, then never answers.
async fn abort_and_wait(ctx: &ConnCtx, how: Abort) -> http::Response<RespBody> {
    let _ = ctx.abort.send(how);
    std::future::pending().await
}

fn build(
    status: u16,
    headers: &[(HeaderName, HeaderValue)],
    body: RespBody,
) -> http::Response<RespBody> {
    let mut response = http::Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status)
        .unwrap_or_else(|_| panic!("invalid status code {status} in a scripted action"));
    for (name, value) in headers {
        response.headers_mut().append(name.clone(), value.clone());
    }
    response
}

fn empty_response(status: StatusCode) -> http::Response<RespBody> {
    let mut response = http::Response::new(Full::new(Bytes::new()).boxed());
    *response.status_mut() = status;
    response
}

fn echo_json(o: &Observed) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in o.headers.keys() {
        let joined = o
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        headers.insert(name.as_str().to_string(), joined.into());
    }
    serde_json::json!({
        "method": o.method,
        "path_and_query": o.path_and_query,
        "headers": headers,
        "body": o.text(),
        "key": o.key,
        "connection_id": o.connection_id,
        "client_cert_cn": o.client_cert_cn,
    })
}

/// A body of `remaining` bytes made one chunk at a time, so size costs no memory.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Generated {
    fn new(total: u64, chunk: usize) -> Self {
        let chunk = if chunk == 0 { 16 * 1024 } else { chunk };
        Generated {
            remaining: total,
            chunk: Bytes::from(vec![b'x'; chunk]),
        }
    }
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = this.remaining.min(this.chunk.len() as u64) as usize;
        this.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(this.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// Chunks sent in order, each after its own delay.
struct Scheduled {
    chunks: VecDeque<(Duration, Bytes)>,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Scheduled {
    fn new(chunks: Vec<(Duration, Bytes)>) -> Self {
        Scheduled {
            chunks: chunks.into(),
            wait: None,
        }
    }
}

impl Body for Scheduled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let Some((delay, _)) = this.chunks.front() else {
            return Poll::Ready(None);
        };
        let wait = this
            .wait
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(*delay)));
        if wait.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.wait = None;
        let (_, chunk) = this.chunks.pop_front().expect("a chunk is due");
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Yields one chunk and then nothing ever again; the connection is cut underneath it.
struct Truncated(Option<Bytes>);

impl Body for Truncated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut().0.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{self, https_client_config, send_https};
    use crate::pki::TestCa;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes a raw request and reads until the server closes: (bytes, error that ended it).
    async fn raw_exchange(addr: SocketAddr, request: &str) -> (Vec<u8>, Option<std::io::Error>) {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
                Err(_) => panic!("server neither answered nor closed"),
                Ok(Ok(0)) => return (got, None),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => return (got, Some(e)),
            }
        }
    }

    const GET: &str = "GET /fault HTTP/1.1\r\nhost: upstream\r\n\r\n";

    /// An HTTP/1.1 connection reused for several requests, like a pooled one.
    async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    fn get(path: &str) -> Request<Full<Bytes>> {
        Request::get(path)
            .header("host", "upstream")
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    #[tokio::test]
    async fn default_action_and_keep_alive() {
        let up = Upstream::builder().start().await;
        assert_eq!(up.url(), format!("http://127.0.0.1:{}", up.addr().port()));
        let mut conn = connection(up.addr()).await;
        for _ in 0..3 {
            let resp = conn.send_request(get("/a?x=1")).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
        }
        let seen = up.requests();
        assert_eq!(seen.len(), 3);
        assert!(seen
            .iter()
            .all(|o| o.connection_id == seen[0].connection_id));
        assert_eq!(seen[0].key, "/a");
        assert_eq!(seen[0].path_and_query, "/a?x=1");
        assert_eq!(up.connection_count(), 1);
    }

    #[tokio::test]
    async fn scripts_are_consumed_in_order_per_key() {
        let up = Upstream::builder()
            .default_action(Action::respond(204, ""))
            .start()
            .await;
        up.script(
            "/pay",
            vec![
                Action::respond(503, "busy").with_header("retry-after", "1"),
                Action::json(201, serde_json::json!({"id": 7})),
            ],
        );
        up.script("by-header", vec![Action::respond(429, "slow down")]);
        let base = up.url();

        let first = client::post(&format!("{base}/pay"), "a").await.unwrap();
        assert_eq!((first.status, first.text().as_str()), (503, "busy"));
        assert_eq!(first.header("retry-after"), Some("1"));
        let keyed = client::send(
            Request::get(format!("{base}/pay"))
                .header(KEY_HEADER, "by-header")
                .body(Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(keyed.status, 429, "the header key wins over the path");
        let second = client::post(&format!("{base}/pay"), "b").await.unwrap();
        assert_eq!(second.status, 201);
        assert_eq!(second.json()["id"], 7);
        let third = client::get(&format!("{base}/pay")).await.unwrap();
        assert_eq!(third.status, 204, "default once the script is used up");

        let pays = up.requests_for("/pay");
        assert_eq!(pays.len(), 3);
        assert_eq!(pays[0].body, "a");
        assert_eq!(pays[1].text(), "b");
        assert_eq!(up.requests_for("by-header").len(), 1);
        assert_eq!(up.count(), 4);
        up.clear();
        assert_eq!(up.count(), 0);
    }

    #[tokio::test]
    async fn echo_reports_the_request() {
        let up = Upstream::builder()
            .default_action(Action::echo())
            .start()
            .await;
        let req = Request::post(format!("{}/v1/charges?amount=5", up.url()))
            .header("authorization", "Bearer sk_test")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .body("payload")
            .unwrap();
        let resp = client::send(req).await.unwrap();
        assert_eq!(resp.status, 200);
        let echo = resp.json();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["path_and_query"], "/v1/charges?amount=5");
        assert_eq!(echo["headers"]["authorization"], "Bearer sk_test");
        assert_eq!(echo["headers"]["x-multi"], "one, two");
        assert_eq!(echo["body"], "payload");
        assert_eq!(echo["client_cert_cn"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn mtls_requires_a_client_certificate() {
        let ca = TestCa::new("upstream ca");
        let up = Upstream::builder()
            .tls(ca.localhost_cert())
            .require_client_cert(&ca.cert_pem)
            .default_action(Action::echo())
            .start()
            .await;
        assert!(up.url().starts_with("https://localhost:"));

        let anonymous = Arc::new(https_client_config(&ca.cert_pem, None));
        let req = || {
            Request::get(format!("{}/me", up.url()))
                .body(Bytes::new())
                .unwrap()
        };
        let refused = send_https(anonymous, req()).await;
        assert!(
            refused.is_err(),
            "served without a client cert: {refused:?}"
        );
        assert_eq!(up.count(), 0);
        assert_eq!(up.handshake_failures(), 1);

        let other_ca = TestCa::new("someone else");
        let stranger = other_ca.client_cert("stranger");
        let untrusted = Arc::new(https_client_config(&ca.cert_pem, Some(&stranger)));
        assert!(send_https(untrusted, req()).await.is_err());

        let pair = ca.client_cert("billing");
        let trusted = Arc::new(https_client_config(&ca.cert_pem, Some(&pair)));
        let resp = send_https(trusted, req()).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json()["client_cert_cn"], "billing");
        assert_eq!(up.requests()[0].client_cert_cn.as_deref(), Some("billing"));
    }

    #[tokio::test]
    async fn https_also_speaks_h2_and_by_ip() {
        let ca = TestCa::new("ca");
        let up = Upstream::builder().tls(ca.localhost_cert()).start().await;
        // By IP: the certificate carries an IP SAN.
        let config = Arc::new(https_client_config(&ca.cert_pem, None));
        let url = format!("https://127.0.0.1:{}/ip", up.addr().port());
        let resp = send_https(config, Request::get(url).body(Bytes::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, 200);

        let mut h2_config = https_client_config(&ca.cert_pem, None);
        h2_config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(up.addr()).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(h2_config))
            .connect(ServerNameStatic::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get(format!("{}/h2", up.url()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(up.requests_for("/h2").len(), 1);
    }

    type ServerNameStatic = rustls_pki_types::ServerName<'static>;

    #[tokio::test]
    async fn tls12_only_and_http1_only_restrict_the_handshake() {
        let ca = TestCa::new("ca");
        let up = Upstream::builder()
            .tls(ca.localhost_cert())
            .tls12_only()
            .http1_only()
            .start()
            .await;
        let addr = up.addr();
        let connect = |config: rustls::ClientConfig| async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(ServerNameStatic::try_from("localhost").unwrap(), tcp)
                .await
        };
        let tls = connect(https_client_config(&ca.cert_pem, None))
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));

        let tls13 = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates({
                let mut roots = RootCertStore::empty();
                roots.add(ca.cert_der()).unwrap();
                roots
            })
            .with_no_client_auth();
        assert!(connect(tls13).await.is_err());

        let mut h2 = https_client_config(&ca.cert_pem, None);
        h2.alpn_protocols = vec![b"h2".to_vec()];
        assert!(connect(h2).await.is_err(), "h2 must not be negotiated");
    }

    #[tokio::test]
    async fn reset_before_response_sends_nothing_and_resets() {
        let up = Upstream::builder()
            .default_action(Action::ResetBeforeResponse)
            .start()
            .await;
        let (bytes, err) = raw_exchange(up.addr(), GET).await;
        assert!(
            bytes.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        let err = err.expect("a reset, not a clean close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert_eq!(up.count(), 1, "the request is recorded before the fault");
    }

    #[tokio::test]
    async fn close_without_response_is_a_clean_eof() {
        let up = Upstream::builder()
            .default_action(Action::CloseWithoutResponse)
            .start()
            .await;
        let (bytes, err) = raw_exchange(up.addr(), GET).await;
        assert!(
            bytes.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(err.is_none(), "expected EOF, got {err:?}");
        let via_hyper = client::get(&format!("{}/x", up.url())).await;
        assert!(via_hyper.is_err());
    }

    #[tokio::test]
    async fn reset_after_headers_truncates_the_body() {
        let up = Upstream::builder()
            .default_action(Action::ResetAfterHeaders)
            .start()
            .await;
        let (bytes, _) = raw_exchange(up.addr(), GET).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains(&format!("content-length: {TRUNCATED_LENGTH}")),
            "{text}"
        );
        let head_end = text.find("\r\n\r\n").unwrap() + 4;
        assert_eq!(bytes.len() - head_end, TRUNCATED_SENT);

        let mut conn = connection(up.addr()).await;
        let resp = conn.send_request(get("/trunc")).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.into_body().collect().await.is_err());
    }

    #[tokio::test]
    async fn stream_sends_a_large_generated_body() {
        let total = 5 * 1024 * 1024 + 3;
        let up = Upstream::builder()
            .default_action(Action::stream(total, 64 * 1024))
            .start()
            .await;
        let mut conn = connection(up.addr()).await;
        let resp = conn.send_request(get("/big")).await.unwrap();
        assert_eq!(resp.headers()[CONTENT_LENGTH], total.to_string().as_str());
        let mut body = resp.into_body();
        let mut received = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received += data.len() as u64;
            }
        }
        assert_eq!(received, total);
        // The connection stays usable afterwards.
        let again = conn.send_request(get("/big")).await.unwrap();
        assert_eq!(again.status(), 200);
    }

    #[tokio::test]
    async fn delay_holds_the_headers() {
        let up = Upstream::builder().start().await;
        up.script(
            "/slow",
            vec![Action::respond(200, "late")
                .with_header("x-a", "1")
                .delayed(Duration::from_millis(300))],
        );
        up.script(
            "/slow2",
            vec![
                Action::delay(Duration::from_millis(50), Box::new(Action::echo()))
                    .with_header("x-b", "2"),
            ],
        );
        let started = Instant::now();
        let resp = client::get(&format!("{}/slow", up.url())).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(
            (resp.text().as_str(), resp.header("x-a")),
            ("late", Some("1"))
        );
        let resp = client::get(&format!("{}/slow2", up.url())).await.unwrap();
        assert_eq!(resp.header("x-b"), Some("2"));
    }

    #[tokio::test]
    async fn stop_refuses_new_connections_and_cuts_open_ones() {
        let up = Upstream::builder()
            .default_action(Action::Hang)
            .start()
            .await;
        let url = up.url();
        let hanging = tokio::spawn(async move { client::get(&format!("{url}/hang")).await });
        assert!(up.wait_for_count(1, Duration::from_secs(5)).await);
        up.stop();
        assert!(
            hanging.await.unwrap().is_err(),
            "open connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(up.addr()).await.is_err());

        // The same port can serve again, as a recovered upstream would.
        let port = up.addr().port();
        drop(up);
        let back = Upstream::builder().port(port).start().await;
        assert_eq!(client::get(&back.url()).await.unwrap().status, 200);
    }
}
