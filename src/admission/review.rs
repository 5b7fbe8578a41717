//! The `admission.k8s.io/v1` AdmissionReview protocol: decoding requests and
//! encoding responses.
//!
//! Requests are decoded into a lean struct whose objects stay
//! `serde_json::Value`s: one parse of the body, no `#[serde(flatten)]`
//! buffering (kube's `AdmissionReview<DynamicObject>` flattens twice; see
//! bench/README.md, "Findings"), and a wrongly typed user field becomes a
//! denial with a field path instead of a decode error. Responses use kube's
//! `Status` types; the response itself is our own small struct because
//! kube-core serialises `patch` as an array of numbers, and the canonical
//! (and human-readable in `check --output json`) form is a base64 string.

use std::collections::BTreeMap;

use base64::Engine as _;
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::Status;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Kind, Verdict};

/// The only AdmissionReview version this webhook speaks.
pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// Why a body is not an AdmissionReview this webhook can judge (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("body is not a JSON AdmissionReview: {0}")]
    Json(String),
    #[error("apiVersion must be \"{API_VERSION}\", got {0}")]
    ApiVersion(String),
    #[error("kind must be \"{KIND}\", got {0}")]
    Kind(String),
    #[error("AdmissionReview has no \"request\"")]
    NoRequest,
    #[error("request.{0} is missing or empty")]
    Missing(&'static str),
    #[error("request.object is missing for a {0} request")]
    NoObject(&'static str),
    #[error("request.{0} must be a JSON object, got {1}")]
    NotObject(&'static str, &'static str),
}

/// Accepts an absent or null object, or a JSON object; names anything else.
fn object_or_null(name: &'static str, v: Option<Value>) -> Result<Option<Value>, DecodeError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(o @ Value::Object(_)) => Ok(Some(o)),
        Some(other) => Err(DecodeError::NotObject(
            name,
            match other {
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                _ => "an array",
            },
        )),
    }
}

/// `request.operation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// `request.kind`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gvk {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

/// `request.userInfo`: who is asking.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
}

/// The part of `request` the decisions read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: Gvk,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    /// The object, without `metadata.managedFields` when decoded (no rule reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// The old object on UPDATE, without `metadata.managedFields` when decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: bool,
}

impl AdmissionRequest {
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_gvk(&self.kind.group, &self.kind.version, &self.kind.kind)
    }

    pub fn is_subresource(&self) -> bool {
        self.sub_resource.as_deref().is_some_and(|s| !s.is_empty())
    }

    /// `namespace/name` of the object, for logs.
    pub fn object_ref(&self) -> String {
        let meta = self.object.as_ref().and_then(|o| o.get("metadata"));
        let name = Some(self.name.as_str())
            .filter(|n| !n.is_empty())
            .or_else(|| meta.and_then(|m| m.get("name")).and_then(Value::as_str))
            .or_else(|| {
                meta.and_then(|m| m.get("generateName"))
                    .and_then(Value::as_str)
            })
            .unwrap_or("");
        match self.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
            _ => name.to_owned(),
        }
    }
}

/// The envelope, with the request's optional parts spelled out so a missing
/// field gets its own message.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawReview {
    api_version: Option<Value>,
    kind: Option<Value>,
    request: Option<RawRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRequest {
    uid: Option<String>,
    kind: Option<Gvk>,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: Option<Operation>,
    #[serde(default)]
    user_info: Option<UserInfo>,
    #[serde(default)]
    object: Option<LeanObject>,
    #[serde(default)]
    old_object: Option<LeanObject>,
    #[serde(default)]
    dry_run: Option<bool>,
}

/// `request.object` or `oldObject` as a `Value`, without the top-level
/// `metadata.managedFields`. No rule reads it, and in a real object it
/// restates every field as `f:` keys, a large share of the allocations of
/// parsing a VMI, skipped here without building them (figures in
/// bench/README.md, "Findings").
struct LeanObject(Value);

impl<'de> Deserialize<'de> for LeanObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lean { in_metadata: false })
            .map(LeanObject)
    }
}

/// Builds a `Value` as serde_json does, except that `managedFields` is
/// skipped inside the root's `metadata`.
#[derive(Clone, Copy)]
struct Lean {
    in_metadata: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Lean {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Lean {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match (self.in_metadata, key.as_str()) {
                (false, "metadata") => map.next_value_seed(Lean { in_metadata: true })?,
                (true, "managedFields") => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                _ => map.next_value::<Value>()?,
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A decoded review: the request and the apiVersion to echo.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    pub api_version: String,
    pub request: AdmissionRequest,
}

/// Decodes an HTTP body into a review, or says precisely what is wrong.
pub fn decode(body: &[u8]) -> Result<Review, DecodeError> {
    let raw: RawReview =
        serde_json::from_slice(body).map_err(|e| DecodeError::Json(e.to_string()))?;
    let api_version = match raw.api_version {
        Some(Value::String(s)) if s == API_VERSION => s,
        Some(other) => return Err(DecodeError::ApiVersion(other.to_string())),
        None => return Err(DecodeError::ApiVersion("nothing".into())),
    };
    match raw.kind {
        Some(Value::String(s)) if s == KIND => {}
        Some(other) => return Err(DecodeError::Kind(other.to_string())),
        None => return Err(DecodeError::Kind("nothing".into())),
    }
    let r = raw.request.ok_or(DecodeError::NoRequest)?;
    let uid = r
        .uid
        .filter(|u| !u.is_empty())
        .ok_or(DecodeError::Missing("uid"))?;
    let kind = r
        .kind
        .filter(|k| !k.kind.is_empty())
        .ok_or(DecodeError::Missing("kind"))?;
    let operation = r.operation.ok_or(DecodeError::Missing("operation"))?;
    let object = object_or_null("object", r.object.map(|o| o.0))?;
    let old_object = object_or_null("oldObject", r.old_object.map(|o| o.0))?;
    if matches!(operation, Operation::Create | Operation::Update) && object.is_none() {
        return Err(DecodeError::NoObject(operation.as_str()));
    }
    Ok(Review {
        api_version,
        request: AdmissionRequest {
            uid,
            kind,
            sub_resource: r.sub_resource,
            name: r.name.unwrap_or_default(),
            namespace: r.namespace,
            operation,
            user_info: r.user_info.unwrap_or_default(),
            object,
            old_object,
            dry_run: r.dry_run.unwrap_or(false),
        },
    })
}

/// `response` of an AdmissionReview, in the exact wire shape of
/// `admission.k8s.io/v1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// Base64 of the JSON Patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Recorded by the API server in its audit log as `<webhook>/<key>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

impl AdmissionResponse {
    /// The JSON Patch carried by this response, decoded.
    pub fn decoded_patch(&self) -> Option<json_patch::Patch> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.patch.as_deref()?)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// Turns a verdict into the response for the request `uid`.
pub fn response(uid: &str, verdict: &Verdict) -> AdmissionResponse {
    let status = (!verdict.allowed()).then(|| Status {
        status: Some(StatusSummary::Failure),
        code: 422,
        message: verdict.message(),
        reason: "Invalid".into(),
        details: Some(StatusDetails {
            causes: verdict
                .causes
                .iter()
                .map(|c| StatusCause {
                    reason: c.reason.as_str().into(),
                    message: c.message.clone(),
                    field: c.field.clone(),
                })
                .collect(),
            name: String::new(),
            group: String::new(),
            kind: String::new(),
            uid: String::new(),
            retry_after_seconds: 0,
        }),
        metadata: None,
    });
    let patch = (verdict.allowed() && !verdict.patch.is_empty())
        .then(|| serde_json::to_vec(&verdict.patch).ok())
        .flatten()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    AdmissionResponse {
        uid: uid.to_owned(),
        allowed: verdict.allowed(),
        status,
        patch_type: patch.as_ref().map(|_| "JSONPatch".to_owned()),
        patch,
        warnings: verdict.warnings.clone(),
        audit_annotations: verdict.audit_annotations(),
    }
}

/// The response envelope: `{"apiVersion", "kind", "response"}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseReview<'a> {
    pub api_version: &'a str,
    pub kind: &'static str,
    pub response: &'a AdmissionResponse,
}

/// Serialises the response review for `api_version` (echoed from the request).
pub fn encode(api_version: &str, response: &AdmissionResponse) -> Vec<u8> {
    // Serialising plain owned data cannot fail; an empty body would make the
    // API server apply failurePolicy, which is the safe outcome anyway.
    serde_json::to_vec(&ResponseReview {
        api_version,
        kind: KIND,
        response,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod lean_tests {
    use serde_json::json;

    use super::*;

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {
                "uid": "u", "operation": "UPDATE",
                "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"},
                "object": object, "oldObject": object,
            }
        }))
        .unwrap()
    }

    #[test]
    fn managed_fields_are_skipped_and_nothing_else() {
        let object = json!({
            "apiVersion": "kubevirt.io/v1",
            "metadata": {
                "name": "vm", "generation": 3, "deletionGracePeriodSeconds": null,
                "annotations": {"runstrategy.kubevirt.io": "BootOnce"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {".": {}}}}],
            },
            "spec": {
                "runStrategy": "BootOnce", "ratio": 0.5, "big": u64::MAX, "neg": -1,
                "list": [1, "two", null, true, {"managedFields": "kept: not metadata"}],
                "template": {"metadata": {"managedFields": "kept: not the root's"}},
            },
        });
        let mut want = object.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        let r = decode(&review(object)).unwrap();
        assert_eq!(r.request.object.as_ref(), Some(&want));
        assert_eq!(r.request.old_object.as_ref(), Some(&want));
    }

    #[test]
    fn wrongly_typed_objects_still_name_their_type() {
        for (object, what) in [
            (json!("text"), "a string"),
            (json!([1]), "an array"),
            (json!(1.5), "a number"),
            (json!(false), "a boolean"),
        ] {
            assert_eq!(
                decode(&review(object)).unwrap_err(),
                DecodeError::NotObject("object", what)
            );
        }
        // Metadata of the wrong type is kept as it is, for the rules to judge.
        let r = decode(&review(json!({"metadata": "x"}))).unwrap();
        assert_eq!(r.request.object, Some(json!({"metadata": "x"})));
    }
}
