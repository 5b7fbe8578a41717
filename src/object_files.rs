//! Reading Kubernetes manifests: YAML (multi-document) or JSON, `List`s
//! flattened, from files, directories or stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The OS error is part of the message and deliberately not a `source`:
    // printed with its causes (`{:#}`), it would otherwise appear twice.
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: document {index}: {message}")]
    Parse {
        path: String,
        index: usize,
        message: String,
    },
}

/// One object from a manifest, with where it came from.
#[derive(Debug, Clone)]
pub struct Document {
    /// `file` or `file#N` (1-based) when the file holds several objects.
    pub source: String,
    pub value: Value,
}

/// Whether a directory entry is a manifest file by its name.
fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The manifest files of `dir` (`*.yaml`, `*.yml`, `*.json`; other files
/// are skipped), sorted by name; with `recursive`, those of its
/// subdirectories too, each directory's after its own files. Hidden
/// subdirectories (`.git`, a ConfigMap volume's `..data`) are not entered.
pub fn manifest_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, Error> {
    let io = |error| Error::Io {
        path: dir.display().to_string(),
        error,
    };
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let path = entry.path();
        // Symlinks to files count (ConfigMap volumes are made of them);
        // symlinks to directories are not followed, so there are no loops.
        let real_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if real_dir {
            let hidden = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with('.'));
            if recursive && !hidden {
                dirs.push(path);
            }
        } else if path.is_file() && is_manifest(&path) {
            files.push(path);
        }
    }
    files.sort();
    dirs.sort();
    for d in dirs {
        files.extend(manifest_files(&d, true)?);
    }
    Ok(files)
}

/// Reads the manifest files of a directory (not its subdirectories).
pub fn read_dir(dir: &Path) -> Result<Vec<Document>, Error> {
    read_path(dir, false)
}

/// Reads a file, every manifest file of a directory (see
/// [`manifest_files`]), or stdin for `-`.
pub fn read_path(path: &Path, recursive: bool) -> Result<Vec<Document>, Error> {
    if path != Path::new("-") && path.is_dir() {
        let mut docs = Vec::new();
        for f in manifest_files(path, recursive)? {
            docs.extend(read_file(&f)?);
        }
        return Ok(docs);
    }
    read_file(path)
}

/// Reads one file, or stdin for `-`.
pub fn read_file(path: &Path) -> Result<Vec<Document>, Error> {
    let label = path.display().to_string();
    let io = |error| Error::Io {
        path: label.clone(),
        error,
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(io)?;
        s
    } else {
        std::fs::read_to_string(path).map_err(io)?
    };
    parse(&label, &text)
}

/// Parses manifest text: any YAML stream (which includes JSON documents,
/// also several separated by `---`), or a stream of JSON values written
/// back to back (`{..}{..}`, which YAML does not allow). Empty documents
/// are skipped; JSON arrays and `kind: List` are flattened.
pub fn parse(label: &str, text: &str) -> Result<Vec<Document>, Error> {
    let err = |index, message: String| Error::Parse {
        path: label.to_owned(),
        index,
        message,
    };
    let values = match parse_yaml(text) {
        Ok(values) => values,
        Err((yaml_index, yaml_error)) => match parse_json_stream(text) {
            Ok(values) => values,
            // Only a text that is JSON throughout (no YAML document
            // separator) gets the JSON parser's message; the YAML one names
            // the document of a `---` stream.
            Err((index, json_error)) if looks_like_json(text) => {
                return Err(err(index, json_error))
            }
            Err(_) => return Err(err(yaml_index, yaml_error)),
        },
    };
    let mut flat = Vec::new();
    for v in values {
        flatten(v, &mut flat);
    }
    let many = flat.len() > 1;
    Ok(flat
        .into_iter()
        .enumerate()
        .map(|(i, value)| Document {
            source: if many {
                format!("{label}#{}", i + 1)
            } else {
                label.to_owned()
            },
            value,
        })
        .collect())
}

/// The documents of a YAML stream; on error, the 1-based document and the
/// message (with the line and column in the whole text).
fn parse_yaml(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let mut values = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| (i + 1, e.to_string()))?;
        if !v.is_null() {
            values.push(v);
        }
    }
    Ok(values)
}

/// JSON values back to back; on error, the 1-based value and the message.
fn parse_json_stream(text: &str) -> Result<Vec<Value>, (usize, String)> {
    let mut values = Vec::new();
    for (i, v) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let v = v.map_err(|e| (i + 1, e.to_string()))?;
        if !v.is_null() {
            values.push(v);
        }
    }
    Ok(values)
}

/// Starts like JSON and has no line that separates YAML documents.
fn looks_like_json(text: &str) -> bool {
    let t = text.trim_start();
    (t.starts_with('{') || t.starts_with('['))
        && !text
            .lines()
            .any(|l| l.starts_with("---") || l.starts_with("..."))
}

/// `kind: List` (and JSON arrays) hold objects in `items`.
fn flatten(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.into_iter().for_each(|i| flatten(i, out)),
        Value::Object(mut m)
            if m.get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k.ends_with("List"))
                && m.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = m.remove("items") {
                for item in items {
                    flatten(item, out);
                }
            }
        }
        other => out.push(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_multi_document_and_lists() {
        let text = "a: 1\n---\n# only a comment\n---\nkind: List\nitems:\n- b: 2\n- c: 3\n";
        let docs = parse("f.yaml", text).unwrap();
        let values: Vec<_> = docs.iter().map(|d| d.value.to_string()).collect();
        assert_eq!(values, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
        assert_eq!(docs[2].source, "f.yaml#3");
    }

    #[test]
    fn json_stream() {
        let docs = parse("f.json", "{\"a\":1}\n{\"b\":2}").unwrap();
        assert_eq!(docs.len(), 2);
    }

    #[test]
    fn json_documents_in_a_yaml_stream() {
        // What many scripts emit, and `kubectl kustomize` accepts.
        let text = "{\n  \"a\": 1\n}\n---\n{\n  \"b\": [1, 2]\n}\n---\nc: 3\n";
        let docs = parse("f.yaml", text).unwrap();
        let values: Vec<_> = docs.iter().map(|d| d.value.to_string()).collect();
        assert_eq!(values, [r#"{"a":1}"#, r#"{"b":[1,2]}"#, r#"{"c":3}"#]);
    }

    #[test]
    fn one_json_document_an_array_and_a_list() {
        for (text, want) in [
            ("{\"kind\": \"X\", \"n\": 1.5}", 1),
            ("[{\"a\": 1}, {\"b\": 2}, {\"c\": 3}]", 3),
            (
                "{\"kind\": \"List\", \"items\": [{\"a\": 1}, {\"b\": 2}]}",
                2,
            ),
            ("kind: VirtualMachineList\nitems:\n- a: 1\n", 1),
            ("\t{\"tabs\":\t1}\n", 1),
        ] {
            let docs = parse("f", text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(docs.len(), want, "{text:?}");
        }
        assert_eq!(parse("f", "{\"n\": 1.5}").unwrap()[0].value["n"], 1.5);
    }

    #[test]
    fn errors_name_file_document_and_position() {
        // A broken JSON document in a `---` stream: the YAML message, with
        // the line in the whole file.
        let text = "{\"a\": 1}\n---\n{\"b\": [1, 2}\n";
        let msg = parse("s.yaml", text).unwrap_err().to_string();
        assert!(msg.starts_with("s.yaml: document 2: "), "{msg}");
        assert!(msg.contains("line 3 column"), "{msg}");
        // A broken JSON file: the JSON message.
        let msg = parse("f.json", "{\"a\": 1,\n \"b\": [1, 2}\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("f.json: document 1: "), "{msg}");
        assert!(msg.contains("line 2 column"), "{msg}");
    }

    #[test]
    fn io_errors_name_the_cause_once() {
        let e = read_file(Path::new("/nonexistent/x.yaml")).unwrap_err();
        let full = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(
            full.matches("No such file or directory").count(),
            1,
            "{full}"
        );
    }

    #[test]
    fn errors_name_file_and_document() {
        let e = parse("bad.yaml", "a: 1\n---\nb: [unclosed\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("bad.yaml: document 2:"), "{msg}");
    }
}
