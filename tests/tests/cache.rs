//! `spec.cache` through the real sidecar (README, "Caching"): fresh answers served without
//! asking the upstream, `no-store` and `Vary` obeyed, revalidation with `ETag`, stale answers
//! standing in for a failing upstream or an open circuit within `staleIfError`, and memory
//! bounded by `maxBytes` over 10,000 distinct URLs.

use std::time::Duration;

use attache_tests::resilience_harness::Rig;
use attache_tests::Action;
use bytes::Bytes;
use http::Request;
use serde_json::json;

fn cached(extra: serde_json::Value) -> serde_json::Value {
    let mut p = json!({
        "cache": {"maxBytes": "1Mi", "staleIfError": "10m"},
        "retry": {"maxAttempts": 1},
    });
    if let (Some(a), serde_json::Value::Object(b)) = (p.as_object_mut(), extra) {
        a.extend(b);
    }
    p
}

async fn cache_total(rig: &Rig, result: &str) -> f64 {
    rig.metric("attache_cache_total", &[("result", result)])
        .await
}

async fn get_with(rig: &Rig, path: &str, header: (&str, &str)) -> attache_tests::Response {
    rig.send(
        Request::get(rig.url(path))
            .header(header.0, header.1)
            .body(Bytes::new())
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn fresh_answers_are_served_from_the_cache_and_no_store_is_not_kept() {
    let rig = Rig::start(Action::respond(404, "unscripted"), cached(json!({}))).await;
    let up = rig.up();
    up.script(
        "/fresh",
        vec![Action::respond(200, "v1").with_header("cache-control", "max-age=60")],
    );
    let first = rig.get("/fresh").await;
    assert_eq!(
        (first.status, first.header("x-attache-cache")),
        (200, Some("miss"))
    );
    let second = rig.get("/fresh").await;
    assert_eq!(second.header("x-attache-cache"), Some("hit"));
    assert_eq!(second.text(), "v1");
    assert!(
        second.header("age").is_some(),
        "a stored answer says its age"
    );
    assert_eq!(
        up.requests_for("/fresh").len(),
        1,
        "the hit never reached the upstream"
    );

    up.script(
        "/private-data",
        vec![
            Action::respond(200, "a").with_header("cache-control", "no-store"),
            Action::respond(200, "b").with_header("cache-control", "no-store"),
        ],
    );
    assert_eq!(rig.get("/private-data").await.text(), "a");
    assert_eq!(rig.get("/private-data").await.text(), "b");
    assert_eq!(cache_total(&rig, "hit").await, 1.0);
    assert_eq!(cache_total(&rig, "miss").await, 3.0);
}

#[tokio::test]
async fn vary_keeps_answers_for_other_request_headers_apart() {
    let rig = Rig::start(Action::respond(404, "unscripted"), cached(json!({}))).await;
    let answer = |body: &str| {
        Action::respond(200, body)
            .with_header("cache-control", "max-age=60")
            .with_header("vary", "accept-language")
    };
    rig.up()
        .script("/greeting", vec![answer("hello"), answer("bonjour")]);
    let en = get_with(&rig, "/greeting", ("accept-language", "en")).await;
    assert_eq!(en.text(), "hello");
    let en = get_with(&rig, "/greeting", ("accept-language", "en")).await;
    assert_eq!(
        (en.text().as_str(), en.header("x-attache-cache")),
        ("hello", Some("hit"))
    );
    let fr = get_with(&rig, "/greeting", ("accept-language", "fr")).await;
    assert_eq!(
        (fr.text().as_str(), fr.header("x-attache-cache")),
        ("bonjour", Some("miss")),
        "the English answer is not served to a French request"
    );
}

#[tokio::test]
async fn an_expired_answer_is_revalidated_with_its_etag() {
    let rig = Rig::start(Action::respond(404, "unscripted"), cached(json!({}))).await;
    rig.up().script(
        "/doc",
        vec![
            Action::respond(200, "the document")
                .with_header("cache-control", "max-age=0")
                .with_header("etag", "\"v1\""),
            Action::respond(304, "")
                .with_header("cache-control", "max-age=0")
                .with_header("etag", "\"v1\""),
        ],
    );
    assert_eq!(
        rig.get("/doc").await.header("x-attache-cache"),
        Some("miss")
    );
    let again = rig.get("/doc").await;
    assert_eq!(
        again.status, 200,
        "the app gets the stored answer, not the 304"
    );
    assert_eq!(again.text(), "the document");
    assert_eq!(again.header("x-attache-cache"), Some("hit"));
    let seen = rig.up().requests_for("/doc");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));

    // The app's own conditional request is its business: its 304 reaches it as is.
    rig.up().script(
        "/doc",
        vec![Action::respond(304, "").with_header("etag", "\"v1\"")],
    );
    let own = get_with(&rig, "/doc", ("if-none-match", "\"v1\"")).await;
    assert_eq!(own.status, 304);
}

#[tokio::test]
async fn stale_answers_stand_in_for_a_failing_upstream_and_an_open_circuit() {
    let policies = cached(json!({
        "circuitBreaker": {"consecutiveFailures": 1, "openDuration": "30s"},
    }));
    let rig = Rig::start(Action::respond(404, "unscripted"), policies).await;
    rig.up().script(
        "/rates",
        vec![
            Action::respond(200, "rates of the day").with_header("cache-control", "max-age=1"),
            Action::respond(503, "maintenance"),
        ],
    );
    assert_eq!(
        rig.get("/rates").await.header("x-attache-cache"),
        Some("miss")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = rig.get("/rates").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "rates of the day");
    assert_eq!(stale.header("x-attache-cache"), Some("stale"));
    assert_eq!(rig.circuit_state().await, 2.0, "the 503 opened the circuit");
    let stale = rig.get("/rates").await;
    assert_eq!(
        (stale.status, stale.header("x-attache-cache")),
        (200, Some("stale")),
        "with the circuit open, the stored answer is served instead of circuit_open"
    );
    assert_eq!(rig.up().requests_for("/rates").len(), 2);
    assert_eq!(cache_total(&rig, "stale").await, 2.0);

    // Nothing stored: the failure reaches the app.
    let none = rig.get("/never-stored").await;
    assert_eq!(none.status, 503);
    assert_eq!(none.header("x-attache-error"), Some("circuit_open"));
}

/// RSS growth of a sidecar over 10,000 GETs of distinct URLs answering 1 KiB (`max-age=600`),
/// after a warm-up, then over 10,000 more; and the rig, for more requests.
async fn growth_over_10000_urls(policies: serde_json::Value) -> (u64, u64, Rig) {
    let rig = Rig::start(
        Action::respond(200, &"x".repeat(1024)).with_header("cache-control", "max-age=600"),
        policies,
    )
    .await;
    // Warm up the allocator and the connections (20 at once, like the run) first.
    let run = |prefix: &'static str, per_worker: usize| {
        let tasks: Vec<_> = (0..20)
            .map(|worker| {
                let client = rig.client.clone();
                let base = rig.url(prefix);
                tokio::spawn(async move {
                    for i in 0..per_worker {
                        let resp = client.get(&format!("{base}/{worker}-{i}")).await.unwrap();
                        assert_eq!(resp.status, 200);
                    }
                })
            })
            .collect();
        async move {
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    run("/warm", 20).await;
    let before = rig.sidecar.memory().rss_kib;
    run("/item", 500).await;
    let after = rig.sidecar.memory().rss_kib;
    run("/more", 500).await;
    let more = rig.sidecar.memory().rss_kib;
    (
        after.saturating_sub(before),
        more.saturating_sub(after),
        rig,
    )
}

#[tokio::test]
async fn memory_stays_bounded_over_10000_distinct_urls() {
    let (control, _, _) = growth_over_10000_urls(json!({})).await;
    let (cached, then, rig) = growth_over_10000_urls(json!({"cache": {"maxBytes": "1Mi"}})).await;
    eprintln!(
        "measurement: RSS growth over 10,000 distinct URLs: {cached} KiB with a 1 MiB cache \
         ({then} KiB over 10,000 more), {control} KiB without a cache"
    );
    let misses = rig.metric("attache_cache_total", &[("result", "miss")]);
    assert_eq!(misses.await, 20_400.0);
    // The 20,000 answers are ~20 MiB; the cache keeps 1 MiB of them (everything an entry
    // holds counted into the bound, see sidecar/tests/cache_memory.rs), so memory levels off
    // one MiB above the control (plus the allocator's slack), and the second 10,000 URLs add
    // almost nothing.
    assert!(
        cached < control + 2 * 1024,
        "RSS grew by {cached} KiB with the cache, {control} KiB without"
    );
    assert!(
        then < 1536,
        "RSS still grew by {then} KiB over 10,000 more URLs"
    );
    // The oldest are gone, the newest are served from the cache.
    let recent = rig.get("/more/19-499").await;
    assert_eq!(recent.header("x-attache-cache"), Some("hit"));
    let evicted = rig.get("/item/0-0").await;
    assert_eq!(evicted.header("x-attache-cache"), Some("miss"));
}

#[tokio::test]
async fn answers_over_http1_with_a_content_length_are_stored_too() {
    // Over HTTP/1.1 the sidecar's server stops polling a body once its declared length was
    // written: the cache must notice the end there (this bit the first version).
    let ca = attache_tests::TestCa::new("cache h1 ca");
    let up = attache_tests::Upstream::builder()
        .tls(ca.localhost_cert())
        .http1_only()
        .default_action(
            Action::respond(200, "h1 answer").with_header("cache-control", "max-age=60"),
        )
        .start()
        .await;
    let url = up.url();
    let rig = Rig::start_at(ca, Some(up), &url, cached(json!({}))).await;
    assert_eq!(rig.get("/h1").await.header("x-attache-cache"), Some("miss"));
    let again = rig.get("/h1").await;
    assert_eq!(
        (again.text().as_str(), again.header("x-attache-cache")),
        ("h1 answer", Some("hit"))
    );
    assert_eq!(rig.up().requests_for("/h1").len(), 1);
}
