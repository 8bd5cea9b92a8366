use serde_json::json;

use super::*;

fn schema(v: Value) -> JSONSchemaProps {
    serde_json::from_value(v).unwrap()
}

fn errors(s: &JSONSchemaProps, mut v: Value) -> Vec<String> {
    check(s, "spec", &mut v)
        .into_iter()
        .map(|e| e.to_string())
        .collect()
}

#[test]
fn objects_report_missing_and_unknown_fields() {
    let s = schema(json!({
        "type": "object",
        "required": ["url"],
        "properties": {"url": {"type": "string"}, "allowInsecure": {"type": "boolean"}}
    }));
    assert_eq!(
        errors(&s, json!({"urll": "x"})),
        [
            "spec.url: required field is missing",
            "spec.urll: unknown field (known fields: allowInsecure, url)"
        ]
    );
    assert!(errors(&s, json!({"url": "x"})).is_empty());
}

#[test]
fn types_are_checked() {
    let s = schema(json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "f": {"type": "number"},
            "b": {"type": "boolean"},
            "s": {"type": "string"},
            "l": {"type": "array", "items": {"type": "string"}},
            "o": {"type": "object", "properties": {}}
        }
    }));
    assert_eq!(
        errors(
            &s,
            json!({"n": 1.5, "f": "1", "b": "yes", "s": 3, "l": ["a", 1], "o": []})
        ),
        [
            "spec.b: must be true or false, not the string \"yes\"",
            "spec.f: must be a number, not the string \"1\"",
            "spec.l[1]: must be a string, not the number 1 (quote it)",
            "spec.n: must be an integer, not the number 1.5",
            "spec.o: must be an object, not a list",
            "spec.s: must be a string, not the number 3 (quote it)",
        ]
    );
    assert!(errors(
        &s,
        json!({"n": 2, "f": 2, "b": false, "s": "", "l": [], "o": {}})
    )
    .is_empty());
}

#[test]
fn ranges_lengths_patterns_and_enums() {
    let s = schema(json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 1.0, "maximum": 10.0},
            "name": {"type": "string", "minLength": 1, "maxLength": 3},
            "d": {"type": "string", "pattern": "^[0-9]+s$"},
            "t": {"type": "string", "pattern": DURATION_PATTERN},
            "k": {"type": "string", "enum": ["Secret", "ConfigMap"]},
            "l": {"type": "array", "maxItems": 1, "items": {"type": "string"}}
        }
    }));
    assert_eq!(
        errors(
            &s,
            json!({"n": 0, "name": "", "d": "5m", "k": "Pod", "l": ["a", "b"]})
        ),
        [
            "spec.d: \"5m\" does not match ^[0-9]+s$",
            "spec.k: must be one of \"Secret\", \"ConfigMap\" (is \"Pod\")",
            "spec.l: must have at most 1 items (has 2)",
            "spec.n: must be at least 1 (is 0)",
            "spec.name: must not be empty",
        ]
    );
    assert_eq!(
        errors(&s, json!({"n": 11, "name": "four", "t": "5 min"})),
        [
            "spec.n: must be at most 10 (is 11)",
            "spec.name: must be at most 3 characters long (is 4)",
            "spec.t: \"5 min\" is not a duration: write it like 250ms, 10s, 5m or 1h30m",
        ]
    );
}

#[test]
fn nulls_are_pruned_unless_nullable() {
    let s = schema(json!({
        "type": "object",
        "required": ["url"],
        "properties": {
            "url": {"type": "string"},
            "scopes": {"type": "array", "items": {"type": "string"}},
            "prefix": {"type": "string", "nullable": true}
        }
    }));
    let mut v = json!({"url": null, "scopes": null, "prefix": null});
    let errs: Vec<_> = check(&s, "spec", &mut v)
        .into_iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(errs, ["spec.url: required field is missing"]);
    assert_eq!(v, json!({"prefix": null}));
}

#[test]
fn maps_and_preserved_fields() {
    let s = schema(json!({
        "type": "object",
        "properties": {
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    }));
    assert_eq!(
        errors(
            &s,
            json!({"labels": {"a": "b", "c": 1}, "free": {"x": {"y": 1}}})
        ),
        ["spec.labels.c: must be a string, not the number 1 (quote it)"]
    );
}
