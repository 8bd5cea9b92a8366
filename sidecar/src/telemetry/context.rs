//! W3C Trace Context (`traceparent`): reading the app's, and the ids of the sidecar's own
//! spans. The format is version `00`: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`.

use http::HeaderValue;
use rand::RngCore;

/// The trace a request belongs to, and where the sidecar's request span hangs in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The app's span (the parent of the sidecar's request span); `None` for a new trace.
    pub parent: Option<[u8; 8]>,
    /// The app's `sampled` flag; a new trace is sampled.
    pub sampled: bool,
}

impl TraceContext {
    /// The app's context from its `traceparent`, or a new trace when it sent none (or one
    /// that does not parse: W3C says to restart the trace then).
    pub fn from_app(traceparent: Option<&HeaderValue>) -> Self {
        traceparent
            .and_then(|v| parse(v.as_bytes()))
            .unwrap_or_else(|| TraceContext {
                trace_id: new_trace_id(),
                parent: None,
                sampled: true,
            })
    }
}

/// A random, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = rand::rng().next_u64().to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A random, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        rand::rng().fill_bytes(&mut id);
        if id != [0; 16] {
            return id;
        }
    }
}

/// `traceparent` naming `span` of `trace` as the parent.
pub fn traceparent(trace: &TraceContext, span: [u8; 8]) -> HeaderValue {
    let flags = if trace.sampled { "01" } else { "00" };
    let text = format!("00-{}-{}-{flags}", hex(&trace.trace_id), hex(&span));
    HeaderValue::try_from(text).expect("hex digits and dashes are a valid header value")
}

/// Lower-case hex, as W3C and OTLP/JSON write ids.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// A version-00 `traceparent`, or `None` if it is malformed or has an all-zero id. A later
/// version may append fields after the flags (W3C: parse the first four, ignore the rest).
fn parse(v: &[u8]) -> Option<TraceContext> {
    if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let version = unhex::<1>(&v[0..2])?;
    if version == [0xff] || (version == [0] && v.len() != 55) {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let parent = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || parent == [0; 8] {
        return None;
    }
    Some(TraceContext {
        trace_id,
        parent: Some(parent),
        sampled: flags & 1 == 1,
    })
}

/// Lower-case hex only (W3C forbids upper case).
fn unhex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    if s.len() != N * 2 {
        return None;
    }
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_apps_traceparent() {
        let ctx = TraceContext::from_app(Some(&HeaderValue::from_static(APP)));
        assert_eq!(hex(&ctx.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            ctx.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(ctx.sampled);
        let span = [1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            traceparent(&ctx, span),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01"
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let ctx = TraceContext::from_app(Some(&HeaderValue::from_static(bad)));
            assert_eq!(ctx.parent, None, "{bad:?} was accepted");
            assert!(ctx.sampled);
        }
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-comes";
        let ctx = TraceContext::from_app(Some(&HeaderValue::from_static(later)));
        assert!(
            ctx.parent.is_some() && !ctx.sampled,
            "a later version's fields are ignored"
        );
    }

    #[test]
    fn new_ids_are_never_zero() {
        assert_ne!(new_trace_id(), [0; 16]);
        assert_ne!(new_span_id(), [0; 8]);
    }
}
