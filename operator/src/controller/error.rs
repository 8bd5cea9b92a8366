//! Why a reconciliation did not end with `Ready=True`: one enum, one metric label per kind.

use attache_api::RenderError;

/// A failed reconciliation. Every variant is retried with backoff ([`super::error_policy`]);
/// those the user has to fix also appear in the status as `Ready=False` with [`Error::reason`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is valid but cannot be served: a referenced Secret or key is missing, a
    /// certificate does not parse, ... The generated objects were left as they were.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// `attache-NAME` would be longer than a Kubernetes object name may be.
    #[error("the generated name {name:?} is longer than {max} characters: shorten metadata.name")]
    NameTooLong { name: String, max: usize },
    /// An object named `attache-NAME` exists and is not controlled by this integration; the
    /// operator does not take over (and, through owner references, delete) what it did not make.
    #[error(
        "{kind} {name:?} exists and is not owned by this ExternalIntegration ({owner}): \
         rename or delete it"
    )]
    NameTaken {
        kind: &'static str,
        name: String,
        owner: String,
    },
    /// The object came without the metadata every stored object has.
    #[error("the ExternalIntegration has no {0}")]
    MissingMetadata(&'static str),
    /// A call to the API server failed.
    #[error("{verb} {what}: {source}")]
    Api {
        verb: ApiVerb,
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// The writes a reconciliation makes, for [`Error::Api`]'s message and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVerb {
    /// Server-side apply of a generated object.
    Apply,
    /// Server-side apply of an integration's status subresource.
    ApplyStatus,
}

// === impl ApiVerb ===

impl std::fmt::Display for ApiVerb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiVerb::Apply => "apply",
            ApiVerb::ApplyStatus => "apply status of",
        })
    }
}

// === impl Error ===

/// The metric label of a render failure (the first problem's, for several).
fn render_label(e: &RenderError) -> &'static str {
    match e {
        RenderError::Invalid(_) => "invalid_spec",
        RenderError::SecretNotFound { .. } => "secret_not_found",
        RenderError::ConfigMapNotFound { .. } => "config_map_not_found",
        RenderError::KeyNotFound { .. } => "key_not_found",
        RenderError::CertificateInvalid { .. } => "certificate_invalid",
        RenderError::EmptyCredential { .. } => "empty_credential",
        RenderError::SourceUnavailable { .. } => "secret_unavailable",
        RenderError::Several(list) => list.first().map_or("invalid_spec", render_label),
    }
}

impl Error {
    /// The `result` label of `attache_operator_reconciliations_total`: a small, fixed set.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Render(e) => render_label(e),
            Error::NameTooLong { .. } => "name_too_long",
            Error::NameTaken { .. } => "name_taken",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Api { verb, .. } => match verb {
                ApiVerb::Apply => "api_apply",
                ApiVerb::ApplyStatus => "api_status",
            },
        }
    }

    /// The `Ready=False` reason, when the user can act on it; API failures are not reported
    /// in the status (writing it would likely fail the same way).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Error::Render(e) => Some(e.reason()),
            Error::NameTooLong { .. } => Some("InvalidName"),
            Error::NameTaken { .. } => Some("NameTaken"),
            Error::MissingMetadata(_) | Error::Api { .. } => None,
        }
    }

    /// Whether waiting for the user (or another object) is what fixes it, so retries can be
    /// spaced out: the watches trigger a reconciliation as soon as something changes anyway.
    pub fn waits_for_user(&self) -> bool {
        self.reason().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_render_reasons() {
        let e = Error::Render(RenderError::SecretNotFound {
            field: "spec.auth.apiKey.secretKeyRef".into(),
            name: "stripe-key".into(),
        });
        assert_eq!(e.metric_label(), "secret_not_found");
        assert_eq!(e.reason(), Some("SecretNotFound"));
        assert!(e.waits_for_user());
        assert_eq!(
            e.to_string(),
            "spec.auth.apiKey.secretKeyRef: Secret \"stripe-key\" not found"
        );
    }

    #[test]
    fn api_errors_are_transient() {
        let e = Error::Api {
            verb: ApiVerb::Apply,
            what: "ConfigMap payments/attache-stripe".into(),
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        };
        assert_eq!(e.metric_label(), "api_apply");
        assert_eq!(e.reason(), None);
        assert!(!e.waits_for_user());
        let e = Error::Api {
            verb: ApiVerb::ApplyStatus,
            what: "ExternalIntegration payments/stripe".into(),
            source: kube::Error::LinesCodecMaxLineLengthExceeded,
        };
        assert_eq!(e.metric_label(), "api_status");
        assert!(
            e.to_string()
                .starts_with("apply status of ExternalIntegration payments/stripe: "),
            "{e}"
        );
    }
}
