//! Counting an LLM answer's tokens while it streams to the app: each chunk is handed on at
//! once and only scanned (see `usage`); when the body ends, or the app goes away mid-stream,
//! what was reported is counted and the request's token charge is settled with it.

use attache_api::spec::LlmProvider;

use super::usage::{Reader, Usage};
use crate::{integration::Integration, resilience::tokens::Charge};

/// The token accounting of one response body.
pub struct Meter {
    reader: Option<Reader>,
    usage: Usage,
    charge: Option<Charge>,
    provider: LlmProvider,
    done: bool,
}

impl Meter {
    /// A meter for a successful answer of type `content_type`; `charge` is what the request
    /// was admitted against, if the integration has a budget.
    pub fn new(provider: LlmProvider, content_type: Option<&str>, charge: Option<Charge>) -> Self {
        Self {
            reader: content_type.and_then(Reader::for_content_type),
            usage: Usage::default(),
            charge,
            provider,
            done: false,
        }
    }

    /// The next bytes of the body, on their way to the app.
    pub fn feed(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.reader {
            r.feed(bytes, &mut self.usage);
        }
    }

    /// The body ended, failed or was dropped: counts what was reported (a stream the app
    /// aborted still counts what arrived) and settles the charge. Runs once.
    pub fn finish(&mut self, ig: &Integration) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(r) = &mut self.reader {
            r.finish(&mut self.usage);
        }
        let u = &self.usage;
        if u.reported() {
            ig.metrics.llm_tokens(
                u.model.as_deref(),
                u.input.unwrap_or(0),
                u.output.unwrap_or(0),
            );
        } else {
            tracing::debug!(integration = %ig.name, provider = ?self.provider,
                "LLM answer without a usage report: its estimate stays charged");
        }
        match self.charge.take() {
            Some(c) if u.reported() => c.settle(u.total()),
            // The provider worked, but did not say how much: the estimate is the charge.
            Some(c) => c.keep(),
            None => {}
        }
    }
}
