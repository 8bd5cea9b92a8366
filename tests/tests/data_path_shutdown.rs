//! Graceful shutdown of the real `attache-sidecar` binary: on SIGTERM it stops accepting new
//! connections at once, lets the requests in flight finish, then exits 0; `--drain-timeout`
//! bounds how long stuck requests can hold it.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use attache_tests::{ca_bundle_ref, xint, Action, LocalSetup, TestCa, Upstream};
use serde_json::json;
use tokio::net::TcpStream;

const IN_FLIGHT: usize = 5;
/// How long the upstream takes to answer: the window in which the sidecar must already refuse
/// new connections while still serving the old ones.
const UPSTREAM_DELAY: Duration = Duration::from_secs(3);

async fn setup_for(up: &Upstream, ca: &TestCa) -> LocalSetup {
    let mut setup = LocalSetup::trusting(ca);
    setup.manifest(&[xint(
        "slowpay",
        json!({
            "upstream": {"url": up.url()},
            "tls": {"caBundleRef": ca_bundle_ref()},
            "timeouts": {"perTry": "30s", "request": "60s"},
        }),
    )]);
    setup
}

/// Polls until a TCP connect to `addr` is refused; Err(last outcome) after `timeout`.
async fn wait_refused(addr: SocketAddr, timeout: Duration) -> Result<Instant, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match TcpStream::connect(addr).await {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(Instant::now()),
            Err(e) => format!("{e}"),
            Ok(_) => "accepted".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_refuses_new_ones_and_exits_0() {
    let ca = TestCa::new("shutdown ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::echo().delayed(UPSTREAM_DELAY))
        .start()
        .await;
    let setup = setup_for(&up, &ca).await;
    let mut sidecar = setup.start_with(&["--drain-timeout", "30s"]).await;

    let in_flight: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let url = format!("{}/orders/{i}", sidecar.url(0));
            tokio::spawn(async move { attache_tests::get(&url).await })
        })
        .collect();
    assert!(
        up.wait_for_count(IN_FLIGHT, Duration::from_secs(20)).await,
        "the requests reached the upstream"
    );
    sidecar.sigterm();
    let signalled = Instant::now();

    // New connections are refused while the old requests are still being served.
    for addr in [sidecar.addr(0), sidecar.proxy_addr] {
        let refused_at = wait_refused(addr, Duration::from_secs(10))
            .await
            .unwrap_or_else(|last| panic!("{addr} still accepting after SIGTERM: {last}"));
        eprintln!(
            "measurement: {addr} refused connections {:?} after SIGTERM",
            refused_at - signalled
        );
    }
    assert!(
        sidecar.try_status().is_none(),
        "the sidecar exited with requests in flight"
    );
    assert!(
        in_flight.iter().all(|h| !h.is_finished()),
        "the in-flight requests were answered before new connections were refused: this \
         test needs them still open (upstream delay {UPSTREAM_DELAY:?})"
    );

    for (i, h) in in_flight.into_iter().enumerate() {
        let resp = h
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("in-flight request {i} was cut: {e:#}"));
        assert_eq!(resp.status, 200, "{}", resp.text());
        assert_eq!(resp.json()["path_and_query"], format!("/orders/{i}"));
    }
    let status = sidecar
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the sidecar exits once drained");
    assert_eq!(status.code(), Some(0), "{status}\n{}", sidecar.output());
    eprintln!(
        "measurement: exited {:?} after SIGTERM ({IN_FLIGHT} requests held for {UPSTREAM_DELAY:?})",
        signalled.elapsed()
    );
    assert_eq!(up.count(), IN_FLIGHT, "nothing was sent after SIGTERM");
}

#[tokio::test]
async fn drain_timeout_bounds_the_wait_for_stuck_requests() {
    let ca = TestCa::new("shutdown ca");
    let up = Upstream::builder()
        .tls(ca.localhost_cert())
        .default_action(Action::Hang)
        .start()
        .await;
    let setup = setup_for(&up, &ca).await;
    let mut sidecar = setup.start_with(&["--drain-timeout", "1s"]).await;
    let url = format!("{}/stuck", sidecar.url(0));
    let stuck = tokio::spawn(async move { attache_tests::get(&url).await });
    assert!(up.wait_for_count(1, Duration::from_secs(20)).await);

    sidecar.sigterm();
    let signalled = Instant::now();
    // The stuck request would take 60 s (its request timeout); the drain gives it 1 s.
    let status = sidecar
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("the sidecar exits once the drain timeout passes");
    eprintln!(
        "measurement: with --drain-timeout 1s and a stuck request, exited {:?} after SIGTERM ({status})",
        signalled.elapsed()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(10), stuck)
        .await
        .expect("the app's connection is closed when the sidecar exits")
        .unwrap();
    assert!(
        outcome.as_ref().map(|r| r.status != 200).unwrap_or(true),
        "{outcome:?}"
    );
}
