//! Reading Kubernetes manifests: YAML (multi-document) or JSON, `List`s
//! flattened, from files, directories or stdin.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
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

/// Reads the manifest files of a directory (`*.yaml`, `*.yml`, `*.json`), sorted by name.
pub fn read_dir(dir: &Path) -> Result<Vec<Document>, Error> {
    let io = |source| Error::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
        })
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        docs.extend(read_file(&f)?);
    }
    Ok(docs)
}

/// Reads one file, or stdin for `-`.
pub fn read_file(path: &Path) -> Result<Vec<Document>, Error> {
    let label = path.display().to_string();
    let io = |source| Error::Io {
        path: label.clone(),
        source,
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

/// Parses manifest text: JSON when it starts with `{` or `[`, YAML otherwise.
pub fn parse(label: &str, text: &str) -> Result<Vec<Document>, Error> {
    let err = |index, message: String| Error::Parse {
        path: label.to_owned(),
        index,
        message,
    };
    let mut values = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, v) in stream.enumerate() {
            values.push(v.map_err(|e| err(i + 1, e.to_string()))?);
        }
    } else {
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(doc).map_err(|e| err(i + 1, e.to_string()))?;
            if !v.is_null() {
                values.push(v);
            }
        }
    }
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
                items.into_iter().for_each(|i| flatten(i, out));
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
    fn errors_name_file_and_document() {
        let e = parse("bad.yaml", "a: 1\n---\nb: [unclosed\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("bad.yaml: document 2:"), "{msg}");
    }
}
