//! The usage reader of LLM answers: whatever bytes a provider streams (server-sent events or
//! JSON), in whatever chunks they arrive, reading never panics, and the usage it finds does
//! not depend on where the chunks were cut.
#![no_main]
#![forbid(unsafe_code)]

use attache_sidecar::llm::usage::{Reader, Usage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the content type (low bit) and the chunk length (1-64); the rest is the body.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let content_type = if pick & 1 == 0 {
        "text/event-stream; charset=utf-8"
    } else {
        "application/json"
    };
    let read = |chunk: usize| {
        let mut reader = Reader::for_content_type(content_type).expect("a usage-carrying type");
        let mut usage = Usage::default();
        for piece in body.chunks(chunk) {
            reader.feed(piece, &mut usage);
        }
        reader.finish(&mut usage);
        usage
    };
    let whole = read(body.len().max(1));
    let chunked = read(usize::from(pick >> 2).max(1));
    assert_eq!(whole, chunked, "the chunk boundaries changed what was read");
    let _ = whole.total();
});
