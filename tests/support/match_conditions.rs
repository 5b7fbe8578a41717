//! The webhook configurations' `matchConditions`, read from the YAML in
//! `manifests/` and evaluated with a CEL interpreter the way the API server
//! evaluates them: variables `object`, `oldObject` (null when absent) and
//! `request` (the AdmissionRequest without its objects).
//!
//! Included with `#[path]` by `tests/match_conditions.rs` and by the decision
//! table's unit tests (`src/admission/tests.rs`); it depends on nothing of the
//! crate, only on serde_json and the `cel` dev-dependency. It is not a module
//! of `tests/support/mod.rs`, so the other test binaries do not build it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

/// One named CEL expression of a webhook.
pub struct Condition {
    pub name: String,
    pub expression: String,
    program: cel::Program,
}

/// One webhook of a configuration, with its conditions in order.
pub struct Webhook {
    pub name: String,
    /// `clientConfig.service.path`: `/validate` or `/mutate`.
    pub path: String,
    pub conditions: Vec<Condition>,
}

/// What the API server does with a request that matched the webhook's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every condition is true: the webhook is called.
    Call,
    /// This condition is false: the webhook is skipped.
    Skip(String),
}

impl Webhook {
    /// Evaluates every condition. The API server skips the webhook when any
    /// condition is false and applies failurePolicy when one fails while none
    /// is false; this is stricter: any failing condition is an error, because
    /// each expression must be total on its own.
    pub fn evaluate(&self, request: &Value) -> Result<Outcome, String> {
        let mut ctx = cel::Context::default();
        let var = |key: &str| request.get(key).map_or(cel::Value::Null, to_cel);
        ctx.add_variable_from_value("object", var("object"));
        ctx.add_variable_from_value("oldObject", var("oldObject"));
        let mut bare = request.clone();
        if let Some(m) = bare.as_object_mut() {
            m.remove("object");
            m.remove("oldObject");
        }
        ctx.add_variable_from_value("request", to_cel(&bare));
        let mut outcome = Outcome::Call;
        for c in &self.conditions {
            match c.program.execute(&ctx) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    if outcome == Outcome::Call {
                        outcome = Outcome::Skip(c.name.clone());
                    }
                }
                Ok(other) => {
                    return Err(format!("{}: {}: not a bool: {other:?}", self.name, c.name))
                }
                Err(e) => return Err(format!("{}: {}: {e:?}", self.name, c.name)),
            }
        }
        Ok(outcome)
    }
}

/// JSON as the API server hands it to CEL: integers as int, other numbers as double.
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => n.as_i64().map_or_else(
            || cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            cel::Value::Int,
        ),
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => cel::Value::Map(cel::objects::Map {
            map: Arc::new(
                m.iter()
                    .map(|(k, v)| (cel::objects::Key::from(k.clone()), to_cel(v)))
                    .collect::<HashMap<_, _>>(),
            ),
        }),
    }
}

/// The webhooks of every Validating/MutatingWebhookConfiguration in `docs`.
pub fn webhooks(docs: &[Value]) -> Result<Vec<Webhook>, String> {
    let mut out = Vec::new();
    for doc in docs {
        if !matches!(
            doc["kind"].as_str(),
            Some("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration")
        ) {
            continue;
        }
        for w in doc["webhooks"].as_array().into_iter().flatten() {
            let name = w["name"].as_str().unwrap_or_default().to_owned();
            let mut conditions = Vec::new();
            for c in w["matchConditions"].as_array().into_iter().flatten() {
                let cname = c["name"].as_str().unwrap_or_default().to_owned();
                let expression = c["expression"]
                    .as_str()
                    .ok_or_else(|| format!("{name}: {cname}: no expression"))?
                    .to_owned();
                let program = cel::Program::compile(&expression)
                    .map_err(|e| format!("{name}: {cname}: {e}"))?;
                conditions.push(Condition {
                    name: cname,
                    expression,
                    program,
                });
            }
            out.push(Webhook {
                name,
                path: w["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                conditions,
            });
        }
    }
    Ok(out)
}

/// The YAML documents of a file.
pub fn read_yaml(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).map_err(|e| format!("{}: {e}", path.display())))
        .filter(|d| !matches!(d, Ok(Value::Null)))
        .collect()
}

/// The files of `manifests/base` that hold the webhook configurations.
/// `tests/manifests.rs` checks that every entry point (rendered by
/// `kubectl kustomize`) carries exactly these
/// conditions, except `overlays/no-match-conditions`, which has none.
pub fn base_files() -> [PathBuf; 2] {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/base");
    [
        base.join("validating-webhook.yaml"),
        base.join("mutating-webhook.yaml"),
    ]
}

/// The base's webhook called at `path` (`/validate` or `/mutate`).
pub fn base_webhook(path: &str) -> Webhook {
    let mut docs = Vec::new();
    for f in base_files() {
        docs.extend(read_yaml(&f).unwrap_or_else(|e| panic!("{e}")));
    }
    webhooks(&docs)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|w| w.path == path)
        .unwrap_or_else(|| panic!("no webhook calls {path} in manifests/base"))
}
