//! The concurrency limit (bulkhead) through the real sidecar: `concurrency.maxInFlight`
//! requests at once; beyond it 503 `overloaded` when `rateLimit.onLimit` is `reject`, or a wait
//! for a free slot (bounded by `rateLimit.maxQueueWait`) when it is `queue` (the concurrency
//! limit follows the rate limit's `onLimit`, see api/src/render.rs `concurrency_config`).

use std::time::{Duration, Instant};

use attache_tests::resilience_harness::{
    assert_gap_at_least, assert_sidecar_error, assert_upstream_response, Rig,
};
use attache_tests::Action;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::task::JoinHandle;

/// A rig with one slot (`maxInFlight: 1`, reject mode) in front of an upstream whose response
/// is far more than every buffer on the way can hold: it streams only as the app reads.
async fn one_slot_before_a_huge_stream() -> Rig {
    Rig::start(
        Action::stream(256 << 20, 64 << 10),
        json!({
            "concurrency": {"maxInFlight": 1},
            "rateLimit": {"requests": 1000, "onLimit": "reject"},
        }),
    )
    .await
}

/// A response streaming to an app that reads its body only when told to, on a connection of
/// its own.
struct Streaming {
    sender: SendRequest<Empty<Bytes>>,
    conn: JoinHandle<hyper::Result<()>>,
    body: Incoming,
}

impl Streaming {
    /// GET `/big` through the sidecar; returns once the 200's headers arrived.
    async fn start(rig: &Rig) -> Streaming {
        let tcp = tokio::net::TcpStream::connect(rig.sidecar.addr(0))
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        let conn = tokio::spawn(conn);
        let req = http::Request::get("/big")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        Streaming {
            sender,
            conn,
            body: resp.into_body(),
        }
    }

    /// The app goes away mid-body.
    fn abandon(self) {
        let Streaming { sender, conn, body } = self;
        drop(body);
        drop(sender);
        conn.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_plus_one_concurrent_requests_get_exactly_one_overloaded() {
    let slow = Duration::from_millis(1500);
    let rig = Rig::start(
        Action::respond(200, "slow").delayed(slow),
        json!({
            "concurrency": {"maxInFlight": 2},
            "rateLimit": {"requests": 1000, "onLimit": "reject"},
        }),
    )
    .await;
    let up = rig.up();
    let all: Vec<_> = (0..3).map(|_| rig.spawn_get("/slow")).collect();
    let mut ok = 0;
    let mut overloaded = 0;
    for task in all {
        let resp = task.await.unwrap();
        if resp.status == 200 {
            assert_upstream_response(&resp, 200, 1);
            ok += 1;
        } else {
            assert_sidecar_error(&resp, 503, "overloaded");
            overloaded += 1;
        }
    }
    assert_eq!((ok, overloaded), (2, 1), "maxInFlight 2, 3 at once");
    assert_eq!(up.count(), 2, "the refused one never reached the upstream");

    // The same, step by step: two in flight (the gauge shows them), the third refused at once.
    let first: Vec<_> = (0..2).map(|_| rig.spawn_get("/slow")).collect();
    assert!(up.wait_for_count(4, Duration::from_secs(10)).await);
    assert_eq!(
        rig.metric("attache_inflight_requests", &[]).await,
        2.0,
        "two requests in flight"
    );
    let started = Instant::now();
    let resp = rig.get("/fast").await;
    assert_sidecar_error(&resp, 503, "overloaded");
    assert!(
        started.elapsed() < slow / 2,
        "refused at once, not after {:?}",
        started.elapsed()
    );
    for task in first {
        assert_upstream_response(&task.await.unwrap(), 200, 1);
    }
    // Slots are released once the responses are done.
    up.set_default_action(Action::respond(200, "fast"));
    assert_upstream_response(&rig.get("/fast").await, 200, 1);
    assert_eq!(
        rig.metric("attache_requests_total", &[("code", "overloaded")])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_waits_for_a_free_slot() {
    let slow = Duration::from_millis(500);
    let rig = Rig::start(
        Action::respond(200, "slow").delayed(slow),
        json!({
            "concurrency": {"maxInFlight": 1},
            "rateLimit": {"requests": 1000, "onLimit": "queue", "maxQueueWait": "5s"},
        }),
    )
    .await;
    let up = rig.up();
    let first = rig.spawn_get("/a");
    assert!(up.wait_for_count(1, Duration::from_secs(10)).await);
    let resp = rig.get("/b").await;
    assert_upstream_response(&resp, 200, 1);
    assert_upstream_response(&first.await.unwrap(), 200, 1);
    let (a, b) = (up.requests_for("/a")[0].at, up.requests_for("/b")[0].at);
    assert_gap_at_least(a, b, slow, "the second waited for the first to finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_gives_up_after_max_queue_wait() {
    let rig = Rig::start(
        Action::respond(200, "slow").delayed(Duration::from_secs(3)),
        json!({
            "concurrency": {"maxInFlight": 1},
            "rateLimit": {"requests": 1000, "onLimit": "queue", "maxQueueWait": "300ms"},
        }),
    )
    .await;
    let up = rig.up();
    let first = rig.spawn_get("/a");
    assert!(up.wait_for_count(1, Duration::from_secs(10)).await);
    let started = Instant::now();
    let resp = rig.get("/b").await;
    let waited = started.elapsed();
    assert_sidecar_error(&resp, 503, "overloaded");
    assert!(
        waited + Duration::from_millis(50) >= Duration::from_millis(300),
        "gave up after {waited:?}, before maxQueueWait"
    );
    assert!(waited < Duration::from_secs(2), "waited {waited:?}");
    assert_eq!(up.requests_for("/b").len(), 0);
    assert_upstream_response(&first.await.unwrap(), 200, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_response_keeps_its_slot_until_the_body_is_done() {
    let rig = one_slot_before_a_huge_stream().await;
    let mut stream = Streaming::start(&rig).await;
    let frame = stream.body.frame().await.expect("a first chunk").unwrap();
    assert!(frame.is_data());

    // The body is still streaming: its slot is taken.
    assert_sidecar_error(&rig.get("/other").await, 503, "overloaded");

    // The app goes away mid-body: the slot comes back.
    stream.abandon();
    rig.up().set_default_action(Action::respond(200, "small"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = rig.get("/other").await;
        if resp.status == 200 {
            assert_upstream_response(&resp, 200, 1);
            break;
        }
        assert_sidecar_error(&resp, 503, "overloaded");
        assert!(
            Instant::now() < deadline,
            "the slot of an abandoned stream was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_gauge_agrees_with_the_bulkhead_during_a_stream() {
    // An operator who sees `overloaded` ("1 requests already in flight") looks at
    // attache_inflight_requests: it must show the request that holds the slot.
    let rig = one_slot_before_a_huge_stream().await;
    let mut stream = Streaming::start(&rig).await;
    assert!(stream.body.frame().await.is_some(), "the stream started");
    let refused = rig.get("/other").await;
    assert_sidecar_error(&refused, 503, "overloaded");
    assert_eq!(
        rig.metric("attache_inflight_requests", &[]).await,
        1.0,
        "the sidecar refused a request because one is in flight ({}), yet the gauge says",
        refused.json()["message"]
    );
    stream.abandon();
}
