//! Request preparation: the refusal checks (method, Host, dot-segments), the hop-by-hop strip
//! and the join of the integration's base path with the app's path. Input: a request head
//! (`METHOD PATH\n` then `name: value` lines) and a base path on the first line.
#![no_main]
#![forbid(unsafe_code)]

use attache_sidecar::{
    integration::join_upstream_uri,
    proxy::{headers::strip_hop_by_hop, prepare},
};
use http::{uri::PathAndQuery, HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let base = lines.next().unwrap_or_default();
    let request_line = lines.next().unwrap_or_default();
    let (method, target) = request_line
        .split_once(' ')
        .unwrap_or(("GET", request_line));
    let mut b = Request::builder().method(method).uri(target);
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(n.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                b = b.header(n, v);
            }
        }
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let (mut parts, ()) = req.into_parts();
    let accepted = prepare::check(&parts).is_ok();
    strip_hop_by_hop(&mut parts.headers);
    for name in [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            !parts.headers.contains_key(name),
            "{name} survived the strip"
        );
    }
    let scheme = http::uri::Scheme::HTTPS;
    let authority = http::uri::Authority::from_static("api.example.com");
    let joined = join_upstream_uri(&scheme, &authority, base, parts.uri.path_and_query());
    // A request that passed the checks never climbs out of the base path.
    if let (true, Ok(uri)) = (accepted, joined) {
        let plain_path = base.starts_with('/') && !base.contains(['?', '#']);
        if plain_path && !prepare::has_dot_segment(base) {
            assert!(uri.path().starts_with(base), "{uri} left {base}");
            assert!(!prepare::has_dot_segment(uri.path()), "{uri}");
        }
    }
    let _ = PathAndQuery::try_from(base);
});
