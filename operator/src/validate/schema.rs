//! OpenAPI v3 structural validation, the part of `kubectl apply` that runs before CEL: types,
//! required fields, unknown fields, enums, ranges, lengths and patterns.
//!
//! The schema is the CRD's own `openAPIV3Schema`, so every constraint declared in the `api`
//! crate's types is enforced here by construction. CEL rules (`x-kubernetes-validations`) are
//! not evaluated: [`attache_api::validate_spec`] is their Rust twin, and the operator's tests
//! prove the two agree.

use std::collections::HashMap;

use attache_api::{duration::DURATION_PATTERN, FieldError};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use regex::Regex;
use serde_json::{Map, Value};

/// Checks `value` against `schema`, and prunes `null`s from fields that are not nullable,
/// as the API server does, so that what passes also deserializes.
pub fn check(schema: &JSONSchemaProps, path: &str, value: &mut Value) -> Vec<FieldError> {
    let mut checker = Checker::default();
    checker.value(schema, path, value);
    // Field order, not document order: stable output whatever map type serde_json uses.
    checker.errors.sort_by(|a, b| a.field.cmp(&b.field));
    checker.errors
}

#[derive(Default)]
struct Checker {
    errors: Vec<FieldError>,
    patterns: HashMap<String, Option<Regex>>,
}

// === impl Checker ===

impl Checker {
    fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    fn value(&mut self, schema: &JSONSchemaProps, path: &str, value: &mut Value) {
        if value.is_null() {
            if schema.nullable != Some(true) {
                self.push(path, "must not be null");
            }
            return;
        }
        if schema.x_kubernetes_int_or_string == Some(true) {
            // Each form gets the constraints that apply to it (`pattern` to strings,
            // `minimum` to integers), as the API server does.
            if value.is_string() {
                self.string(schema, path, value);
            } else if is_integer(value) {
                self.number(schema, path, value);
            } else {
                self.push(
                    path,
                    format!("must be an integer or a string, not {}", kind(value)),
                );
            }
            return;
        }
        match schema.type_.as_deref() {
            Some("object") => self.object(schema, path, value),
            Some("array") => self.array(schema, path, value),
            Some("string") => self.string(schema, path, value),
            Some("integer") if is_integer(value) => self.number(schema, path, value),
            Some("integer") => self.push(path, format!("must be an integer, not {}", kind(value))),
            Some("number") if value.is_number() => self.number(schema, path, value),
            Some("number") => self.push(path, format!("must be a number, not {}", kind(value))),
            Some("boolean") if value.is_boolean() => {}
            Some("boolean") => {
                self.push(path, format!("must be true or false, not {}", kind(value)))
            }
            _ => {}
        }
        self.enumeration(schema, path, value);
    }

    fn object(&mut self, schema: &JSONSchemaProps, path: &str, value: &mut Value) {
        let Value::Object(map) = value else {
            return self.push(path, format!("must be an object, not {}", kind(value)));
        };
        prune_nulls(schema, map);
        for required in schema.required.iter().flatten() {
            if !map.contains_key(required) {
                self.push(&join(path, required), "required field is missing");
            }
        }
        let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
        let additional = match &schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(s)) => Some(&**s),
            _ => None,
        };
        let properties = schema.properties.as_ref();
        for (name, child) in map.iter_mut() {
            let field = join(path, name);
            match (properties.and_then(|p| p.get(name)), additional) {
                (Some(s), _) | (None, Some(s)) => self.value(s, &field, child),
                (None, None) if preserve => {}
                (None, None) => {
                    let known = properties
                        .map(|p| p.keys().map(String::as_str).collect::<Vec<_>>().join(", "))
                        .unwrap_or_default();
                    self.push(&field, format!("unknown field (known fields: {known})"));
                }
            }
        }
    }

    fn array(&mut self, schema: &JSONSchemaProps, path: &str, value: &mut Value) {
        let Value::Array(items) = value else {
            return self.push(path, format!("must be a list, not {}", kind(value)));
        };
        let n = items.len() as i64;
        if let Some(min) = schema.min_items.filter(|m| n < *m) {
            self.push(path, format!("must have at least {min} items (has {n})"));
        }
        if let Some(max) = schema.max_items.filter(|m| n > *m) {
            self.push(path, format!("must have at most {max} items (has {n})"));
        }
        if let Some(JSONSchemaPropsOrArray::Schema(item)) = &schema.items {
            for (i, v) in items.iter_mut().enumerate() {
                self.value(item, &format!("{path}[{i}]"), v);
            }
        }
    }

    fn string(&mut self, schema: &JSONSchemaProps, path: &str, value: &Value) {
        let Value::String(s) = value else {
            // YAML reads `minVersion: 1.3` or `retryOn: [503]` as numbers.
            let hint = if value.is_number() { " (quote it)" } else { "" };
            return self.push(path, format!("must be a string, not {}{hint}", kind(value)));
        };
        // Like the API server, lengths count characters, not bytes.
        let n = s.chars().count() as i64;
        match schema.min_length {
            Some(1) if n == 0 => self.push(path, "must not be empty"),
            Some(min) if n < min => {
                self.push(path, format!("must be at least {min} characters long"))
            }
            _ => {}
        }
        if let Some(max) = schema.max_length.filter(|m| n > *m) {
            self.push(
                path,
                format!("must be at most {max} characters long (is {n})"),
            );
        }
        if let Some(pattern) = &schema.pattern {
            match self.regex(pattern) {
                Some(re) if re.is_match(s) => {}
                Some(_) if pattern == DURATION_PATTERN => self.push(
                    path,
                    format!("{s:?} is not a duration: write it like 250ms, 10s, 5m or 1h30m"),
                ),
                Some(_) => self.push(path, format!("{s:?} does not match {pattern}")),
                None => self.push(path, format!("the schema's pattern {pattern} is invalid")),
            }
        }
    }

    fn number(&mut self, schema: &JSONSchemaProps, path: &str, value: &Value) {
        let Some(x) = value.as_f64() else { return };
        let exclusive_min = schema.exclusive_minimum == Some(true);
        let exclusive_max = schema.exclusive_maximum == Some(true);
        if let Some(min) = schema.minimum {
            if x < min || (exclusive_min && x == min) {
                let bound = if exclusive_min {
                    "greater than"
                } else {
                    "at least"
                };
                self.push(path, format!("must be {bound} {min} (is {value})"));
            }
        }
        if let Some(max) = schema.maximum {
            if x > max || (exclusive_max && x == max) {
                let bound = if exclusive_max {
                    "less than"
                } else {
                    "at most"
                };
                self.push(path, format!("must be {bound} {max} (is {value})"));
            }
        }
    }

    fn enumeration(&mut self, schema: &JSONSchemaProps, path: &str, value: &Value) {
        let Some(allowed) = &schema.enum_ else { return };
        if allowed.iter().any(|a| &a.0 == value) {
            return;
        }
        let list = allowed
            .iter()
            .map(|a| a.0.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        self.push(path, format!("must be one of {list} (is {value})"));
    }

    fn regex(&mut self, pattern: &str) -> Option<&Regex> {
        self.patterns
            .entry(pattern.to_string())
            .or_insert_with(|| Regex::new(pattern).ok())
            .as_ref()
    }
}

/// `a.b` for a property `b` of `a`; just `b` at the root.
pub fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// The API server drops `null` from fields that are not nullable before validating.
fn prune_nulls(schema: &JSONSchemaProps, map: &mut Map<String, Value>) {
    let Some(props) = &schema.properties else {
        return;
    };
    map.retain(|name, v| {
        !(v.is_null() && props.get(name).is_some_and(|p| p.nullable != Some(true)))
    });
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
