//! Header hygiene between the app and the third party.

use http::{header, HeaderMap, HeaderName};

/// Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection and must not be forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// (`Transfer-Encoding` is handled by hyper, which re-frames bodies itself.)
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Almost no request or response carries one: a single pass over the names (no hashing, no
    // allocation) settles the common case; both directions of every request come through here.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Remove only what is there (one hash each), not the whole list: `Connection: keep-alive`
    // alone is common (Python requests, many SDKs) and must not cost nine lookups.
    let mut doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    doomed.extend(
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::try_from(t.trim()).ok()),
    );
    for h in doomed {
        headers.remove(h);
    }
}

/// A header that never crosses the proxy. Headers that `Connection` names are only found by
/// reading it, and `Connection` itself is in this set, so the fast path never misses them.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::TRANSFER_ENCODING || HOP_BY_HOP.contains(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_standard_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::PROXY_AUTHORIZATION, "Basic abc".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in HOP_BY_HOP.iter().chain([&header::TRANSFER_ENCODING]) {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), "x".parse().unwrap());
            h.insert(header::ACCEPT, "*/*".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(name), "{name} survived");
            assert_eq!(h.len(), 1, "{name}: an end-to-end header was lost");
        }
    }

    #[test]
    fn end_to_end_headers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer k".parse().unwrap());
        h.append("x-multi", "1".parse().unwrap());
        h.append("x-multi", "2".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }
}
