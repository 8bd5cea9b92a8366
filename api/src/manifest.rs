//! Reading ExternalIntegrations from YAML files (multi-document, other kinds skipped).
//!
//! As strict as the API server (README, "Local mode"): a field the
//! type does not know is an error naming it, never silently ignored (a misspelt
//! `maxAtempts` would otherwise serve the default, a mis-indented `apiKey` no credentials at
//! all); `metadata.name` and `metadata.namespace` follow Kubernetes' naming rules; and every
//! problem of a document is reported at once.

use serde::Deserialize;

use crate::{names, spec::ExternalIntegration, validate::validate_spec};

/// A document that could not be read as an ExternalIntegration.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{source_name}: not valid YAML: {message}")]
    Yaml {
        source_name: String,
        message: String,
    },
    #[error("{source_name}: document {index}: ExternalIntegration {name:?}: {message}")]
    Invalid {
        source_name: String,
        index: usize,
        name: String,
        message: String,
    },
    #[error(
        "{source_name}: document {index}: apiVersion {api_version:?} is not attache.dev/v1alpha1"
    )]
    WrongVersion {
        source_name: String,
        index: usize,
        api_version: String,
    },
    /// Several documents with problems, one line each.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ManifestError>),
}

// === impl ManifestError ===

impl ManifestError {
    /// Each document's problem on its own (one, unless this is [`ManifestError::Several`]).
    pub fn into_problems(self) -> Vec<ManifestError> {
        match self {
            ManifestError::Several(list) => list,
            one => vec![one],
        }
    }
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Kubernetes' rules for the names of a document (checked before its fields are read).
fn document_problems(doc: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    match doc.pointer("/metadata/name") {
        None => out.push("metadata.name: must be set".to_string()),
        Some(serde_json::Value::String(name)) => {
            if let Err(why) = names::dns_subdomain(name) {
                out.push(format!("metadata.name: {why}"));
            }
        }
        Some(_) => {}
    }
    if let Some(serde_json::Value::String(ns)) = doc.pointer("/metadata/namespace") {
        if let Err(why) = names::dns_label(ns) {
            out.push(format!("metadata.namespace: {why}"));
        }
    }
    out
}

/// All ExternalIntegrations in `text`; documents of other kinds are skipped.
pub fn parse_integrations(
    source_name: &str,
    text: &str,
) -> Result<Vec<ExternalIntegration>, ManifestError> {
    let (out, mut errors) = read_integrations(source_name, text);
    match errors.len() {
        0 => Ok(out),
        1 => Err(errors.remove(0)),
        _ => Err(ManifestError::Several(errors)),
    }
}

/// The ExternalIntegrations of `text` that can be read, and the problems of the documents that
/// cannot, one per document: a reader that goes on with the good ones (to find their missing
/// Secrets, say) names everything in one run.
pub fn read_integrations(
    source_name: &str,
    text: &str,
) -> (Vec<ExternalIntegration>, Vec<ManifestError>) {
    let docs: Vec<serde_json::Value> = match serde_saphyr::from_multiple(text) {
        Ok(docs) => docs,
        Err(e) => {
            let e = ManifestError::Yaml {
                source_name: source_name.into(),
                message: e.to_string(),
            };
            return (Vec::new(), vec![e]);
        }
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let tm = match TypeMeta::deserialize(&doc) {
            Ok(tm) => tm,
            Err(e) => {
                errors.push(ManifestError::Yaml {
                    source_name: source_name.into(),
                    message: e.to_string(),
                });
                continue;
            }
        };
        if tm.kind != "ExternalIntegration" {
            continue;
        }
        if !tm.api_version.starts_with("attache.dev/") || tm.api_version != "attache.dev/v1alpha1" {
            errors.push(ManifestError::WrongVersion {
                source_name: source_name.into(),
                index,
                api_version: tm.api_version,
            });
            continue;
        }
        let name = doc
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let problems = document_problems(&doc);
        let invalid = |message: String| ManifestError::Invalid {
            source_name: source_name.into(),
            index,
            name: name.clone(),
            message,
        };
        let mut unknown = Vec::new();
        let parsed: Result<ExternalIntegration, _> =
            serde_ignored::deserialize(doc, |path| unknown.push(path.to_string()));
        let mut all: Vec<String> = problems;
        // apiVersion and kind were checked above; the type skips them on purpose.
        all.extend(
            unknown
                .into_iter()
                // serde_ignored writes `?` for an Option level: not part of the field's path.
                .map(|p| {
                    p.split('.')
                        .filter(|s| *s != "?")
                        .collect::<Vec<_>>()
                        .join(".")
                })
                .filter(|p| p != "apiVersion" && p != "kind")
                .map(|p| format!("{p}: unknown field")),
        );
        match parsed {
            Ok(xint) if all.is_empty() => out.push(xint),
            Ok(xint) => {
                // The spec's own rules too, so one run shows everything to fix.
                all.extend(
                    validate_spec(&xint.spec)
                        .into_iter()
                        .map(|e| format!("{}: {}", e.field, e.message)),
                );
                errors.push(invalid(all.join("; ")));
            }
            Err(e) => {
                all.push(e.to_string());
                errors.push(invalid(all.join("; ")));
            }
        }
    }
    (out, errors)
}
