//! The demo's inbound side: the payments API calls back with a Stripe-style signed webhook.
//! A small app endpoint counts what reaches it; the demo sends one valid event, one with a
//! forged signature and the valid one again, and prints what the sidecar answered to each.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
};
use ring::hmac;
use tokio::net::TcpListener;

/// The signing secret the demo's third party and the sidecar share (a file in the demo's
/// secrets folder, `demo-webhook/signing-secret`).
pub const SIGNING_SECRET: &str = "whsec_demo_7d1f0c";

/// The app's webhook endpoint: answers 200 and counts verified deliveries.
pub struct App {
    pub addr: SocketAddr,
    pub verified: Arc<AtomicUsize>,
}

pub async fn start_app() -> std::io::Result<App> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let verified = Arc::new(AtomicUsize::new(0));
    let count = verified.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let count = count.clone();
            let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                if req.headers().contains_key("x-attache-webhook-verified") {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(
                        "received",
                    ))))
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    Ok(App { addr, verified })
}

/// Sends the three callbacks to the webhook listener at `addr`; one line per callback.
pub async fn callbacks(addr: SocketAddr, path: &str) -> Vec<String> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let body = r#"{"id":"evt_demo_1","type":"charge.succeeded"}"#;
    let valid = signature(SIGNING_SECRET, now, body);
    let forged = signature("whsec_guessed", now, body);
    let mut lines = Vec::new();
    for (what, header) in [
        ("valid signature", &valid),
        ("forged signature", &forged),
        ("the valid one again (replay)", &valid),
    ] {
        let req = http::Request::post(format!("http://{addr}{path}"))
            .header("stripe-signature", header.as_str())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)));
        let answer = match req {
            Ok(req) => {
                match tokio::time::timeout(Duration::from_secs(3), client.request(req)).await {
                    Ok(Ok(resp)) => {
                        let status = resp.status().as_u16();
                        let code = resp
                            .headers()
                            .get("x-attache-error")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        let _ = resp.into_body().collect().await;
                        match code {
                            Some(code) => format!("{status} {code}"),
                            None => format!("{status} from the app"),
                        }
                    }
                    Ok(Err(e)) => format!("no answer ({e})"),
                    Err(_) => "no answer within 3 s".into(),
                }
            }
            Err(e) => format!("could not build the request ({e})"),
        };
        lines.push(format!("{what:<30} {answer}"));
    }
    lines
}

/// `Stripe-Signature: t=T,v1=HEX`: HMAC-SHA256 of `"{t}.{body}"`.
fn signature(secret: &str, t: u64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, format!("{t}.{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}
