//! Client helpers playing the application: plain HTTP to the sidecar's localhost listeners,
//! absolute-form requests to its proxy listener, and direct HTTPS for upstream checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::pki::{certs_from_pem, init_crypto, provider, CertPair};

/// Bounds every helper request so a hung sidecar fails the test instead of stalling it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A fully read response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body text, which is what a failing test needs.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response (status {}) is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    async fn read(response: http::Response<Incoming>) -> anyhow::Result<Response> {
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .context("reading response body")?
            .to_bytes();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// A pooling HTTP client, for tests that care about connection reuse from the app side.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpClient {
    pub fn new() -> HttpClient {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Replaces [`DEFAULT_TIMEOUT`] for the whole exchange, body included.
    pub fn with_timeout(mut self, timeout: Duration) -> HttpClient {
        self.timeout = timeout;
        self
    }

    pub async fn send<B: Into<Bytes>>(&self, req: Request<B>) -> anyhow::Result<Response> {
        let (parts, body) = req.into_parts();
        let req = Request::from_parts(parts, Full::new(body.into()));
        let uri = req.uri().clone();
        let exchange = async {
            let response = self
                .inner
                .request(req)
                .await
                .map_err(|e| anyhow!("{}", error_chain(&e)))?;
            Response::read(response).await
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| anyhow!("no response from {uri} within {:?}", self.timeout))?
            .with_context(|| format!("request to {uri}"))
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Response> {
        self.send(Request::get(url).body(Bytes::new())?).await
    }
}

/// Sends one request over plain HTTP on a fresh connection.
pub async fn send<B: Into<Bytes>>(req: Request<B>) -> anyhow::Result<Response> {
    HttpClient::new().send(req).await
}

/// GET `url` over plain HTTP.
pub async fn get(url: &str) -> anyhow::Result<Response> {
    send(Request::get(url).body(Bytes::new())?).await
}

/// POST `body` to `url` over plain HTTP.
pub async fn post(url: &str, body: impl Into<Bytes>) -> anyhow::Result<Response> {
    send(Request::post(url).body(body.into())?).await
}

/// POST a JSON document to `url` over plain HTTP.
pub async fn post_json(url: &str, value: &serde_json::Value) -> anyhow::Result<Response> {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(value.to_string())?;
    send(req).await
}

/// Sends `req` (absolute URI, e.g. `https://api.example/x`) to an HTTP forward proxy, as
/// an app using `HTTP_PROXY` would.
pub async fn send_via_proxy<B: Into<Bytes>>(
    proxy: SocketAddr,
    req: Request<B>,
) -> anyhow::Result<Response> {
    let uri = req.uri().clone();
    let exchange = async {
        let tcp = TcpStream::connect(proxy)
            .await
            .with_context(|| format!("connect to proxy {proxy}"))?;
        send_on(tcp, req, false).await
    };
    tokio::time::timeout(DEFAULT_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no response from proxy {proxy} for {uri}"))?
}

/// A rustls client config trusting `ca_pem` (and presenting `client` if given), HTTP/1.1.
pub fn https_client_config(ca_pem: &str, client: Option<&CertPair>) -> rustls::ClientConfig {
    init_crypto();
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem) {
        roots.add(cert).expect("CA is a valid certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(pair) => builder
            .with_client_auth_cert(pair.cert_chain(), pair.private_key())
            .expect("client certificate and key match"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Sends one request over HTTPS/1.1 on a fresh connection, with `config`'s trust and identity.
pub async fn send_https<B: Into<Bytes>>(
    config: Arc<rustls::ClientConfig>,
    req: Request<B>,
) -> anyhow::Result<Response> {
    let uri = req.uri().clone();
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("{uri} has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let exchange = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .with_context(|| format!("connect to {host}:{port}"))?;
        let name = ServerName::try_from(host.clone())?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host}:{port}"))?;
        send_on(tls, req, true).await
    };
    tokio::time::timeout(DEFAULT_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("no response from {uri} within {DEFAULT_TIMEOUT:?}"))?
}

/// One HTTP/1.1 exchange on an established stream; `origin_form` strips scheme and authority
/// from the request target (direct requests), otherwise the URI goes out as given (proxies).
async fn send_on<S, B>(io: S, req: Request<B>, origin_form: bool) -> anyhow::Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Into<Bytes>,
{
    let (mut parts, body) = req.into_parts();
    if !parts.headers.contains_key(HOST) {
        if let Some(authority) = parts.uri.authority() {
            parts
                .headers
                .insert(HOST, HeaderValue::from_str(authority.as_str())?);
        }
    }
    if origin_form {
        let pq = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        parts.uri = pq.parse::<Uri>()?;
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(conn);
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body.into())))
        .await
        .map_err(|e| anyhow!("{}", error_chain(&e)))?;
    Response::read(response).await
}

/// hyper's top-level errors are terse; the causes say what actually happened.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{Action, Upstream};

    #[tokio::test]
    async fn proxy_requests_go_out_in_absolute_form() {
        let up = Upstream::builder()
            .default_action(Action::echo())
            .start()
            .await;
        let req = Request::get("http://api.example.test/v1/things?q=1")
            .body(Bytes::new())
            .unwrap();
        let resp = send_via_proxy(up.addr(), req).await.unwrap();
        assert_eq!(resp.status, 200);
        let echo = resp.json();
        assert_eq!(echo["headers"]["host"], "api.example.test");
        assert_eq!(echo["path_and_query"], "/v1/things?q=1");
    }

    #[tokio::test]
    async fn pooled_client_reuses_its_connection() {
        let up = Upstream::builder().start().await;
        let client = HttpClient::new();
        for _ in 0..3 {
            assert_eq!(client.get(&up.url()).await.unwrap().status, 200);
        }
        assert_eq!(up.connection_count(), 1);
    }

    #[tokio::test]
    async fn timeouts_and_errors_name_the_url() {
        let up = Upstream::builder()
            .default_action(Action::Hang)
            .start()
            .await;
        let client = HttpClient::new().with_timeout(Duration::from_millis(100));
        let err = client.get(&up.url()).await.unwrap_err();
        assert!(format!("{err:#}").contains(&up.url()), "{err:#}");

        let port = crate::process::free_port();
        let err = get(&format!("http://127.0.0.1:{port}/")).await.unwrap_err();
        assert!(format!("{err:#}").contains("127.0.0.1"), "{err:#}");
    }

    #[test]
    fn response_helpers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-attache-error", HeaderValue::from_static("timeout"));
        let resp = Response {
            status: 504,
            headers,
            body: Bytes::from_static(br#"{"error":"timeout"}"#),
        };
        assert_eq!(resp.json()["error"], "timeout");
        assert_eq!(resp.header("x-attache-error"), Some("timeout"));
        assert!(resp.text().contains("timeout"));
    }
}
