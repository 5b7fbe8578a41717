//! Minimal RFC 6902 patches against a JSON object.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation};
use serde_json::{Map, Value};

/// Collects operations; every method adds nothing when the object already
/// has the wanted state, so a reinvoked webhook returns an empty patch.
#[derive(Default)]
pub struct PatchBuilder {
    pub ops: Vec<PatchOperation>,
    /// Each operation in words (`field=value`, `field removed`), for the audit log.
    pub changes: Vec<String>,
}

/// `spec.domain.rebootPolicy`, or `metadata.annotations[runstrategy.kubevirt.io]`
/// for a key that is not a plain identifier.
fn describe(path: &[&str], key: &str) -> String {
    let parent = path.join(".");
    match (parent.as_str(), key.contains(['.', '/'])) {
        ("", false) => key.to_owned(),
        (_, true) => format!("{parent}[{key}]"),
        (_, false) => format!("{parent}.{key}"),
    }
}

impl PatchBuilder {
    /// Ensures `obj[path..][key] == value`, adding missing parent objects in
    /// one `add` (the whole annotations map when it is missing).
    pub fn set(&mut self, obj: &Value, path: &[&str], key: &str, value: Value) {
        let shown = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let before = self.ops.len();
        self.set_inner(obj, path, key, value);
        if self.ops.len() > before {
            self.changes
                .push(format!("{}={shown}", describe(path, key)));
        }
    }

    fn set_inner(&mut self, obj: &Value, path: &[&str], key: &str, value: Value) {
        let mut cur = obj;
        for (i, seg) in path.iter().enumerate() {
            match cur.as_object().and_then(|m| m.get(*seg)) {
                Some(next) if next.is_object() => cur = next,
                _ => {
                    // Build {rest: {...: {key: value}}} and add it at path[..=i].
                    let mut nested = Value::Object(Map::from_iter([(key.to_owned(), value)]));
                    for s in path[i + 1..].iter().rev() {
                        nested = Value::Object(Map::from_iter([((*s).to_owned(), nested)]));
                    }
                    self.add(&path[..=i], nested);
                    return;
                }
            }
        }
        if cur.get(key) != Some(&value) {
            let full: Vec<&str> = path.iter().copied().chain([key]).collect();
            self.add(&full, value);
        }
    }

    /// Ensures `obj[path..][key]` exists, setting `value` only when absent
    /// or null (as the rules read it: see `facts::Fact::value`).
    pub fn set_default(&mut self, obj: &Value, path: &[&str], key: &str, value: Value) {
        let present = super::kinds::get(obj, path)
            .and_then(|m| m.get(key))
            .is_some_and(|v| !v.is_null());
        if !present {
            self.set(obj, path, key, value);
        }
    }

    /// Ensures `obj[path..][key]` is absent.
    pub fn remove(&mut self, obj: &Value, path: &[&str], key: &str) {
        if super::kinds::get(obj, path)
            .and_then(|m| m.get(key))
            .is_some()
        {
            let full: Vec<&str> = path.iter().copied().chain([key]).collect();
            self.ops.push(PatchOperation::Remove(RemoveOperation {
                path: PointerBuf::from_tokens(full),
            }));
            self.changes
                .push(format!("{} removed", describe(path, key)));
        }
    }

    // `add` rather than `replace`: it also overwrites an existing member, so
    // the same patch applied twice gives the same object.
    fn add(&mut self, path: &[&str], value: Value) {
        self.ops.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(path.iter().copied()),
            value,
        }));
    }
}
