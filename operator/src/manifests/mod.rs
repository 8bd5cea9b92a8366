//! Reading manifests: files, directories and stdin, split into YAML documents.
//!
//! Documents stay untyped (`serde_json::Value`) here: [`crate::validate`] checks them against
//! the CRD's schema before anything is deserialized, so a typo in a field name is reported the
//! way the API server reports it instead of being silently ignored by serde.

use std::{
    fmt, fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The `-f` argument that means standard input.
pub const STDIN: &str = "-";

/// One YAML document of one input.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where it came from, as the user named it (`stripe.yaml`, `manifests/a.yaml`, `<stdin>`).
    pub source: String,
    /// Position among its file's documents, from 1 (empty documents are not counted).
    pub index: usize,
    pub value: Value,
}

/// A document's place, for messages: `stripe.yaml` or `all.yaml (document 3)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub source: String,
    pub index: usize,
    /// Documents in the same file; the index is only worth printing when there are several.
    pub of: usize,
}

/// An input that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not valid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("{path}: no .yaml, .yml or .json files in this directory")]
    EmptyDirectory { path: String },
}

/// Everything read from the inputs: the documents, and the inputs that failed.
#[derive(Debug, Default)]
pub struct Inputs {
    pub documents: Vec<Document>,
    pub errors: Vec<InputError>,
}

// === impl Document ===

impl Document {
    pub fn kind(&self) -> Option<&str> {
        self.value.get("kind").and_then(Value::as_str)
    }

    pub fn api_version(&self) -> Option<&str> {
        self.value.get("apiVersion").and_then(Value::as_str)
    }
}

// === impl Origin ===

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.of > 1 {
            write!(f, "{} (document {})", self.source, self.index)
        } else {
            f.write_str(&self.source)
        }
    }
}

// === impl Inputs ===

impl Inputs {
    /// How many documents came from `source`.
    pub fn count_in(&self, source: &str) -> usize {
        self.documents.iter().filter(|d| d.source == source).count()
    }

    pub fn origin(&self, doc: &Document) -> Origin {
        Origin {
            source: doc.source.clone(),
            index: doc.index,
            of: self.count_in(&doc.source),
        }
    }
}

/// Reads every input: a file, a directory (its `.yaml`, `.yml` and `.json` files, sorted, not
/// recursive), or `-` for standard input. Failures are collected, not fatal, so one run
/// reports every broken file.
pub fn read_inputs(paths: &[PathBuf], stdin: &mut dyn Read) -> Inputs {
    let mut inputs = Inputs::default();
    for path in paths {
        if path.as_os_str() == STDIN {
            let mut text = String::new();
            match stdin.read_to_string(&mut text) {
                Ok(_) => parse_into("<stdin>", &text, &mut inputs),
                Err(source) => inputs.errors.push(InputError::Read {
                    path: "<stdin>".into(),
                    source,
                }),
            }
            continue;
        }
        match manifest_files(path) {
            Ok(files) => {
                for file in files {
                    read_file(&file, &mut inputs);
                }
            }
            Err(e) => inputs.errors.push(e),
        }
    }
    inputs
}

/// Splits YAML text into documents; empty documents (`---` at the end) are dropped.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<Document>, InputError> {
    let values: Vec<Value> = serde_saphyr::from_multiple(text).map_err(|e| InputError::Yaml {
        path: source.into(),
        message: e.to_string(),
    })?;
    Ok(values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, value)| Document {
            source: source.into(),
            index: i + 1,
            value,
        })
        .collect())
}

fn parse_into(source: &str, text: &str, inputs: &mut Inputs) {
    match parse_documents(source, text) {
        Ok(docs) => inputs.documents.extend(docs),
        Err(e) => inputs.errors.push(e),
    }
}

fn read_file(path: &Path, inputs: &mut Inputs) {
    let name = path.display().to_string();
    match fs::read_to_string(path) {
        Ok(text) => parse_into(&name, &text, inputs),
        Err(source) => inputs.errors.push(InputError::Read { path: name, source }),
    }
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, InputError> {
    let read_err = |source| InputError::Read {
        path: path.display().to_string(),
        source,
    };
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(path).map_err(read_err)? {
        let p = entry.map_err(read_err)?.path();
        let manifest = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if manifest && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(InputError::EmptyDirectory {
            path: path.display().to_string(),
        });
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_numbers_them_from_one() {
        let docs = parse_documents("a.yaml", "kind: A\n---\n---\nkind: B\n---\n").unwrap();
        let got: Vec<_> = docs.iter().map(|d| (d.index, d.kind())).collect();
        assert_eq!(got, [(1, Some("A")), (2, Some("B"))]);
    }

    #[test]
    fn bad_yaml_names_the_file() {
        let err = parse_documents("broken.yaml", "a: [1,\n").unwrap_err();
        assert!(
            err.to_string().starts_with("broken.yaml: not valid YAML"),
            "{err}"
        );
    }

    #[test]
    fn reads_directories_stdin_and_reports_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("b.yaml"), "kind: B\n").unwrap();
        fs::write(dir.path().join("a.yml"), "kind: A\n").unwrap();
        fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        let missing = dir.path().join("missing.yaml");
        let paths = [dir.path().to_path_buf(), PathBuf::from("-"), missing];
        let inputs = read_inputs(&paths, &mut "kind: C\n".as_bytes());
        let kinds: Vec<_> = inputs.documents.iter().map(|d| d.kind()).collect();
        assert_eq!(kinds, [Some("A"), Some("B"), Some("C")]);
        assert_eq!(inputs.documents[2].source, "<stdin>");
        assert_eq!(inputs.errors.len(), 1);
        assert!(inputs.errors[0]
            .to_string()
            .contains("missing.yaml: cannot read"));
    }

    #[test]
    fn origin_shows_the_document_only_when_a_file_has_several() {
        let mut inputs = Inputs::default();
        inputs
            .documents
            .extend(parse_documents("one.yaml", "kind: A\n").unwrap());
        inputs
            .documents
            .extend(parse_documents("two.yaml", "kind: A\n---\nkind: B\n").unwrap());
        let shown: Vec<_> = inputs
            .documents
            .iter()
            .map(|d| inputs.origin(d).to_string())
            .collect();
        assert_eq!(
            shown,
            ["one.yaml", "two.yaml (document 1)", "two.yaml (document 2)"]
        );
    }
}
