//! LLM APIs as third parties (`spec.llm`): token usage read from answers as they stream
//! (`usage`, `meter`), the estimate a request is admitted against by the token budget
//! (`estimate`; the budget itself is a policy, `resilience::tokens`), and the providers'
//! limit headers as backpressure (`limits`).

pub mod estimate;
pub mod limits;
pub mod meter;
pub mod usage;

use tokio::time::Instant;

use crate::{
    integration::Integration,
    resilience::{
        ratelimit::RateLimitAction,
        replay::RequestBody,
        tokens::{Charge, OverBudget},
    },
};

/// The tokens a request is estimated to use, when the integration has a token budget.
pub fn estimate_for(ig: &Integration, body: &RequestBody) -> Option<u64> {
    let llm = ig
        .config
        .llm
        .as_ref()
        .filter(|_| ig.policies.tokens.is_some())?;
    Some(estimate::estimate(
        body.buffered(),
        body.declared_len(),
        llm.default_max_tokens,
    ))
}

/// Admits a request against the integration's token budget, if it has one: the charge is
/// settled when the answer's usage is known. Waits (or refuses) as `onLimit` says, never past
/// `deadline`.
pub async fn admit(
    ig: &Integration,
    estimate: Option<u64>,
    deadline: Instant,
) -> Result<Option<Charge>, OverBudget> {
    let (Some(budget), Some(estimate)) = (&ig.policies.tokens, estimate) else {
        return Ok(None);
    };
    let started = Instant::now();
    match budget.admit(estimate, deadline).await {
        Ok(charge) => {
            if started.elapsed() > std::time::Duration::from_millis(1) {
                ig.metrics.rate_limited(RateLimitAction::Queued);
            }
            Ok(Some(charge))
        }
        Err(e) => {
            ig.metrics.rate_limited(if e.queued {
                RateLimitAction::TimedOut
            } else {
                RateLimitAction::Rejected
            });
            Err(e)
        }
    }
}
