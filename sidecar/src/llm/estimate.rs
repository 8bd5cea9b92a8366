//! The token estimate a request is admitted against: its input, guessed from the size of its
//! body (about four bytes per token in English text and JSON), plus the output it allows
//! itself (`max_tokens`, `max_completion_tokens` or `max_output_tokens`) or the configured
//! default. The estimate only has to be in the right range: the budget is settled with the
//! real usage once the answer says it.

use serde_json::Value;

/// Bytes of request per input token, a common rule of thumb for BPE tokenizers.
const BYTES_PER_TOKEN: u64 = 4;

/// The estimate for a request whose body is `body` (`None`: too large to have been kept, so
/// only its declared length, if any, is known).
pub fn estimate(body: Option<&[u8]>, declared_len: Option<u64>, default_max_tokens: u32) -> u64 {
    let Some(body) = body else {
        let input = declared_len.unwrap_or(0) / BYTES_PER_TOKEN;
        return input.saturating_add(u64::from(default_max_tokens));
    };
    let input = body.len() as u64 / BYTES_PER_TOKEN;
    let output = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|doc| max_output(&doc))
        .unwrap_or(u64::from(default_max_tokens));
    input.saturating_add(output)
}

/// The output limit a request sets itself, under any of the providers' names.
fn max_output(doc: &Value) -> Option<u64> {
    ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .find_map(|k| doc.get(*k).and_then(Value::as_u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requests_own_output_limit_counts_under_each_name() {
        for key in ["max_tokens", "max_completion_tokens", "max_output_tokens"] {
            let body = format!(r#"{{"model":"m","{key}":500,"messages":[]}}"#);
            let input = body.len() as u64 / 4;
            assert_eq!(
                estimate(Some(body.as_bytes()), None, 1024),
                input + 500,
                "{key}"
            );
        }
    }

    #[test]
    fn without_a_limit_the_default_is_used() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hello there"}]}"#;
        assert_eq!(estimate(Some(body), None, 256), body.len() as u64 / 4 + 256);
        assert_eq!(estimate(Some(b"not json"), None, 256), 2 + 256);
    }

    #[test]
    fn a_streamed_body_is_estimated_from_its_declared_length() {
        assert_eq!(estimate(None, Some(400_000), 1000), 101_000);
        assert_eq!(estimate(None, None, 1000), 1000);
    }
}
