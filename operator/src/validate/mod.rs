//! `attache-operator validate`: checks manifests the way the API server would at
//! `kubectl apply`, without a cluster.
//!
//! Three layers, in the API server's order:
//! 1. [`metadata`]: the ObjectMeta rules (a valid `metadata.name`, no unknown fields);
//! 2. [`schema`]: the CRD's OpenAPI schema (types, required and unknown fields, ranges,
//!    lengths, patterns, enums), read from the generated CRD itself;
//! 3. [`attache_api::validate_spec`]: the semantic rules that the CRD states as CEL.
//!
//! Layer 3 runs when the spec can be read (an unknown field does not stop it, a wrong type
//! does); a field an earlier layer refused is not named again.

pub mod metadata;
pub mod schema;

use std::fmt;

use attache_api::{validate_spec, ExternalIntegration, FieldError};
use serde_json::Value;

use crate::{
    crd,
    manifests::{Inputs, Origin},
};

pub const GROUP: &str = "attache.dev";
pub const API_VERSION: &str = "attache.dev/v1alpha1";
pub const KIND: &str = "ExternalIntegration";

/// Which object a message is about: `ExternalIntegration payments/stripe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// One document of the inputs that validate had an opinion on.
#[derive(Debug)]
pub struct Checked {
    pub origin: Origin,
    pub resource: Resource,
    pub outcome: Result<Box<ExternalIntegration>, Vec<FieldError>>,
}

/// The result of checking all inputs.
#[derive(Debug, Default)]
pub struct Report {
    /// ExternalIntegrations (valid or not), and documents that cannot be what they claim.
    pub checked: Vec<Checked>,
    /// Documents of other kinds, left alone (a manifest may mix Deployments and integrations).
    pub skipped: usize,
}

// === impl Resource ===

impl Resource {
    fn of(value: &Value) -> Self {
        let s = |p: &str| value.pointer(p).and_then(Value::as_str).map(String::from);
        Self {
            kind: s("/kind"),
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(kind) = &self.kind else {
            return f.write_str("document without a kind");
        };
        match (&self.namespace, &self.name) {
            (Some(ns), Some(name)) => write!(f, "{kind} {ns}/{name}"),
            (None, Some(name)) => write!(f, "{kind} {name}"),
            (_, None) => write!(f, "{kind} without a name"),
        }
    }
}

// === impl Checked ===

impl Checked {
    /// `FILE: ExternalIntegration NS/NAME`, the prefix of every line about this document.
    pub fn subject(&self) -> String {
        format!("{}: {}", self.origin, self.resource)
    }

    pub fn integration(&self) -> Option<&ExternalIntegration> {
        self.outcome.as_deref().ok()
    }
}

// === impl Report ===

impl Report {
    pub fn is_valid(&self) -> bool {
        self.checked.iter().all(|c| c.outcome.is_ok())
    }

    /// The valid integrations, with where they came from.
    pub fn integrations(&self) -> impl Iterator<Item = (&Checked, &ExternalIntegration)> {
        self.checked
            .iter()
            .filter_map(|c| c.integration().map(|x| (c, x)))
    }

    /// One line per problem: `FILE: ExternalIntegration NS/NAME: FIELD: MESSAGE`.
    pub fn problems(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for c in &self.checked {
            if let Err(errs) = &c.outcome {
                lines.extend(errs.iter().map(|e| format!("{}: {e}", c.subject())));
            }
        }
        lines
    }
}

/// Checks every document of the inputs that is, or claims to be, an ExternalIntegration.
pub fn check_inputs(inputs: &Inputs) -> Report {
    let mut report = Report::default();
    for doc in &inputs.documents {
        let origin = inputs.origin(doc);
        let resource = Resource::of(&doc.value);
        let outcome = match (doc.value.is_object(), doc.kind(), doc.api_version()) {
            (false, ..) => Err(vec![FieldError {
                field: "kind".into(),
                message: "not a Kubernetes object: expected a mapping with apiVersion and kind"
                    .into(),
            }]),
            (true, Some(KIND), _) => check_document(&doc.value).map(Box::new),
            (true, Some(kind), Some(v)) if v.split('/').next() == Some(GROUP) => {
                Err(vec![FieldError {
                    field: "kind".into(),
                    message: format!("{kind:?} is not a kind of {GROUP}: did you mean {KIND}?"),
                }])
            }
            _ => {
                report.skipped += 1;
                continue;
            }
        };
        report.checked.push(Checked {
            origin,
            resource,
            outcome,
        });
    }
    report
}

/// Checks one ExternalIntegration document; returns it typed when it is valid.
pub fn check_document(value: &Value) -> Result<ExternalIntegration, Vec<FieldError>> {
    let mut value = value.clone();
    let mut errs = Vec::new();
    match value.get("apiVersion") {
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(v) => errs.push(FieldError {
            field: "apiVersion".into(),
            message: format!("must be {API_VERSION} (is {v})"),
        }),
        None => errs.push(FieldError {
            field: "apiVersion".into(),
            message: format!("required field is missing (use {API_VERSION})"),
        }),
    }
    errs.extend(metadata::check(value.get("metadata")));
    // The schema covers the body; the API server handles the type and object metadata itself
    // (checked above), so they are set aside while the body is checked.
    let mut header = serde_json::Map::new();
    if let Some(map) = value.as_object_mut() {
        for key in ["apiVersion", "kind", "metadata"] {
            if let Some(v) = map.remove(key) {
                header.insert(key.into(), v);
            }
        }
    }
    errs.extend(schema::check(crd::openapi_schema(), "", &mut value));
    if let Some(map) = value.as_object_mut() {
        map.extend(header);
    }
    let xint = match serde_json::from_value::<ExternalIntegration>(value) {
        Ok(xint) => xint,
        // A spec of the wrong shape cannot be read: the shape's problems say why.
        Err(_) if !errs.is_empty() => return Err(errs),
        Err(e) => {
            return Err(vec![FieldError {
                field: "spec".into(),
                message: format!("cannot be read: {e}"),
            }])
        }
    };
    // The semantic rules too, so that one run names everything to fix; a field the schema
    // already refused is named once.
    let semantic: Vec<FieldError> = validate_spec(&xint.spec)
        .into_iter()
        .filter(|e| !errs.iter().any(|s| same_or_inside(&e.field, &s.field)))
        .collect();
    errs.extend(semantic);
    if errs.is_empty() {
        Ok(xint)
    } else {
        Err(errs)
    }
}

/// Whether `field` is `other` or a field inside it (`spec.retry.retryOn[0]` is inside
/// `spec.retry`), or the reverse.
fn same_or_inside(field: &str, other: &str) -> bool {
    let inside = |a: &str, b: &str| {
        a.strip_prefix(b)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    };
    inside(field, other) || inside(other, field)
}

#[cfg(test)]
mod tests;
