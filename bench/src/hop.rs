//! The floor: one bare hyper hop. Plain HTTP/1.1 in, plain HTTP/1.1 out to one upstream, on
//! a current-thread runtime, with nothing in between: no TLS, no policies, no header rewriting,
//! no pool (each inbound connection gets its own upstream connection, opened on its first
//! request and kept). Whatever a real proxy adds beyond this hop is the price of what it does.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::{
    body::Incoming,
    client::conn::http1::{self as client, SendRequest},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Mutex,
};

/// The answer: the upstream's body as it streams, or a short 502 of our own.
type HopBody = Either<Incoming, Full<Bytes>>;

/// Serves on `listen`, forwarding every request to `upstream`, until the process is killed.
pub fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    // The bound address (the caller may have asked for port 0), for scripts and tests to read.
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            // HTTP/1.1 serves one request at a time per connection, so the lock is never
            // contended: it only hands the upstream connection from one request to the next.
            let out: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            let svc = service_fn(move |req| {
                let out = out.clone();
                async move { Ok::<_, Infallible>(forward(&out, upstream, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Sends `req` on this connection's upstream connection (opening it when there is none or the
/// upstream closed it) and returns the answer as it arrives.
async fn forward(
    out: &Mutex<Option<SendRequest<Incoming>>>,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Response<HopBody> {
    let mut slot = out.lock().await;
    let ready = match slot.as_mut() {
        Some(tx) => tx.ready().await.is_ok(),
        None => false,
    };
    if !ready {
        match connect(upstream).await {
            Ok(tx) => *slot = Some(tx),
            Err(e) => return bad_gateway(&format!("connecting to {upstream}: {e:#}")),
        }
    }
    let Some(tx) = slot.as_mut() else {
        return bad_gateway("no upstream connection");
    };
    match tx.send_request(req).await {
        Ok(resp) => resp.map(Either::Left),
        Err(e) => bad_gateway(&format!("upstream exchange: {e}")),
    }
}

async fn connect(upstream: SocketAddr) -> anyhow::Result<SendRequest<Incoming>> {
    let tcp = TcpStream::connect(upstream).await?;
    tcp.set_nodelay(true)?;
    let (tx, conn) = client::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(tx)
}

fn bad_gateway(why: &str) -> Response<HopBody> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(format!("{why}\n")))));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
