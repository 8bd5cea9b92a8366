//! The app-facing side: listeners, routing and the request path.
//!
//! - `listener`, `connections`: accepting the app's connections, with their limits.
//! - routing (here): a request on an integration's own listener, or on the HTTP proxy
//!   listener by the host it names.
//! - `request_path`: the steps of one request, in order: `prepare`, `attempt` (with the
//!   `Retrying` state machine of `resilience::retry`), `respond`.
//! - `headers`: header hygiene; `errors`: the one place errors become responses.

pub mod attempt;
pub mod cached;
pub mod connections;
pub mod errors;
pub mod failover;
pub mod headers;
pub mod listener;
pub mod prepare;
pub mod request_path;
pub mod respond;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use self::errors::SidecarError;
use crate::{
    body::Body,
    integration::{Integration, PathOrigin, Snapshot},
    telemetry::{trail::Trail, Telemetry},
};

/// The live configuration; swapped whole on reload, read lock-free per request.
pub type Live = Arc<ArcSwap<Snapshot>>;

/// Why a request could not be routed to an integration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Reloads keep the set of integrations fixed, so this only happens mid-shutdown.
    #[error("integration is not loaded")]
    NotLoaded,
    #[error(
        "CONNECT tunnels are refused: use http://HOST/... through this proxy and the \
         sidecar will originate TLS and add credentials"
    )]
    Connect,
    #[error("proxy requests must name a host (absolute-form URI or Host header)")]
    NoHost,
    #[error("no integration of this pod names host {0:?}")]
    UnknownHost(String),
}

/// A request on integration `name`'s own listener.
pub async fn serve_integration(
    live: &Live,
    telemetry: &Telemetry,
    name: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let trail = telemetry.begin(req.method(), req.uri().path(), req.headers());
    let integration = live.load().by_name(name).cloned();
    match integration {
        Some(i) => request_path::serve(i, req, PathOrigin::Relative, telemetry, trail).await,
        None => refuse(telemetry, trail, name, RouteError::NotLoaded),
    }
}

/// A request on the HTTP proxy listener: routed by the host it names.
pub async fn serve_proxy(
    live: &Live,
    telemetry: &Telemetry,
    req: Request<Incoming>,
) -> Response<Body> {
    let trail = telemetry.begin(req.method(), req.uri().path(), req.headers());
    match route(live, &req) {
        Ok(i) => request_path::serve(i, req, PathOrigin::Absolute, telemetry, trail).await,
        Err(e) => refuse(telemetry, trail, "", e),
    }
}

/// The integration a proxy request names by its host.
fn route(live: &Live, req: &Request<Incoming>) -> Result<Arc<Integration>, RouteError> {
    if req.method() == http::Method::CONNECT {
        return Err(RouteError::Connect);
    }
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<http::uri::Authority>().ok())
                .map(|a| a.host().to_string())
        })
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
        .ok_or(RouteError::NoHost)?;
    let integration = live.load().by_host(&host).cloned();
    integration.ok_or(RouteError::UnknownHost(host))
}

/// The answer to a request no integration takes, reported like any other.
fn refuse(
    telemetry: &Telemetry,
    trail: Option<Trail>,
    integration: &str,
    e: RouteError,
) -> Response<Body> {
    let e = SidecarError::from(e);
    let resp = errors::respond(&e, integration);
    telemetry.finish(trail, integration, resp.status(), Some(e.code.as_str()));
    resp
}
