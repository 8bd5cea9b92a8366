use std::io;

use super::*;

fn tls(kind: ErrorKind) -> AttemptError {
    AttemptError::Connect(ConnectError::Tls {
        authority: "h:443".into(),
        source: io::Error::new(kind, "x"),
    })
}

fn connect(kind: ErrorKind) -> AttemptError {
    AttemptError::Connect(ConnectError::Connect {
        authority: "h:443".into(),
        source: io::Error::new(kind, "x"),
    })
}

/// Every failure: its meaning for retries and the breaker, and its metric label.
#[test]
fn every_failure_has_one_outcome_and_one_result() {
    use AttemptOutcome as O;
    use AttemptResult as R;
    let table: Vec<(AttemptError, AttemptOutcome, AttemptResult)> = vec![
        (
            connect(ErrorKind::ConnectionRefused),
            O::ConnectFailure,
            R::ConnectError,
        ),
        (
            AttemptError::Connect(ConnectError::Timeout {
                authority: "h:443".into(),
                timeout: Duration::from_secs(2),
            }),
            O::ConnectFailure,
            R::ConnectTimeout,
        ),
        (
            AttemptError::Connect(ConnectError::Resolve {
                host: "h".into(),
                source: io::Error::other("no such host"),
            }),
            O::ConnectFailure,
            R::ConnectError,
        ),
        // A handshake the network broke is a connect failure; one refused is TLS.
        (
            tls(ErrorKind::ConnectionReset),
            O::ConnectFailure,
            R::TlsError,
        ),
        (
            tls(ErrorKind::UnexpectedEof),
            O::ConnectFailure,
            R::TlsError,
        ),
        (tls(ErrorKind::BrokenPipe), O::ConnectFailure, R::TlsError),
        (tls(ErrorKind::InvalidData), O::TlsFailure, R::TlsError),
        (
            AttemptError::Connect(ConnectError::Insecure("h".into())),
            O::TlsFailure,
            R::ConnectError,
        ),
        (
            AttemptError::Connect(ConnectError::InvalidUri("x".into())),
            O::TlsFailure,
            R::ConnectError,
        ),
        (
            AttemptError::Tls("bad certificate".into()),
            O::TlsFailure,
            R::TlsError,
        ),
        (AttemptError::Reset("closed".into()), O::Reset, R::Reset),
        (
            AttemptError::PerTryTimeout(Duration::from_secs(10)),
            O::Timeout,
            R::Timeout,
        ),
    ];
    for (error, outcome, result) in table {
        assert_eq!(error.outcome(), outcome, "{error:?}");
        assert_eq!(error.result(), result, "{error:?}");
    }
}

#[test]
fn only_a_connect_failure_was_never_sent() {
    assert!(!AttemptOutcome::ConnectFailure.was_sent());
    for o in [
        AttemptOutcome::Reset,
        AttemptOutcome::Timeout,
        AttemptOutcome::TlsFailure,
        AttemptOutcome::Status(StatusCode::OK),
    ] {
        assert!(o.was_sent(), "{o:?}");
    }
}

#[test]
fn only_5xx_and_transport_failures_count_against_the_breaker() {
    let s = |c: u16| AttemptOutcome::Status(StatusCode::from_u16(c).unwrap());
    assert!(s(500).is_failure());
    assert!(s(503).is_failure());
    assert!(
        !s(429).is_failure(),
        "the provider pacing us is not a failure"
    );
    assert!(!s(404).is_failure());
    assert!(!s(200).is_failure());
    assert!(AttemptOutcome::Timeout.is_failure());
    assert!(AttemptOutcome::ConnectFailure.is_failure());
    assert!(AttemptOutcome::Reset.is_failure());
    assert!(AttemptOutcome::TlsFailure.is_failure());
}

#[test]
fn a_rustls_error_is_found_inside_io_errors() {
    // What tokio-rustls hands hyper when the server sends an alert.
    let io = io::Error::new(
        ErrorKind::InvalidData,
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
    );
    assert!(rustls_error_in(&io).is_some());
    assert!(rustls_error_in(&io::Error::other("plain")).is_none());
}

#[test]
fn per_try_timeout_names_the_timeout() {
    let e = AttemptError::PerTryTimeout(Duration::from_millis(250));
    assert_eq!(
        e.to_string(),
        "upstream sent no response within the per-try timeout (250ms)"
    );
}
