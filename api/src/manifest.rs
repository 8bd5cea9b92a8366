//! Reading ExternalIntegrations from YAML files (multi-document, other kinds skipped).

use serde::Deserialize;

use crate::spec::ExternalIntegration;

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
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// All ExternalIntegrations in `text`; documents of other kinds are returned in `others`.
pub fn parse_integrations(
    source_name: &str,
    text: &str,
) -> Result<Vec<ExternalIntegration>, ManifestError> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
    let mut out = Vec::new();
    for (index, doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let tm = TypeMeta::deserialize(&doc).map_err(|e| ManifestError::Yaml {
            source_name: source_name.into(),
            message: e.to_string(),
        })?;
        if tm.kind != "ExternalIntegration" {
            continue;
        }
        if !tm.api_version.starts_with("attache.dev/") || tm.api_version != "attache.dev/v1alpha1" {
            return Err(ManifestError::WrongVersion {
                source_name: source_name.into(),
                index,
                api_version: tm.api_version,
            });
        }
        let name = doc
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let xint: ExternalIntegration =
            serde_json::from_value(doc).map_err(|e| ManifestError::Invalid {
                source_name: source_name.into(),
                index,
                name,
                message: e.to_string(),
            })?;
        out.push(xint);
    }
    Ok(out)
}
