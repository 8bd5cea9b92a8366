use http_body_util::BodyExt;

use super::*;

#[tokio::test]
async fn response_carries_code_header_and_json() {
    let e = SidecarError::new(ErrorCode::CircuitOpen, "breaker open")
        .with_retry_after(Duration::from_millis(2500));
    let resp = respond(&e, "stripe");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()[ERROR_HEADER], "circuit_open");
    assert_eq!(resp.headers()[header::RETRY_AFTER], "3");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "circuit_open");
    assert_eq!(v["integration"], "stripe");
    assert_eq!(v["message"], "breaker open");
}

/// Every leaf error of the request path: the code the app sees.
#[test]
fn each_leaf_error_maps_to_its_documented_code() {
    use crate::resilience::{
        breaker::Rejected,
        ratelimit::{Limited, RateLimitAction},
    };
    let io = || std::io::Error::other("x");
    let upstream = [
        (
            AttemptError::Connect(ConnectError::Connect {
                authority: "h".into(),
                source: io(),
            }),
            ErrorCode::UpstreamConnect,
        ),
        (
            AttemptError::Connect(ConnectError::Timeout {
                authority: "h".into(),
                timeout: Duration::from_secs(2),
            }),
            ErrorCode::Timeout,
        ),
        (
            AttemptError::Connect(ConnectError::Tls {
                authority: "h".into(),
                source: io(),
            }),
            ErrorCode::UpstreamTls,
        ),
        (AttemptError::Tls("alert".into()), ErrorCode::UpstreamTls),
        (
            AttemptError::Reset("closed".into()),
            ErrorCode::UpstreamConnect,
        ),
        (
            AttemptError::PerTryTimeout(Duration::from_secs(1)),
            ErrorCode::Timeout,
        ),
    ];
    for (e, code) in upstream {
        assert_eq!(SidecarError::from(e).code, code);
    }
    let limited = |cause| Limited {
        retry_after: Duration::from_millis(1500),
        action: RateLimitAction::Rejected,
        cause,
    };
    for cause in [LimitCause::RateLimit, LimitCause::Provider] {
        let e = SidecarError::from(Refused::RateLimited(limited(cause)));
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_millis(1500)));
    }
    let quota = SidecarError::from(Refused::RateLimited(limited(LimitCause::Quota)));
    assert_eq!(
        (quota.code, quota.code.status().as_u16(), quota.retry_after),
        (
            ErrorCode::QuotaExhausted,
            429,
            Some(Duration::from_millis(1500))
        )
    );
    assert_eq!(quota.code.as_str(), "quota_exhausted");
    let open = SidecarError::from(Refused::CircuitOpen(Rejected {
        retry_after: Duration::from_secs(7),
    }));
    assert_eq!(
        (open.code, open.retry_after),
        (ErrorCode::CircuitOpen, Some(Duration::from_secs(7)))
    );
    let open = SidecarError::from(PrepareError::CircuitOpen(Duration::from_secs(3)));
    assert_eq!(open.code, ErrorCode::CircuitOpen);
    let auth = SidecarError::from(PrepareError::Credentials(ApplyError::Token(
        crate::credentials::TokenError::Status {
            url: "https://auth/token".into(),
            status: 500,
        },
    )));
    assert_eq!(auth.code, ErrorCode::UpstreamAuth);
    let bad = SidecarError::from(PrepareError::Check(
        super::super::prepare::CheckError::Trace,
    ));
    assert_eq!(bad.code, ErrorCode::BadRequest);
    let t = SidecarError::from(RequestTimeout(Duration::from_secs(30)));
    assert_eq!(t.code, ErrorCode::Timeout);
    assert_eq!(
        SidecarError::from(RouteError::UnknownHost("evil.example".into())).code,
        ErrorCode::UnknownDestination
    );
}

#[test]
fn a_stopped_retry_is_said_on_the_error() {
    let e = SidecarError::from(AttemptError::Reset("closed".into()))
        .after_attempts(2)
        .with_retry_stopped(Some(Stopped::Budget));
    assert!(e.message.ends_with("(after 2 attempts)"), "{}", e.message);
    let resp = respond(&e, "api");
    assert_eq!(resp.headers()[RETRY_STOPPED_HEADER], "budget");
    assert_eq!(resp.status(), 502);
}

#[test]
fn every_code_has_the_documented_status() {
    use ErrorCode::*;
    let table = [
        (CircuitOpen, 503),
        (RateLimited, 429),
        (Overloaded, 503),
        (Timeout, 504),
        (UpstreamConnect, 502),
        (UpstreamTls, 502),
        (UpstreamAuth, 502),
        (UnknownDestination, 403),
        (BadRequest, 400),
    ];
    for (code, status) in table {
        assert_eq!(code.status().as_u16(), status, "{code:?}");
    }
}
