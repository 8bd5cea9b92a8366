//! `attache-sidecar explain` through the real binary, on the repository's examples.

use std::process::{Command, Output};

fn explain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attache-sidecar"))
        .arg("explain")
        .arg("-f")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
        .args(args)
        .env_remove("ATTACHE_LOG_LEVEL")
        .output()
        .expect("run attache-sidecar explain")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn upstream_line(out: &str) -> &str {
    out.lines()
        .find(|l| l.starts_with("upstream:"))
        .unwrap_or_else(|| panic!("no upstream line in:\n{out}"))
}

/// The base path is added once, whichever listener the app used (the bug the proxy listener
/// had: `/v1/v1/models`). Integrations sorted by name take ports from 15001: anthropic, bank,
/// demo-payments, openai, stripe, twilio.
#[test]
fn both_listeners_send_the_base_path_once() {
    let own = stdout(&explain(&["GET", "http://127.0.0.1:15004/models"]));
    let proxied = stdout(&explain(&["GET", "http://api.openai.com/v1/models"]));
    assert!(
        own.contains("integration: openai (via its listener"),
        "{own}"
    );
    assert!(
        proxied.contains("integration: openai (via the proxy listener"),
        "{proxied}"
    );
    assert_eq!(
        upstream_line(&own),
        "upstream:    GET https://api.openai.com/v1/models"
    );
    assert_eq!(upstream_line(&proxied), upstream_line(&own));
    assert!(
        own.contains(r#"llm (tokens counted, limit headers obeyed): {"provider":"openai","tokensPerMinute":200000"#),
        "{own}"
    );
}

#[test]
fn credentials_are_named_never_shown_and_hop_by_hop_headers_dropped() {
    let out = stdout(&explain(&[
        "POST",
        "http://127.0.0.1:15005/v1/charges",
        "-H",
        "Connection: keep-alive",
        "-H",
        "Content-Type: application/json",
        "-H",
        "Authorization: Bearer app-supplied",
    ]));
    assert!(
        out.contains("authorization: Bearer <redacted from Secret stripe-key/api-key>"),
        "{out}"
    );
    assert!(
        !out.contains("app-supplied"),
        "the app's own credential is replaced: {out}"
    );
    assert!(!out.contains("connection:"), "{out}");
    assert!(out.contains("content-type: application/json"), "{out}");
    assert!(out.contains("host: api.stripe.com"), "{out}");
    assert!(
        out.contains("idempotency-key: <a new UUID, the same on every attempt>"),
        "{out}"
    );
    assert!(out.contains("retry: up to 3 attempts"), "{out}");
}

#[test]
fn the_bank_example_shows_its_mtls_and_oauth2_sources() {
    let out = stdout(&explain(&["GET", "http://127.0.0.1:15002/accounts"]));
    assert!(out.contains("integration: bank"), "{out}");
    assert!(out.contains("client certificate from Secret"), "{out}");
    assert!(out.contains("access token from https://"), "{out}");
}

#[test]
fn refused_and_unknown_requests_are_explained_with_exit_1() {
    for (args, says) in [
        (
            &["GET", "http://unknown.example.com/x"][..],
            "403 unknown_destination",
        ),
        (
            &["TRACE", "http://127.0.0.1:15005/x"][..],
            "400 bad_request",
        ),
        (
            &["GET", "http://127.0.0.1:15004/v1/../admin"][..],
            "dot-segment",
        ),
        (
            &["GET", "http://127.0.0.1:15999/x"][..],
            "no integration listens on port 15999",
        ),
        (
            &["GET", "https://api.stripe.com/x"][..],
            "absolute http:// URL",
        ),
    ] {
        let o = explain(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}
