//! The response: a verdict in the wire shape of `admission.k8s.io/v1`.

use std::collections::BTreeMap;

use base64::Engine as _;
use kube::core::response::{StatusCause, StatusDetails, StatusSummary};
use kube::core::Status;
use serde::{Deserialize, Serialize};

use super::KIND;
use crate::admission::Verdict;

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
