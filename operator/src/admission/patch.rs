//! Building JSON patches (RFC 6902) against an object whose current shape is known.
//!
//! The pitfalls this module exists for: `add` to `/spec/volumes/-` fails when the pod has no
//! `volumes` array yet (the array itself must be added), the same goes for maps
//! (`/metadata/annotations`), and a `/` in a key (`attache.dev/injected`) must be escaped as
//! `~1` (and `~` as `~0`). Paths are built from tokens by [`jsonptr`], which escapes them.

use json_patch::{
    jsonptr::{PointerBuf, Token},
    AddOperation, Patch, PatchOperation,
};
use serde_json::{Map, Value};

/// A patch under construction. Operations apply in the order they were added, so a caller
/// that inserts into an array must add the operations that use the old indices first.
#[derive(Debug, Default)]
pub(crate) struct PatchBuilder {
    ops: Vec<PatchOperation>,
}

// === impl PatchBuilder ===

impl PatchBuilder {
    pub(crate) fn add<'t>(&mut self, path: impl IntoIterator<Item = Token<'t>>, value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path),
            value,
        }));
    }

    /// Inserts `values` at the front of the array at `path` (in order), creating the array
    /// when the object has none.
    pub(crate) fn prepend(&mut self, path: &[Token<'_>], exists: bool, values: Vec<Value>) {
        if values.is_empty() {
            return;
        }
        if !exists {
            self.add(path.iter().cloned(), Value::Array(values));
            return;
        }
        for (i, v) in values.into_iter().enumerate() {
            self.add(path.iter().cloned().chain([Token::from(i)]), v);
        }
    }

    /// Appends `values` to the array at `path`, creating it when the object has none.
    pub(crate) fn append(&mut self, path: &[Token<'_>], exists: bool, values: Vec<Value>) {
        if values.is_empty() {
            return;
        }
        if !exists {
            self.add(path.iter().cloned(), Value::Array(values));
            return;
        }
        for v in values {
            self.add(path.iter().cloned().chain([Token::new("-")]), v);
        }
    }

    /// Sets entries of the string map at `path` (labels, annotations), creating the map when
    /// the object has none.
    pub(crate) fn put_entries(
        &mut self,
        path: &[Token<'_>],
        exists: bool,
        entries: Vec<(String, String)>,
    ) {
        if entries.is_empty() {
            return;
        }
        if !exists {
            let map: Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            self.add(path.iter().cloned(), Value::Object(map));
            return;
        }
        for (k, v) in entries {
            self.add(
                path.iter().cloned().chain([Token::from(k)]),
                Value::String(v),
            );
        }
    }

    pub(crate) fn build(self) -> Patch {
        Patch(self.ops)
    }
}

/// Tokens of a path given as segments: `tokens(&["metadata", "labels"])`.
pub(crate) fn tokens<'a>(segments: &[&'a str]) -> Vec<Token<'a>> {
    segments.iter().map(|s| Token::new(*s)).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn paths(p: &Patch) -> Vec<String> {
        p.0.iter().map(|op| op.path().to_string()).collect()
    }

    #[test]
    fn escapes_slash_and_tilde_in_keys() {
        let mut b = PatchBuilder::default();
        b.put_entries(
            &tokens(&["metadata", "annotations"]),
            true,
            vec![
                ("attache.dev/injected".into(), "true".into()),
                ("a~b".into(), "x".into()),
            ],
        );
        let p = b.build();
        assert_eq!(
            paths(&p),
            [
                "/metadata/annotations/attache.dev~1injected",
                "/metadata/annotations/a~0b"
            ]
        );
        let mut doc = json!({"metadata": {"annotations": {}}});
        json_patch::patch(&mut doc, &p).unwrap();
        assert_eq!(
            doc["metadata"]["annotations"]["attache.dev/injected"],
            "true"
        );
        assert_eq!(doc["metadata"]["annotations"]["a~b"], "x");
    }

    #[test]
    fn creates_missing_arrays_and_maps_instead_of_adding_into_them() {
        let mut b = PatchBuilder::default();
        b.append(
            &tokens(&["spec", "volumes"]),
            false,
            vec![json!(1), json!(2)],
        );
        b.prepend(&tokens(&["spec", "env"]), false, vec![json!("a")]);
        b.put_entries(
            &tokens(&["metadata", "labels"]),
            false,
            vec![("k".into(), "v".into())],
        );
        let mut doc = json!({"spec": {}, "metadata": {}});
        json_patch::patch(&mut doc, &b.build()).unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"volumes": [1, 2], "env": ["a"]}, "metadata": {"labels": {"k": "v"}}})
        );
    }

    #[test]
    fn prepends_in_order_and_appends_at_the_end() {
        let mut b = PatchBuilder::default();
        b.prepend(&tokens(&["env"]), true, vec![json!("a"), json!("b")]);
        b.append(&tokens(&["vols"]), true, vec![json!("y")]);
        let mut doc = json!({"env": ["z"], "vols": ["x"]});
        json_patch::patch(&mut doc, &b.build()).unwrap();
        assert_eq!(doc, json!({"env": ["a", "b", "z"], "vols": ["x", "y"]}));
    }
}
