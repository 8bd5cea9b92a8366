//! Opens connections to the third party: DNS, TCP with a connect timeout, then TLS.
//!
//! A connector of our own (rather than hyper-rustls) because every failure here must come back
//! typed: a refused connection is `upstream_connect` and always safe to retry (nothing was
//! sent), a handshake failure is `upstream_tls`, and the SNI name can be overridden per
//! integration.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use hyper::Uri;
use hyper_util::rt::TokioIo;
use rustls::{client::ResolvesClientCert, ClientConfig};
use rustls_pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

/// Why no connection could be made. Nothing was sent to the upstream in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {authority} timed out after {timeout:?}")]
    Timeout {
        authority: String,
        timeout: Duration,
    },
    #[error("could not resolve {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("could not connect to {authority}: {source}")]
    Connect {
        authority: String,
        source: io::Error,
    },
    #[error("TLS handshake with {authority} failed: {source}")]
    Tls {
        authority: String,
        source: io::Error,
    },
    #[error("invalid upstream address {0}")]
    InvalidUri(String),
    #[error("refusing plain http to {0}: the integration does not allow insecure upstreams")]
    Insecure(String),
}

/// Connects to whatever host a request URI names, with the integration's TLS settings.
#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    /// One config for every connection (with the recording resolver in it): rustls resumes a
    /// TLS session only with the config, verifier and client-certificate resolver that made
    /// it, so a copy per connection would make every reconnect a full handshake.
    tls: Arc<ClientConfig>,
    connect_timeout: Duration,
    /// `(upstream host, SNI name)`: the override applies only to the upstream's own host, not
    /// to e.g. an OAuth2 token endpoint elsewhere.
    sni_override: Option<(String, ServerName<'static>)>,
    allow_plain_http: bool,
}

impl Connector {
    pub fn new(
        tls: Arc<ClientConfig>,
        connect_timeout: Duration,
        sni_override: Option<(String, ServerName<'static>)>,
        allow_plain_http: bool,
    ) -> Self {
        let mut cfg = (*tls).clone();
        cfg.client_auth_cert_resolver = Arc::new(RecordingResolver {
            inner: tls.client_auth_cert_resolver.clone(),
        });
        Self {
            inner: Arc::new(Inner {
                tls: Arc::new(cfg),
                connect_timeout,
                sni_override,
                allow_plain_http,
            }),
        }
    }

    /// Opens a connection to the scheme and authority of `uri` (its path is ignored).
    pub async fn connect(&self, uri: &Uri) -> Result<UpstreamConn, ConnectError> {
        self.inner.connect(uri).await
    }
}

impl Inner {
    async fn connect(&self, uri: &Uri) -> Result<UpstreamConn, ConnectError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.allow_plain_http => false,
            Some("http") => return Err(ConnectError::Insecure(uri.to_string())),
            _ => return Err(ConnectError::InvalidUri(uri.to_string())),
        };
        let host = uri
            .host()
            .ok_or_else(|| ConnectError::InvalidUri(uri.to_string()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = format!("{host}:{port}");
        let timeout = self.connect_timeout;
        let timed_out = || ConnectError::Timeout {
            authority: authority.clone(),
            timeout,
        };
        tokio::time::timeout(timeout, async {
            let tcp = tcp_connect(&host, port, &authority).await?;
            if !https {
                return Ok(UpstreamConn::plain(tcp));
            }
            let server_name = match &self.sni_override {
                Some((upstream_host, sni)) if *upstream_host == host => sni.clone(),
                _ => ServerName::try_from(host.clone())
                    .map_err(|_| ConnectError::InvalidUri(uri.to_string()))?,
            };
            // What this handshake asks for is recorded through a task-local (see
            // RecordingResolver): the config stays shared, so sessions resume.
            let failure = TlsFailure::default();
            let tcp = Counted {
                inner: tcp,
                failure: failure.clone(),
            };
            let connect = TlsConnector::from(self.tls.clone()).connect(server_name, tcp);
            let tls = HANDSHAKE
                .scope(failure.clone(), connect)
                .await
                .map_err(|source| ConnectError::Tls {
                    authority: authority.clone(),
                    source,
                })?;
            failure.handshake_done(tls.get_ref().1.protocol_version());
            Ok(UpstreamConn::tls(tls, failure))
        })
        .await
        .map_err(|_| timed_out())?
    }
}

async fn tcp_connect(host: &str, port: u16, authority: &str) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                // Requests are small and latency-bound; never wait for Nagle.
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(ConnectError::Connect {
        authority: authority.to_string(),
        source: last,
    })
}

/// Where a connection's TLS layer leaves the reason it failed after the handshake.
///
/// In TLS 1.3 a server refuses our certificate only after the handshake, with an alert on the
/// first read; by the time that surfaces as a request error, HTTP/2 has reduced it to text or
/// to "operation was canceled". The slot travels with the connection (see
/// [`UpstreamConn::tls_failure`]), so the pool can still tell a TLS refusal from a reset.
///
/// A server that refuses the certificate often closes or resets the connection before its
/// alert can be read (the client sees only a broken pipe). So the slot also records whether the
/// server asked for a client certificate during the handshake and whether anything arrived
/// since: a TLS 1.3 connection that dies in between was refused at the TLS layer. "Anything"
/// is any TLS record, not only response data: a server that accepted the certificate sends its
/// session tickets right after the handshake, so a connection reset after that (say, once the
/// request was written) is a reset, retried by the usual sent/never-sent rules. In TLS 1.2 the
/// certificate is judged inside the handshake, so a later break is never a refusal. (A TLS 1.3
/// server that sends no tickets and then resets is still read as a refusal.)
#[derive(Clone, Default, Debug)]
pub struct TlsFailure(Arc<TlsFailureState>);

#[derive(Default, Debug)]
struct TlsFailureState {
    alert: std::sync::OnceLock<String>,
    cert_requested: AtomicBool,
    cert_offered: AtomicBool,
    data_received: AtomicBool,
    /// TLS 1.3 was negotiated: only then is a client certificate judged after the handshake.
    tls13: AtomicBool,
    handshake_done: AtomicBool,
    /// Any TLS record arrived after the handshake (a session ticket, typically): the server
    /// went on talking after seeing our certificate, so it accepted it.
    records_after_handshake: AtomicBool,
}

impl TlsFailure {
    /// Why the connection failed at the TLS layer, if it did.
    pub fn reason(&self) -> Option<String> {
        let s = &self.0;
        if let Some(alert) = s.alert.get() {
            return Some(alert.clone());
        }
        // A connection that breaks after the server saw our certificate is a refusal only if
        // the server judged it after the handshake (TLS 1.3) and said nothing since; otherwise
        // it is a reset like any other (see `classify`).
        if s.cert_requested.load(Ordering::Acquire)
            && s.tls13.load(Ordering::Acquire)
            && !s.records_after_handshake.load(Ordering::Acquire)
            && !s.data_received.load(Ordering::Acquire)
        {
            return Some(if s.cert_offered.load(Ordering::Acquire) {
                "the upstream asked for a client certificate, then closed the connection: it \
                 probably rejected ours (expired, or not issued by a CA it trusts)"
                    .to_string()
            } else {
                "the upstream requires a client certificate and this integration has none \
                 (set spec.tls.clientCertificate)"
                    .to_string()
            });
        }
        None
    }

    fn record(&self, e: &io::Error) {
        // rustls reports its errors as InvalidData; TCP never does.
        if e.kind() == io::ErrorKind::InvalidData {
            let _ = self.0.alert.set(e.to_string());
        }
    }

    fn handshake_done(&self, version: Option<rustls::ProtocolVersion>) {
        let s = &self.0;
        s.tls13.store(
            version == Some(rustls::ProtocolVersion::TLSv1_3),
            Ordering::Release,
        );
        s.handshake_done.store(true, Ordering::Release);
    }

    fn raw_received(&self) {
        let s = &self.0;
        if s.handshake_done.load(Ordering::Acquire)
            && !s.records_after_handshake.load(Ordering::Relaxed)
        {
            s.records_after_handshake.store(true, Ordering::Release);
        }
    }

    fn received(&self) {
        if !self.0.data_received.load(Ordering::Relaxed) {
            self.0.data_received.store(true, Ordering::Release);
        }
    }
}

tokio::task_local! {
    /// The [`TlsFailure`] of the handshake being polled in this task.
    static HANDSHAKE: TlsFailure;
}

/// The integration's client-certificate resolver, noting in the current handshake's
/// [`TlsFailure`] that the server asked for a certificate and whether one was offered.
#[derive(Debug)]
struct RecordingResolver {
    inner: Arc<dyn ResolvesClientCert>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let chosen = self.inner.resolve(root_hint_subjects, sigschemes);
        let _ = HANDSHAKE.try_with(|f| {
            f.0.cert_offered.store(chosen.is_some(), Ordering::Release);
            f.0.cert_requested.store(true, Ordering::Release);
        });
        chosen
    }

    fn has_certs(&self) -> bool {
        self.inner.has_certs()
    }
}

/// The TCP stream under TLS, noting in its [`TlsFailure`] when bytes arrive after the
/// handshake (records rustls reads on its own, such as session tickets, included).
pub struct Counted {
    inner: TcpStream,
    failure: TlsFailure,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.failure.raw_received();
        }
        r
    }
}

impl AsyncWrite for Counted {
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

/// A connection to the upstream, plain or TLS, ready for a hyper client handshake.
pub struct UpstreamConn {
    io: TokioIo<Stream>,
    h2: bool,
    tls_failure: TlsFailure,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<Counted>>, TlsFailure),
}

impl UpstreamConn {
    fn plain(s: TcpStream) -> Self {
        Self {
            io: TokioIo::new(Stream::Plain(s)),
            h2: false,
            tls_failure: TlsFailure::default(),
        }
    }

    fn tls(s: TlsStream<Counted>, tls_failure: TlsFailure) -> Self {
        let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
        Self {
            io: TokioIo::new(Stream::Tls(Box::new(s), tls_failure.clone())),
            h2,
            tls_failure,
        }
    }

    /// True when TLS negotiated HTTP/2 through ALPN.
    pub fn is_h2(&self) -> bool {
        self.h2
    }

    /// This connection's TLS failure record (empty for plain connections).
    pub fn tls_failure(&self) -> &TlsFailure {
        &self.tls_failure
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s, failure) => {
                let before = buf.filled().len();
                let r = Pin::new(s.as_mut()).poll_read(cx, buf);
                match &r {
                    Poll::Ready(Err(e)) => failure.record(e),
                    Poll::Ready(Ok(())) if buf.filled().len() > before => failure.received(),
                    _ => {}
                }
                r
            }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s, failure) => {
                let r = Pin::new(s.as_mut()).poll_write(cx, buf);
                if let Poll::Ready(Err(e)) = &r {
                    failure.record(e);
                }
                r
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s, failure) => {
                let r = Pin::new(s.as_mut()).poll_write_vectored(cx, bufs);
                if let Poll::Ready(Err(e)) = &r {
                    failure.record(e);
                }
                r
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s, _) => s.is_write_vectored(),
        }
    }
}
