//! What a stored answer really costs in memory, and copies that make that cost its own.
//!
//! hyper hands out header values (and body chunks) as slices of its connection read buffer:
//! keeping one such slice keeps the whole buffer (8 KiB or more) alive. A cache that stored
//! them as they come would hold many times the bytes it counts, so everything an entry keeps
//! is first copied into allocations of its own ([`owned_headers`], [`owned_body`]), and the
//! entry's size is counted from what those copies and their containers allocate
//! ([`header_map_bytes`]). `sidecar/tests/cache_memory.rs` checks the count against the
//! allocator's.

use std::mem::size_of;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

/// What the allocator adds to each allocation (glibc: an 8-byte header, 16-byte alignment).
pub const ALLOCATION_OVERHEAD: usize = 16;

/// One slot of a `HeaderMap`'s entry vector: name, value, hash and the links to extra values.
const HEADER_BUCKET: usize = size_of::<HeaderName>() + size_of::<HeaderValue>() + 24;

/// A `Bytes` copied from a slice owns a boxed slice; its first clone (the policy keeps a
/// clone of the stored headers) adds a shared block: pointer, capacity and reference count.
const SHARED_BLOCK: usize = 3 * size_of::<usize>() + ALLOCATION_OVERHEAD;

/// A copy of `headers` whose names and values own their bytes, sized to fit.
pub fn owned_headers(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// The body in an allocation of exactly its length.
pub fn owned_body(body: Vec<u8>) -> Bytes {
    if body.capacity() == body.len() {
        Bytes::from(body)
    } else {
        Bytes::copy_from_slice(&body)
    }
}

/// Heap bytes of a header map built by [`owned_headers`] (or cloned from one): its index and
/// entry tables, plus each value's own allocation.
pub fn header_map_bytes(headers: &HeaderMap) -> usize {
    header_table_bytes(headers) + header_value_bytes(headers)
}

/// The index and entry tables of a header map, without the values they point to (a clone of
/// an owned map shares its values' bytes, but not its tables).
pub fn header_table_bytes(headers: &HeaderMap) -> usize {
    if headers.capacity() == 0 {
        return 0;
    }
    // The index table has a power-of-two number of 4-byte slots, at most 3/4 used.
    let slots = (headers.capacity() * 4 / 3).next_power_of_two();
    slots * 4 + headers.capacity() * HEADER_BUCKET + 2 * ALLOCATION_OVERHEAD
}

/// The values' (and non-standard names') own allocations.
pub fn header_value_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| {
            let name = if is_standard(name) {
                0
            } else {
                name.as_str().len() + ALLOCATION_OVERHEAD + SHARED_BLOCK
            };
            name + value.len() + ALLOCATION_OVERHEAD + SHARED_BLOCK
        })
        .sum()
}

/// Whether `name` is one of the names `http` keeps as a constant (no allocation).
fn is_standard(name: &HeaderName) -> bool {
    HeaderName::from_bytes(name.as_str().as_bytes())
        .map(|n| n == *name && std::ptr::eq(n.as_str(), name.as_str()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_headers_keep_every_value_and_no_slice_of_the_source() {
        let buffer = Bytes::from(vec![b'x'; 16 * 1024]);
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        headers.append("x-a", value.clone());
        headers.append("x-a", HeaderValue::from_static("second"));
        let mut secret = HeaderValue::from_static("s3cr3t");
        secret.set_sensitive(true);
        headers.insert(http::header::AUTHORIZATION, secret);

        let owned = owned_headers(&headers);
        assert_eq!(owned, headers);
        assert!(owned[http::header::AUTHORIZATION].is_sensitive());
        let copied = owned.get("x-a").unwrap().as_bytes();
        assert_ne!(
            copied.as_ptr(),
            buffer.as_ptr(),
            "the value still points into the buffer"
        );
    }

    #[test]
    fn a_body_with_spare_capacity_is_copied_to_its_length() {
        let mut v = Vec::with_capacity(4096);
        v.extend_from_slice(b"small");
        let b = owned_body(v);
        assert_eq!(&b[..], b"small");
    }
}
