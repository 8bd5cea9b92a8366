//! The `GlobalRateLimit` condition: which backend a `scope: global` limit is expected to use,
//! as far as the operator can see. Pure, for the status tests.

use attache_api::{
    spec::{Condition, RateLimitScope},
    ExternalIntegrationSpec, ExternalIntegrationStatus,
};

use super::{GlobalLimits, Reachability};
use crate::controller::status::Observed;

pub const GLOBAL_RATE_LIMIT: &str = "GlobalRateLimit";

/// True when `spec` has a `scope: global` rate limit.
pub fn applies(spec: &ExternalIntegrationSpec) -> bool {
    spec.rate_limit
        .as_ref()
        .is_some_and(|r| r.scope == Some(RateLimitScope::Global))
}

/// Puts the `GlobalRateLimit` condition into `status` (after `Ready`), or removes it when the
/// limit is not global.
pub fn apply(
    status: &mut ExternalIntegrationStatus,
    spec: &ExternalIntegrationSpec,
    global: &GlobalLimits,
    observed: &Observed<'_>,
) {
    let at = status
        .conditions
        .iter()
        .position(|c| c.type_ == GLOBAL_RATE_LIMIT);
    let previous = at.map(|i| status.conditions.remove(i));
    if !applies(spec) {
        return;
    }
    let now = crate::controller::status::rfc3339(observed.now.as_second());
    status.conditions.push(for_reachability(
        global.reachability(),
        global.redis.as_ref().map(|r| r.url()),
        &now,
        previous.as_ref(),
        observed.generation,
    ));
}

/// The condition for what the operator's check found; the transition time is kept while the
/// status stays the same.
pub fn for_reachability(
    r: Reachability,
    url: Option<&str>,
    now_rfc3339: &str,
    previous: Option<&Condition>,
    generation: Option<i64>,
) -> Condition {
    let url = url.unwrap_or("-");
    let (status, reason, message) = match r {
        Reachability::Answers => (
            "True",
            "Redis",
            format!("Redis {url} answers the operator's checks: sidecars share one exact bucket"),
        ),
        Reachability::Unknown => (
            "Unknown",
            "Checking",
            format!("the operator has not reached Redis {url} yet"),
        ),
        Reachability::Unreachable => (
            "False",
            "SharedSplit",
            format!(
                "Redis {url} does not answer the operator: sidecars that cannot reach it either \
                 use the shared split (attache_rate_limit_backend says which)"
            ),
        ),
        Reachability::NotConfigured => (
            "False",
            "NoRedis",
            "the operator has no --redis-url (Helm globalRateLimits.redis.url): sidecars use the \
             shared split"
                .to_string(),
        ),
    };
    let last_transition_time = match previous {
        Some(p) if p.status == status && p.last_transition_time.is_some() => {
            p.last_transition_time.clone()
        }
        _ => Some(now_rfc3339.to_string()),
    };
    Condition {
        type_: GLOBAL_RATE_LIMIT.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time,
        observed_generation: generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_which_backend_and_keeps_the_transition_time_while_unchanged() {
        let c = for_reachability(
            Reachability::Answers,
            Some("redis://r:6379"),
            "T1",
            None,
            Some(2),
        );
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some("Redis"))
        );
        let same = for_reachability(
            Reachability::Answers,
            Some("redis://r:6379"),
            "T2",
            Some(&c),
            Some(3),
        );
        assert_eq!(same.last_transition_time.as_deref(), Some("T1"));
        let down = for_reachability(
            Reachability::Unreachable,
            Some("redis://r:6379"),
            "T3",
            Some(&same),
            Some(3),
        );
        assert_eq!(
            (down.status.as_str(), down.reason.as_deref()),
            ("False", Some("SharedSplit"))
        );
        assert_eq!(down.last_transition_time.as_deref(), Some("T3"));
        let none = for_reachability(Reachability::NotConfigured, None, "T4", None, None);
        assert_eq!(none.reason.as_deref(), Some("NoRedis"));
    }
}
