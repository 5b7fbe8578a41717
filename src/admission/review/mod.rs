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

mod lean;
mod response;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Kind;
use lean::LeanObject;
pub use response::{encode, response, AdmissionResponse, ResponseReview};

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
