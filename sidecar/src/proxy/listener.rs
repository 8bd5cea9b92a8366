//! Accept loops: HTTP/1.1 and h2c, with graceful draining and the connection bounds of
//! [`connections`](super::connections).

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch};

use super::connections::{Activity, ConnectionLimits, Slots, Tracked, Watched};
use crate::body::Body;

/// One listener's connection bounds.
#[derive(Clone)]
pub struct Bounds {
    pub limits: ConnectionLimits,
    pub slots: Slots,
    /// What the listener serves, for log lines.
    pub what: Arc<str>,
}

/// Serves `listener` until `stop` turns true; connections are watched by `graceful` so that
/// shutdown can wait for the requests they carry.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    mut stop: watch::Receiver<bool>,
    graceful: Arc<GracefulShutdown>,
    bounds: Bounds,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let refused = AtomicU64::new(0);
    loop {
        let (stream, peer): (_, SocketAddr) = tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, listener = %bounds.what, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = bounds.slots.try_take() else {
            // Closed at once: the client learns now instead of waiting in the backlog.
            drop(stream);
            let n = refused.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() || n == 0 {
                tracing::warn!(
                    listener = %bounds.what, refused = n + 1,
                    max_connections = bounds.limits.max_connections,
                    "connection limit reached: closing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new(&bounds.limits);
        let h = handler.clone();
        let act = activity.clone();
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let in_use = act.begin(req.version() == Version::HTTP_2);
            // On the heap: the request path's future is several KiB, and hyper moves the
            // future it is given (into its dispatcher, between states) by value.
            let resp = Box::pin(h(req));
            async move { Ok::<_, Infallible>(resp.await.map(|b| Tracked::new(b, in_use))) }
        });
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let conn = builder.serve_connection(io, svc).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                r = conn => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                why = activity.expired() => {
                    tracing::debug!(%peer, reason = why.as_str(), "closing the connection");
                }
            }
        });
    }
}
