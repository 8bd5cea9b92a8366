//! Hands a verified request to the app on loopback, and the app's answer back to the third
//! party (its status and body unchanged, so the provider's own retry logic keeps working).

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

use crate::{
    body::{self, Body},
    proxy::headers::strip_hop_by_hop,
};

/// The header the app can trust: the sidecar sets it (overwriting one the caller sent).
pub const VERIFIED_HEADER: &str = "x-attache-webhook-verified";

/// How long the app may take to send its response head; past it the caller gets 502
/// `webhook_forward` and the provider retries later.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// A pooled plain-HTTP client to the app.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Full<Bytes>>,
    target: Uri,
}

/// Why the app's answer did not come.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the app at {target} did not answer: {reason}")]
    Failed { target: String, reason: String },
    #[error("the app at {target} sent no response head within {FORWARD_TIMEOUT:?}")]
    Timeout { target: String },
}

impl Forwarder {
    pub fn new(target: Uri) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Self { client, target }
    }

    /// Sends the request (`head` as received, `body` its raw bytes) to the app.
    pub async fn forward(
        &self,
        mut head: http::request::Parts,
        body: Bytes,
        provider: &'static str,
    ) -> Result<Response<Body>, ForwardError> {
        strip_hop_by_hop(&mut head.headers);
        head.uri = self.uri_for(head.uri.query());
        if let Some(authority) = self.target.authority() {
            if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
                head.headers.insert(header::HOST, v);
            }
        }
        head.headers
            .insert(VERIFIED_HEADER, HeaderValue::from_static(provider));
        head.version = http::Version::HTTP_11;
        let req = Request::from_parts(head, Full::new(body));
        let target = self.target.to_string();
        let resp = tokio::time::timeout(FORWARD_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| ForwardError::Timeout {
                target: target.clone(),
            })?
            .map_err(|e| ForwardError::Failed {
                target,
                reason: error_chain(&e),
            })?;
        let (mut parts, incoming) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body::boxed(incoming)))
    }

    /// `forwardTo`, with the caller's query when `forwardTo` has none (Twilio's signed
    /// `bodySHA256`, a provider's own parameters).
    fn uri_for(&self, query: Option<&str>) -> Uri {
        let path = self.target.path();
        let pq = match (self.target.query(), query) {
            (Some(q), _) => format!("{path}?{q}"),
            (None, Some(q)) => format!("{path}?{q}"),
            (None, None) => path.to_string(),
        };
        let mut parts = self.target.clone().into_parts();
        parts.path_and_query = pq.parse().ok();
        Uri::from_parts(parts).unwrap_or_else(|_| self.target.clone())
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
