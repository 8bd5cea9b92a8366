//! `metadata` checks: the CRD's schema says only `type: object` there, because the API server
//! validates ObjectMeta itself. These are the checks it makes that a manifest can fail.

use attache_api::{
    names::{dns_label, dns_subdomain},
    FieldError,
};
use serde_json::Value;

/// ObjectMeta fields a manifest may carry; anything else is an unknown field.
const KNOWN: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "finalizers",
    "ownerReferences",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Problems of a document's `metadata`.
pub fn check(metadata: Option<&Value>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut push = |field: &str, message: String| {
        errs.push(FieldError {
            field: field.into(),
            message,
        })
    };
    let Some(meta) = metadata else {
        push("metadata.name", "required field is missing".into());
        return errs;
    };
    let Some(meta) = meta.as_object() else {
        push("metadata", "must be an object".into());
        return errs;
    };
    for key in meta.keys().filter(|k| !KNOWN.contains(&k.as_str())) {
        push(&format!("metadata.{key}"), "unknown field".into());
    }
    match (meta.get("name"), meta.get("generateName")) {
        (Some(Value::String(name)), _) => {
            if let Err(why) = dns_subdomain(name) {
                push(
                    "metadata.name",
                    format!("{name:?} is not a valid name: {why}"),
                );
            }
        }
        (Some(_), _) => push("metadata.name", "must be a string".into()),
        (None, Some(Value::String(_))) => {}
        (None, _) => push("metadata.name", "required field is missing".into()),
    }
    match meta.get("namespace") {
        None => {}
        Some(Value::String(ns)) => {
            if let Err(why) = dns_label(ns) {
                push(
                    "metadata.namespace",
                    format!("{ns:?} is not a valid namespace: {why}"),
                );
            }
        }
        Some(_) => push("metadata.namespace", "must be a string".into()),
    }
    for map in ["labels", "annotations"] {
        match meta.get(map) {
            None => {}
            Some(Value::Object(m)) => {
                for (k, v) in m.iter().filter(|(_, v)| !v.is_string()) {
                    push(
                        &format!("metadata.{map}.{k}"),
                        format!("must be a string, not {v} (quote it)"),
                    );
                }
            }
            Some(_) => push(
                &format!("metadata.{map}"),
                "must be a map of strings".into(),
            ),
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn errs(v: Value) -> Vec<String> {
        check(Some(&v)).into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn reports_each_problem_by_field() {
        assert_eq!(
            check(None)[0].to_string(),
            "metadata.name: required field is missing"
        );
        assert!(errs(json!({"generateName": "x-"})).is_empty());
        assert_eq!(
            errs(json!({
                "name": "Stripe", "namespace": "a.b", "lables": {},
                "labels": {"tier": 1}, "annotations": "x"
            })),
            [
                "metadata.lables: unknown field",
                "metadata.name: \"Stripe\" is not a valid name: use lower case letters, digits, '-' and '.', starting and ending with a letter or digit",
                "metadata.namespace: \"a.b\" is not a valid namespace: use lower case letters, digits and '-', starting and ending with a letter or digit",
                "metadata.labels.tier: must be a string, not 1 (quote it)",
                "metadata.annotations: must be a map of strings",
            ]
        );
    }
}
