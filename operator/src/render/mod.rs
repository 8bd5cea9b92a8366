//! `attache-operator render`: per integration, exactly the files its ConfigMap and Secret
//! `attache-NAME` would hold, laid out as the sidecar's `--config-dir` expects
//! (`OUT/NAME/config.json` plus the secret files; see [`attache_api::config`]).
//!
//! The bytes come from [`attache_api::render`], the function the controller uses, so the
//! offline output and the cluster's cannot disagree. Everything is rendered before anything
//! is written: one missing Secret leaves `OUT` untouched. Secrets and ConfigMaps are read from
//! a folder by [`attache_api::fs::DirSecretSource`], as the sidecar's local mode reads them.

pub mod write;

use std::collections::BTreeMap;

use attache_api::{fs::DirSecretSource, render, RenderError, RenderOptions, Rendered};

use crate::validate::Report;

/// One integration, rendered.
#[derive(Debug)]
pub struct Output {
    /// `FILE: ExternalIntegration NS/NAME`, for messages.
    pub subject: String,
    /// `metadata.name`: the folder under `OUT`.
    pub name: String,
    pub rendered: Rendered,
}

/// Renders every valid integration of `report`; on failure, one line per problem of each
/// integration that could not be rendered, naming it, the field and the Secret or key.
pub fn render_all(
    report: &Report,
    source: &DirSecretSource,
    opts: RenderOptions,
) -> Result<Vec<Output>, Vec<String>> {
    let mut outputs = Vec::new();
    let mut failures = Vec::new();
    for (checked, xint) in report.integrations() {
        let subject = checked.subject();
        match render(xint, source, opts) {
            Ok(rendered) => outputs.push(Output {
                subject,
                name: rendered.config.name.clone(),
                rendered,
            }),
            Err(e) => failures.extend(
                e.problems()
                    .into_iter()
                    .map(|p| format!("{subject}: {p}{}", hint(p, source))),
            ),
        }
    }
    failures.extend(duplicate_names(&outputs));
    if failures.is_empty() {
        Ok(outputs)
    } else {
        Err(failures)
    }
}

/// Where the user should have put the missing file.
fn hint(e: &RenderError, source: &DirSecretSource) -> String {
    let dir = |name: &str| source.object_dir(name).map(|d| d.display().to_string());
    match e {
        RenderError::SecretNotFound { name, .. } | RenderError::ConfigMapNotFound { name, .. } => {
            dir(name).map_or_else(String::new, |d| format!(" (expected a directory {d})"))
        }
        RenderError::KeyNotFound { name, key, .. } => {
            dir(name).map_or_else(String::new, |d| format!(" (expected a file {d}/{key})"))
        }
        _ => String::new(),
    }
}

/// `OUT/NAME` holds one integration: two with one name (in two namespaces, say) cannot share it.
fn duplicate_names(outputs: &[Output]) -> Vec<String> {
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for o in outputs {
        by_name.entry(&o.name).or_default().push(&o.subject);
    }
    by_name
        .into_iter()
        .filter(|(_, subjects)| subjects.len() > 1)
        .map(|(name, subjects)| {
            format!(
                "{name:?} is the name of several integrations ({}): one config dir serves one \
                 namespace, render them separately",
                subjects.join("; ")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
