//! The trust boundary toward the third party for trace headers (README,
//! `spec.telemetry.propagateTraceContext`). An app's `traceparent` and `tracestate` tell the
//! third party which internal services a call went through, and W3C Baggage must not cross a
//! trust boundary at all; no service mesh removes them. So by default none of them is
//! forwarded. With `propagateTraceContext: true` the third party gets a `traceparent` whose
//! parent is the sidecar's attempt span (set per attempt, see `proxy/attempt.rs`) and the
//! app's `tracestate`; `baggage` is never forwarded (it is not trace context).

use http::{HeaderMap, HeaderName};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
pub const BAGGAGE: HeaderName = HeaderName::from_static("baggage");

/// Removes the app's trace headers from a request bound for the third party; with
/// `propagate`, keeps `tracestate` (the sidecar sets its own `traceparent` per attempt).
pub fn strip(headers: &mut HeaderMap, propagate: bool) {
    // Most requests carry none: one pass over the names settles that without hashing.
    if !headers
        .keys()
        .any(|n| n == TRACEPARENT || n == BAGGAGE || n == TRACESTATE)
    {
        return;
    }
    headers.remove(TRACEPARENT);
    headers.remove(BAGGAGE);
    if !propagate {
        headers.remove(TRACESTATE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trace_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert(TRACESTATE, "vendor=opaque".parse().unwrap());
        h.append(BAGGAGE, "user=alice".parse().unwrap());
        h.append(BAGGAGE, "tenant=acme".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        h
    }

    #[test]
    fn nothing_crosses_by_default() {
        let mut h = with_trace_headers();
        strip(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn propagation_keeps_tracestate_only() {
        let mut h = with_trace_headers();
        strip(&mut h, true);
        assert_eq!(h.len(), 2);
        assert_eq!(h[TRACESTATE], "vendor=opaque");
        assert!(!h.contains_key(BAGGAGE) && !h.contains_key(TRACEPARENT));
    }
}
