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
    integration::{PathOrigin, Snapshot},
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
pub async fn serve_integration(live: &Live, name: &str, req: Request<Incoming>) -> Response<Body> {
    let integration = live.load().by_name(name).cloned();
    match integration {
        Some(i) => request_path::serve(i, req, PathOrigin::Relative).await,
        None => errors::respond(&RouteError::NotLoaded.into(), name),
    }
}

/// A request on the HTTP proxy listener: routed by the host it names.
pub async fn serve_proxy(live: &Live, req: Request<Incoming>) -> Response<Body> {
    let refuse = |e: RouteError| errors::respond(&SidecarError::from(e), "");
    if req.method() == http::Method::CONNECT {
        return refuse(RouteError::Connect);
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
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
    let Some(host) = host else {
        return refuse(RouteError::NoHost);
    };
    let integration = live.load().by_host(&host).cloned();
    match integration {
        Some(i) => request_path::serve(i, req, PathOrigin::Absolute).await,
        None => refuse(RouteError::UnknownHost(host)),
    }
}
