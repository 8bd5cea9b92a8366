use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

const URL: &str = "https://auth.example/token";

fn token(json: &str) -> Result<Token, TokenError> {
    Token::parse(json.as_bytes(), URL, Instant::now())
}

/// When a token with this answer is refreshed, counted from its fetch.
fn refresh_after(json: &str) -> Duration {
    token(json).expect("a token").refresh_at - Instant::now()
}

#[tokio::test(start_paused = true)]
async fn refresh_comes_before_expiry() {
    let table = [
        // A minute early...
        (r#"{"access_token":"t","expires_in":3600}"#, 3540),
        // ... or at 90% of a short lifetime.
        (r#"{"access_token":"t","expires_in":100}"#, 90),
        (r#"{"access_token":"t","expires_in":0}"#, 0),
        // No expires_in: five minutes.
        (r#"{"access_token":"t"}"#, 270),
        // An absurd lifetime is read as a day, without overflowing the clock.
        (
            r#"{"access_token":"t","expires_in":18446744073709551615}"#,
            86_340,
        ),
    ];
    for (json, secs) in table {
        assert_eq!(refresh_after(json), Duration::from_secs(secs), "{json}");
    }
}

#[tokio::test(start_paused = true)]
async fn unusable_answers_are_refused_without_quoting_them() {
    let refused = |json: &str| match token(json) {
        Err(TokenError::BadResponse { reason, .. }) => reason,
        Err(e) => panic!("{json}: unexpected {e}"),
        Ok(_) => panic!("{json}: accepted"),
    };
    assert!(refused(r#"{"access_token":"t","token_type":"mac"}"#).contains("not Bearer"));
    assert!(refused(r#"{"access_token":"bad\nvalue"}"#).contains("not header-safe"));
    let reason = refused(r#"{"token":"s3cr3t-token"}"#);
    assert!(!reason.contains("s3cr3t"), "{reason}");
    assert!(refused("s3cr3t").contains("invalid JSON"));
    assert!(
        token(r#"{"access_token":"t","token_type":"Bearer"}"#).is_ok(),
        "token_type is case-insensitive"
    );
}

#[tokio::test(start_paused = true)]
async fn the_header_is_a_sensitive_bearer_value() {
    let t = token(r#"{"access_token":"abc"}"#).unwrap();
    assert_eq!(t.header, "Bearer abc");
    assert!(t.header.is_sensitive());
}

/// A fetch that counts its calls and hands out `Bearer 1`, `Bearer 2`, ... valid 100 s.
async fn counting(fetches: &AtomicU32) -> Result<Token, TokenError> {
    let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
    token(&format!(r#"{{"access_token":"{n}","expires_in":100}}"#))
}

#[tokio::test(start_paused = true)]
async fn one_token_serves_until_its_refresh_time() {
    let cache = TokenCache::default();
    let fetches = AtomicU32::new(0);
    let get = || cache.get_or_fetch(|| counting(&fetches));
    assert_eq!(get().await.unwrap(), "Bearer 1");
    tokio::time::advance(Duration::from_secs(89)).await;
    assert_eq!(get().await.unwrap(), "Bearer 1", "still fresh at 89 s");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(get().await.unwrap(), "Bearer 2", "refreshed at 90 s of 100");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_burst_waits_for_one_fetch() {
    let cache = TokenCache::default();
    let fetches = AtomicU32::new(0);
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        counting(&fetches).await
    };
    let burst: Vec<_> = (0..10).map(|_| cache.get_or_fetch(slow)).collect();
    for header in futures_join(burst).await {
        assert_eq!(header.unwrap(), "Bearer 1");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "a single flight");
}

#[tokio::test(start_paused = true)]
async fn a_failed_fetch_is_not_cached() {
    let cache = TokenCache::default();
    let fetches = AtomicU32::new(0);
    let failing = || async {
        fetches.fetch_add(1, Ordering::SeqCst);
        Err(TokenError::Status {
            url: URL.into(),
            status: 503,
        })
    };
    assert!(cache.get_or_fetch(failing).await.is_err());
    assert!(cache.get_or_fetch(failing).await.is_err());
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "the next request tries again"
    );
    let ok = cache.get_or_fetch(|| counting(&fetches)).await;
    assert_eq!(ok.unwrap(), "Bearer 3");
}

/// Runs the futures concurrently on this task; results in order.
async fn futures_join<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("ready")).collect()
}
