//! Everything before the first attempt: refusals (what the sidecar cannot forward faithfully,
//! or must not forward with credentials attached), the open circuit, the bulkhead, then the
//! request as it goes upstream (hop-by-hop strip, URI join, `Host`, idempotency key,
//! credentials) and its body in the replay buffer.

use std::{sync::Arc, time::Duration};

use http::{header, HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body::Body as HttpBody;
use hyper::body::Incoming;

use super::{headers::strip_hop_by_hop, respond::Held};
use crate::{
    body::{self, Body, BoxError},
    credentials::ApplyError,
    integration::{Integration, PathOrigin},
    resilience::{bulkhead::Full, replay::RequestBody, retry},
    telemetry::boundary,
};

/// Request bodies up to this size are read and dropped when the sidecar answers before
/// reading them, so the app's keep-alive connection survives a fail-fast answer.
const DRAIN_LIMIT: u64 = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

/// The request as it goes upstream, minus the body: rebuilt for each attempt.
pub struct Prepared {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    /// The request may be sent again after it reached the upstream (idempotent or keyed).
    pub resend_safe: bool,
}

/// Why a request was refused before any attempt.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Check(#[from] CheckError),
    /// The circuit is open: fail fast, before taking a bulkhead slot; half-opens in this long.
    #[error("the circuit breaker is open after repeated upstream failures")]
    CircuitOpen(Duration),
    #[error("{} requests already in flight (concurrency.maxInFlight)", .0.max_in_flight)]
    Overloaded(Full),
    #[error("request path: {0}")]
    Path(http::Error),
    #[error(transparent)]
    Credentials(#[from] ApplyError),
}

/// The request body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the request body: {0}")]
pub struct BodyError(BoxError);

/// What the sidecar refuses to forward (`bad_request`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(
        "CONNECT tunnels are not supported: send plain http:// requests; the sidecar \
         originates TLS itself so that it can add credentials"
    )]
    Connect,
    /// The upstream would echo the request back, injected credentials included.
    #[error("TRACE is refused: the upstream would echo the injected credentials")]
    Trace,
    #[error("protocol upgrades (WebSocket, h2c) are not supported through the sidecar")]
    Upgrade,
    /// RFC 9112 §3.2: an HTTP/1.1 request has exactly one valid `Host`; none has two.
    #[error("the request has {0} (RFC 9112 requires exactly one)")]
    Host(&'static str),
    #[error(
        "the request path has a dot-segment (`.` or `..`, possibly percent-encoded): send \
         the normalised path; requests never leave the integration's base path"
    )]
    DotSegment,
}

// === impl Prepared ===

impl Prepared {
    /// The request for one attempt to the primary endpoint.
    pub fn request(&self, body: Body) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// The request for one attempt to endpoint `endpoint` (0: the primary; then
    /// `upstream.failover` in order): same method, path, headers and credentials, the
    /// endpoint's URL and `Host`.
    pub fn request_to(&self, ig: &Integration, endpoint: usize, body: Body) -> Request<Body> {
        let mut req = self.request(body);
        if let Some((uri, host)) = ig.endpoint_uri(endpoint, &self.uri) {
            *req.uri_mut() = uri;
            req.headers_mut().insert(header::HOST, host.clone());
        }
        req
    }
}

/// Checks the request, takes its bulkhead slot and prepares it for the upstream. `held`
/// receives the request's in-flight count and is returned with the slot added.
pub async fn request(
    ig: &Arc<Integration>,
    mut parts: http::request::Parts,
    origin: PathOrigin,
    held: Held,
) -> Result<(Prepared, Held), PrepareError> {
    // A request the sidecar will not forward is refused before it takes any slot.
    check(&parts)?;
    let p = &ig.policies;
    if let Some(wait) = p.all_open_for() {
        return Err(PrepareError::CircuitOpen(wait));
    }
    let held = held.with_permit(
        p.bulkhead
            .acquire()
            .await
            .map_err(PrepareError::Overloaded)?,
    );

    strip_hop_by_hop(&mut parts.headers);
    boundary::strip(
        &mut parts.headers,
        ig.config.telemetry.propagate_trace_context,
    );
    parts.uri = ig
        .upstream_uri(parts.uri.path_and_query(), origin)
        .map_err(PrepareError::Path)?;
    parts.headers.insert(header::HOST, ig.host_header.clone());
    let has_key = idempotency_key(ig, &mut parts);
    let resend_safe = retry::safe_to_resend(&parts.method, has_key);
    ig.credentials.apply(&mut parts).await?;
    let prepared = Prepared {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        resend_safe,
    };
    Ok((prepared, held))
}

/// Whether the request carries the idempotency-key header, after adding a fresh key to a POST
/// or PATCH without one when `idempotencyKey.generate` is on (kept across attempts).
fn idempotency_key(ig: &Integration, parts: &mut http::request::Parts) -> bool {
    if parts.headers.contains_key(&ig.idempotency_header) {
        return true;
    }
    let generate = ig.config.retry.generate_idempotency_key
        && (parts.method == Method::POST || parts.method == Method::PATCH);
    if generate {
        let key = uuid::Uuid::new_v4().hyphenated().to_string();
        if let Ok(v) = HeaderValue::try_from(key) {
            parts.headers.insert(ig.idempotency_header.clone(), v);
            return true;
        }
    }
    false
}

/// The request body, kept for replay when it fits `replayBuffer` (else streamed once).
pub async fn body(ig: &Integration, incoming: Incoming) -> Result<RequestBody, BodyError> {
    RequestBody::prepare(body::boxed(incoming), ig.config.retry.replay_buffer_bytes)
        .await
        .map_err(BodyError)
}

/// Reads what is left of a small request body the sidecar answers without forwarding. Without
/// it hyper closes the connection after the answer without saying so, and the app's next
/// request on it fails (a POST answered `circuit_open` looked like a lost request to the app).
/// Returns false when the body was too large or too slow to drain: the answer must then say
/// `Connection: close`.
pub async fn drain(incoming: Incoming) -> bool {
    use http_body_util::BodyExt;
    if incoming.is_end_stream() {
        return true;
    }
    let small = incoming
        .size_hint()
        .upper()
        .is_some_and(|n| n <= DRAIN_LIMIT);
    small
        && matches!(
            tokio::time::timeout(DRAIN_TIME, incoming.collect()).await,
            Ok(Ok(_))
        )
}

/// Refuses what the sidecar cannot forward faithfully, or must not forward with the
/// integration's credentials attached.
pub fn check(parts: &http::request::Parts) -> Result<(), CheckError> {
    if parts.method == Method::CONNECT {
        return Err(CheckError::Connect);
    }
    if parts.method == Method::TRACE {
        return Err(CheckError::Trace);
    }
    if parts.headers.contains_key(header::UPGRADE) {
        return Err(CheckError::Upgrade);
    }
    check_host(parts)?;
    if has_dot_segment(parts.uri.path()) {
        return Err(CheckError::DotSegment);
    }
    Ok(())
}

/// RFC 9112 §3.2: an HTTP/1.1 request has exactly one valid `Host`; none has two.
fn check_host(parts: &http::request::Parts) -> Result<(), CheckError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    let problem = if hosts.next().is_some() {
        Some("more than one Host header")
    } else {
        match first {
            None if parts.version == Version::HTTP_11 => Some("no Host header"),
            None => None,
            Some(v) => {
                let valid = v
                    .to_str()
                    .ok()
                    .is_some_and(|h| h.is_empty() || h.parse::<http::uri::Authority>().is_ok());
                (!valid).then_some("an invalid Host header")
            }
        }
    };
    match problem {
        Some(p) => Err(CheckError::Host(p)),
        None => Ok(()),
    }
}

/// Whether a path has a `.` or `..` segment, also percent-encoded (`%2e%2e`) or with
/// parameters (`..;x`, which some servers read as `..`): such a path could climb out of the
/// integration's base path on the upstream.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or_default();
        let mut dots = 0;
        let mut rest = name.as_bytes();
        while !rest.is_empty() {
            match rest {
                [b'.', tail @ ..] => rest = tail,
                [b'%', b'2', b'e' | b'E', tail @ ..] => rest = tail,
                _ => return false,
            }
            dots += 1;
        }
        dots == 1 || dots == 2
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_found_in_every_spelling() {
        for p in [
            "/..",
            "/../x",
            "/a/../b",
            "/a/./b",
            "/.",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/%2e/x",
            "/..;/x",
            "/..;jsessionid=1/x",
            "/a/..",
            "..",
            "/a/b/../",
        ] {
            assert!(has_dot_segment(p), "{p:?}");
        }
        for p in [
            "/",
            "",
            "/a/b",
            "/.well-known/x",
            "/a..b",
            "/...",
            "/a/.../b",
            "/%2e%2e%2e",
            "/v1/charges",
            "/a.b/c",
            "/%2e%2ex",
            "/..x",
        ] {
            assert!(!has_dot_segment(p), "{p:?}");
        }
    }

    fn parts(method: Method, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut b = Request::builder()
            .method(method)
            .uri("/v1/x")
            .version(version);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let check = |m, v, h: &[&str]| check(&parts(m, v, h));
        assert_eq!(
            check(Method::GET, Version::HTTP_11, &["localhost:15001"]),
            Ok(())
        );
        assert_eq!(
            check(Method::GET, Version::HTTP_11, &[]),
            Err(CheckError::Host("no Host header"))
        );
        assert_eq!(
            check(Method::GET, Version::HTTP_11, &["a", "b"]),
            Err(CheckError::Host("more than one Host header"))
        );
        assert_eq!(
            check(Method::GET, Version::HTTP_11, &["bad host"]),
            Err(CheckError::Host("an invalid Host header"))
        );
        assert_eq!(check(Method::GET, Version::HTTP_10, &[]), Ok(()));
        assert_eq!(check(Method::GET, Version::HTTP_2, &[]), Ok(()));
        assert_eq!(
            check(Method::TRACE, Version::HTTP_11, &["localhost"]),
            Err(CheckError::Trace)
        );
        assert_eq!(
            check(Method::CONNECT, Version::HTTP_11, &["localhost"]),
            Err(CheckError::Connect)
        );
    }
}
