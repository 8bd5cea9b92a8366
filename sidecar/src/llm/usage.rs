//! Token usage as LLM providers report it, read from a response as it streams by.
//!
//! Both providers put a `usage` object (and the `model`) in their answers:
//! - OpenAI: chat completions `usage.prompt_tokens` / `completion_tokens`; the Responses API
//!   `usage.input_tokens` / `output_tokens` (streamed: inside `response.completed`'s
//!   `response`); a streamed chat completion carries it in its last chunk when the request
//!   asks `stream_options.include_usage`.
//! - Anthropic: `usage.input_tokens` / `output_tokens` (+ `cache_creation_input_tokens`,
//!   `cache_read_input_tokens`, counted as input); streamed: `message_start` carries
//!   `message.usage` and `message.model`, each `message_delta` the cumulative `usage`.
//!
//! So one reader serves both: later reports replace earlier ones, field by field. Only the
//! events that mention `"usage"` are parsed as JSON; every other byte is only scanned.

use memchr::memmem;
use serde_json::Value;

/// The longest server-sent-events line kept to be looked at; a longer one (a huge chunk of
/// generated text) cannot carry the usage and is skipped without being kept.
const MAX_EVENT_LINE: usize = 256 * 1024;
/// The largest JSON answer kept to read its usage at the end. LLM answers are far smaller;
/// above it the answer still streams, uncounted (and says so in a debug line).
const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// What a response reported so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub model: Option<String>,
    pub input: Option<u64>,
    pub output: Option<u64>,
}

impl Usage {
    /// True once any token count was reported.
    pub fn reported(&self) -> bool {
        self.input.is_some() || self.output.is_some()
    }

    pub fn total(&self) -> u64 {
        self.input
            .unwrap_or(0)
            .saturating_add(self.output.unwrap_or(0))
    }

    /// Reads the usage and model of one JSON document (an answer or one streamed event).
    pub fn read(&mut self, doc: &Value) {
        for holder in [Some(doc), doc.get("message"), doc.get("response")]
            .into_iter()
            .flatten()
        {
            if let Some(model) = holder.get("model").and_then(Value::as_str) {
                self.model = Some(model.to_string());
            }
            if let Some(u) = holder.get("usage").filter(|u| u.is_object()) {
                self.read_usage(u);
            }
        }
    }

    fn read_usage(&mut self, u: &Value) {
        let n = |k: &str| u.get(k).and_then(Value::as_u64);
        let input = n("input_tokens").or_else(|| n("prompt_tokens"));
        if let Some(i) = input {
            let cached = n("cache_creation_input_tokens")
                .unwrap_or(0)
                .saturating_add(n("cache_read_input_tokens").unwrap_or(0));
            self.input = Some(i.saturating_add(cached));
        }
        if let Some(o) = n("output_tokens").or_else(|| n("completion_tokens")) {
            self.output = Some(o);
        }
    }
}

/// How a response body is read for usage.
pub enum Reader {
    /// `text/event-stream`: line by line, only `data:` lines that mention usage are parsed.
    Events(EventScanner),
    /// A JSON answer, kept (up to a bound) and parsed when it ends.
    Json { kept: Vec<u8>, overflowed: bool },
}

impl Reader {
    /// The reader for a response's `Content-Type`, or `None` when it cannot carry usage.
    pub fn for_content_type(content_type: &str) -> Option<Self> {
        let ct = content_type.trim().to_ascii_lowercase();
        if ct.starts_with("text/event-stream") {
            Some(Reader::Events(EventScanner::default()))
        } else if ct.starts_with("application/json") || ct.contains("+json") {
            Some(Reader::Json {
                kept: Vec::new(),
                overflowed: false,
            })
        } else {
            None
        }
    }

    /// Feeds the next bytes of the body.
    pub fn feed(&mut self, bytes: &[u8], usage: &mut Usage) {
        match self {
            Reader::Events(scanner) => scanner.feed(bytes, usage),
            Reader::Json { kept, overflowed } => {
                if *overflowed || kept.len() + bytes.len() > MAX_JSON_BODY {
                    *overflowed = true;
                    kept.clear();
                } else {
                    kept.extend_from_slice(bytes);
                }
            }
        }
    }

    /// The body ended: reads what was kept.
    pub fn finish(&mut self, usage: &mut Usage) {
        match self {
            Reader::Events(scanner) => scanner.finish(usage),
            Reader::Json { kept, overflowed } => {
                if *overflowed {
                    tracing::debug!(
                        "LLM answer larger than {MAX_JSON_BODY} bytes: usage not counted"
                    );
                } else if let Ok(doc) = serde_json::from_slice::<Value>(kept) {
                    usage.read(&doc);
                }
                kept.clear();
            }
        }
    }
}

/// Splits a server-sent-events stream into lines across chunk boundaries.
#[derive(Default)]
pub struct EventScanner {
    line: Vec<u8>,
    /// The current line outgrew [`MAX_EVENT_LINE`]: ignore it up to its end.
    skipping: bool,
}

impl EventScanner {
    pub fn feed(&mut self, mut bytes: &[u8], usage: &mut Usage) {
        while let Some(end) = memchr::memchr(b'\n', bytes) {
            let (head, rest) = bytes.split_at(end);
            if !self.skipping {
                if self.line.is_empty() {
                    event_line(head, usage);
                } else {
                    self.line.extend_from_slice(head);
                    event_line(&self.line, usage);
                }
            }
            self.line.clear();
            self.skipping = false;
            bytes = &rest[1..];
        }
        if self.skipping || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > MAX_EVENT_LINE {
            self.line.clear();
            self.skipping = true;
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// A last line without a newline.
    pub fn finish(&mut self, usage: &mut Usage) {
        if !self.skipping && !self.line.is_empty() {
            event_line(&self.line, usage);
        }
        self.line.clear();
    }
}

/// One line of an event stream: a `data:` line that mentions usage is parsed.
fn event_line(line: &[u8], usage: &mut Usage) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(data) = line.strip_prefix(b"data:") else {
        return;
    };
    if memmem::find(data, b"\"usage\"").is_none() {
        return;
    }
    if let Ok(doc) = serde_json::from_slice::<Value>(data) {
        usage.read(&doc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_events(chunks: &[&str]) -> Usage {
        let mut usage = Usage::default();
        let mut reader = Reader::for_content_type("text/event-stream; charset=utf-8").unwrap();
        for c in chunks {
            reader.feed(c.as_bytes(), &mut usage);
        }
        reader.finish(&mut usage);
        usage
    }

    #[test]
    fn openai_chat_completion_json() {
        let mut u = Usage::default();
        u.read(&json!({"id": "chatcmpl-1", "model": "gpt-4o-2024-08-06",
            "choices": [{"message": {"content": "hi"}}],
            "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29}}));
        assert_eq!(u.model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!((u.input, u.output), (Some(19), Some(10)));
    }

    #[test]
    fn anthropic_message_json_counts_cache_tokens_as_input() {
        let mut u = Usage::default();
        u.read(&json!({"type": "message", "model": "claude-sonnet-4-5",
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 5,
                      "cache_read_input_tokens": 20, "output_tokens": 7}}));
        assert_eq!((u.input, u.output), (Some(35), Some(7)));
    }

    #[test]
    fn openai_stream_with_include_usage_split_across_chunks() {
        let u = read_events(&[
            "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\ndata: {\"model\":\"gpt-4o\",\"choi",
            "ces\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2}}\n\n",
            "data: [DONE]\n\n",
        ]);
        assert_eq!(u.model.as_deref(), Some("gpt-4o"));
        assert_eq!((u.input, u.output), (Some(12), Some(2)));
    }

    #[test]
    fn anthropic_stream_takes_the_last_cumulative_output() {
        let u = read_events(&[
            "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-3-haiku\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}",
        ]);
        assert_eq!(u.model.as_deref(), Some("claude-3-haiku"));
        assert_eq!((u.input, u.output), (Some(25), Some(15)));
    }

    #[test]
    fn responses_api_completed_event() {
        let u = read_events(&["event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-5\",\"usage\":{\"input_tokens\":3,\"output_tokens\":4}}}\n\n"]);
        assert_eq!(
            (u.model.as_deref(), u.input, u.output),
            (Some("gpt-5"), Some(3), Some(4))
        );
    }

    #[test]
    fn a_huge_line_is_skipped_and_the_next_one_still_read() {
        let huge = format!("data: {{\"text\":\"{}\"}}", "x".repeat(MAX_EVENT_LINE + 10));
        let u = read_events(&[
            &huge[..1000],
            &huge[1000..],
            "\ndata: {\"usage\":{\"output_tokens\":3}}\n",
        ]);
        assert_eq!(u.output, Some(3));
    }

    #[test]
    fn text_in_an_event_that_says_usage_without_being_json_is_ignored() {
        let u = read_events(&["data: the word \"usage\" in plain text\n\n"]);
        assert!(!u.reported());
    }

    #[test]
    fn json_answers_are_read_at_the_end_and_other_types_not_at_all() {
        let mut u = Usage::default();
        let mut r = Reader::for_content_type("application/json").unwrap();
        let body =
            json!({"model": "m", "usage": {"input_tokens": 1, "output_tokens": 2}}).to_string();
        let (a, b) = body.as_bytes().split_at(7);
        r.feed(a, &mut u);
        assert!(!u.reported());
        r.feed(b, &mut u);
        r.finish(&mut u);
        assert_eq!(u.total(), 3);
        assert!(Reader::for_content_type("text/plain").is_none());
        assert!(Reader::for_content_type("application/problem+json").is_some());
    }
}
