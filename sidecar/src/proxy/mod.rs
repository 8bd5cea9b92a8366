//! The app-facing side: listeners, routing and the request path.

pub mod connections;
pub mod errors;
pub mod headers;
pub mod listener;
pub mod request_path;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use hyper::body::Incoming;

use self::errors::{ErrorCode, SidecarError};
use crate::{
    body::Body,
    integration::{PathOrigin, Snapshot},
};

/// The live configuration; swapped whole on reload, read lock-free per request.
pub type Live = Arc<ArcSwap<Snapshot>>;

/// A request on integration `name`'s own listener.
pub async fn serve_integration(live: &Live, name: &str, req: Request<Incoming>) -> Response<Body> {
    let integration = live.load().by_name(name).cloned();
    match integration {
        Some(i) => request_path::serve(i, req, PathOrigin::Relative).await,
        // Reloads keep the set of integrations fixed, so this only happens mid-shutdown.
        None => errors::respond(
            &SidecarError::new(ErrorCode::UnknownDestination, "integration is not loaded"),
            name,
        ),
    }
}

/// A request on the HTTP proxy listener: routed by the host it names.
pub async fn serve_proxy(live: &Live, req: Request<Incoming>) -> Response<Body> {
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
    if req.method() == http::Method::CONNECT {
        return errors::respond(
            &SidecarError::new(
                ErrorCode::BadRequest,
                "CONNECT tunnels are refused: use http://HOST/... through this proxy and the \
                 sidecar will originate TLS and add credentials",
            ),
            "",
        );
    }
    let Some(host) = host else {
        return errors::respond(
            &SidecarError::new(
                ErrorCode::BadRequest,
                "proxy requests must name a host (absolute-form URI or Host header)",
            ),
            "",
        );
    };
    let integration = live.load().by_host(&host).cloned();
    match integration {
        Some(i) => request_path::serve(i, req, PathOrigin::Absolute).await,
        None => errors::respond(
            &SidecarError::new(
                ErrorCode::UnknownDestination,
                format!("no integration of this pod names host {host:?}"),
            ),
            "",
        ),
    }
}
