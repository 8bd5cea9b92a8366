//! Bodies stream through the real `attache-sidecar` binary: a 100 MiB response arrives whole
//! while the sidecar's peak memory stays far below the body's size, even when the app reads
//! slowly at first (so the sidecar must push back on the upstream rather than buffer).

use std::time::{Duration, Instant};

use attache_tests::{ca_bundle_ref, xint, Action, LocalSetup, TestCa, Upstream};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const MIB: u64 = 1024 * 1024;
const TOTAL: u64 = 100 * MIB;
/// Far below the body: the sidecar may hold buffers and connection state, not the response.
const PEAK_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test]
async fn a_100_mib_response_streams_through_with_bounded_memory() {
    let ca = TestCa::new("stream ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::stream(TOTAL, 64 * 1024))
        .start()
        .await;
    let mut setup = LocalSetup::trusting(&ca);
    setup.manifest(&[xint(
        "bulk",
        serde_json::json!({
            "upstream": {"url": up.url()},
            "tls": {"caBundleRef": ca_bundle_ref()},
            // Time is not what this test is about; a debug build on a busy machine is slow.
            "timeouts": {"perTry": "120s", "request": "300s"},
        }),
    )]);
    let sidecar = setup.start().await;
    let idle = sidecar.memory();

    let tcp = TcpStream::connect(sidecar.addr(0)).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/export.bin")
        .header("host", sidecar.addr(0).to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let started = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .expect("response headers in time")
        .unwrap();
    assert_eq!(resp.status(), 200);
    let declared = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = resp.into_body();
    let mut received = 0u64;
    let mut paused = false;
    let mut during = Vec::new();
    let read_all = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body frame");
            if let Ok(data) = frame.into_data() {
                received += data.len() as u64;
            }
            if !paused && received >= MIB {
                // A slow app: stop reading for a while. The upstream can produce far faster
                // than nobody reads; only backpressure keeps the sidecar's memory flat.
                paused = true;
                tokio::time::sleep(Duration::from_secs(2)).await;
                during.push(sidecar.memory());
            }
            if during.len() == 1 && received >= TOTAL / 2 {
                during.push(sidecar.memory());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read_all)
        .await
        .expect("the whole body within 300 s");
    let elapsed = started.elapsed();
    let after = sidecar.memory();

    assert_eq!(received, TOTAL, "every byte arrived");
    if let Some(len) = declared {
        assert_eq!(len, TOTAL);
    }
    eprintln!(
        "measurement: sidecar idle VmRSS {} KiB; VmRSS while streaming {:?} KiB; \
         VmHWM after 100 MiB {} KiB; transfer {:.1} s (incl. a 2 s app pause)",
        idle.rss_kib,
        during.iter().map(|m| m.rss_kib).collect::<Vec<_>>(),
        after.hwm_kib,
        elapsed.as_secs_f64()
    );
    assert!(
        after.hwm_kib < PEAK_LIMIT_KIB,
        "sidecar peak RSS {} KiB for a {} KiB body (idle was {} KiB)",
        after.hwm_kib,
        TOTAL / 1024,
        idle.rss_kib
    );
}
