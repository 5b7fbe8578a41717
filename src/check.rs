//! `check`: the webhook's decisions on manifests, offline.
//!
//! Each object is judged as the API server would send it: a CREATE by
//! `--as`, first to the mutating webhook, then, with its patch applied, to
//! the validating one. Both go through [`Webhook::review`], the function the
//! server calls. Objects in a namespace the installed webhook exempts
//! (`--exempt-namespace`, by default those of `manifests/`' namespaceSelector)
//! are not judged: the API server never sends them. A document that is
//! itself an AdmissionReview is judged as given.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::admission::review::{
    self, AdmissionRequest, AdmissionResponse, Gvk, Operation, Review, UserInfo,
};
use crate::admission::{Endpoint, Kind};
use crate::cli::{CheckArgs, Output};
use crate::feature_gate::{self, GateFlag};
use crate::metrics::Metrics;
use crate::object_files::{self, Document};
use crate::owners::StaticVms;
use crate::webhook::Webhook;

/// The verdict on one object.
#[derive(Serialize, Debug)]
pub struct Judged {
    pub source: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The mutating webhook's response (patch, if any).
    pub mutation: AdmissionResponse,
    /// The validating webhook's response on the patched object.
    pub validation: AdmissionResponse,
}

impl Judged {
    pub fn allowed(&self) -> bool {
        self.mutation.allowed && self.validation.allowed
    }
}

/// Builds the review the API server would send for creating `obj`; `None`
/// for an object this webhook does not judge. A document that is itself an
/// AdmissionReview is judged as given, or is an input error when the server
/// would answer it with 400.
pub fn review_for(
    obj: &Value,
    index: usize,
    user: &UserInfo,
) -> Result<Option<Review>, review::DecodeError> {
    if obj.get("kind").and_then(Value::as_str) == Some(review::KIND) {
        return review::decode(obj.to_string().as_bytes()).map(Some);
    }
    let Some(api_version) = obj.get("apiVersion").and_then(Value::as_str) else {
        return Ok(None);
    };
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let Some(kind) = obj.get("kind").and_then(Value::as_str) else {
        return Ok(None);
    };
    if Kind::from_gvk(group, version, kind).is_none() {
        return Ok(None);
    }
    let meta = obj.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    Ok(Some(Review {
        api_version: review::API_VERSION.into(),
        request: AdmissionRequest {
            uid: format!("00000000-0000-0000-0000-{index:012}"),
            kind: Gvk {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
            },
            sub_resource: None,
            name: field("name").unwrap_or_default().into(),
            namespace: Some(field("namespace").unwrap_or("default").into()),
            operation: Operation::Create,
            user_info: user.clone(),
            object: Some(obj.clone()),
            old_object: None,
            dry_run: true,
        },
    }))
}

/// Mutation, then validation of the patched object.
pub async fn judge(webhook: &Webhook, source: String, review: Review) -> Judged {
    let mutation = webhook.review(Endpoint::Mutate, &review).await;
    let mut patched = review.clone();
    if let (Some(patch), Some(obj)) = (mutation.decoded_patch(), patched.request.object.as_mut()) {
        // Our own patch applies to the object it was made from.
        let _ = json_patch::patch(obj, &patch);
    }
    let validation = webhook.review(Endpoint::Validate, &patched).await;
    let req = &patched.request;
    let obj_meta = req.object.as_ref().and_then(|o| o.get("metadata"));
    Judged {
        source,
        kind: req.kind.kind.clone(),
        namespace: req.namespace.clone().unwrap_or_default(),
        name: if req.name.is_empty() {
            obj_meta
                .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        } else {
            req.name.clone()
        },
        mutation,
        validation,
    }
}

/// Runs `check`; exit 0 all allowed, 1 something denied, 2 usage or input error.
pub fn run(args: CheckArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_inner(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut docs: Vec<Document> = Vec::new();
    for f in &args.files {
        docs.extend(object_files::read_path(f, args.recursive)?);
    }
    let mut vms = match &args.objects {
        Some(path) => StaticVms::from_path(path, args.recursive)?,
        None => StaticVms::default(),
    };
    // VMs next to their VMIs in the same files are owners too.
    for d in &docs {
        vms.insert(&d.value);
    }
    let webhook = Webhook {
        policy: args.decision.policy(args.mode),
        gate: Arc::new(GateFlag::new(feature_gate::parse_list(&args.feature_gates))),
        vms: Arc::new(vms),
        metrics: Arc::new(Metrics::new()),
    };
    let user = UserInfo {
        username: Some(args.user.clone()),
        groups: args.groups.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut judged = Vec::new();
    let mut skipped = Vec::new();
    let mut exempt = Vec::new();
    for (i, d) in docs.into_iter().enumerate() {
        let is_review = d.value.get("kind").and_then(Value::as_str) == Some(review::KIND);
        match review_for(&d.value, i + 1, &user) {
            Ok(Some(r))
                if !is_review
                    && (args.exempt_namespaces.iter())
                        .any(|ns| Some(ns.as_str()) == r.request.namespace.as_deref()) =>
            {
                exempt.push((d.source, r.request));
            }
            Ok(Some(r)) => judged.push(runtime.block_on(judge(&webhook, d.source, r))),
            Ok(None) => skipped.push(d),
            Err(e) => anyhow::bail!("{}: {e}", d.source),
        }
    }
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &judged)?;
            writeln!(out)?;
        }
        Output::Text => {
            for j in &judged {
                write_text(&mut out, j)?;
            }
            for (source, r) in &exempt {
                let ns = r.namespace.as_deref().unwrap_or_default();
                writeln!(
                    out,
                    "{source}: {} {ns}/{}: not judged (namespace {ns} is exempt from the webhook; see --exempt-namespace)",
                    r.kind.kind, r.name
                )?;
            }
            for d in &skipped {
                let kind = d
                    .value
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or("(no kind)");
                writeln!(
                    out,
                    "{}: {kind}: not judged (not a KubeVirt object this webhook handles)",
                    d.source
                )?;
            }
            let denied = judged.iter().filter(|j| !j.allowed()).count();
            writeln!(
                out,
                "{} objects judged: {} allowed, {denied} denied",
                judged.len(),
                judged.len() - denied
            )?;
        }
    }
    Ok(if judged.iter().all(Judged::allowed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn write_text(out: &mut impl Write, j: &Judged) -> std::io::Result<()> {
    let target = if j.namespace.is_empty() {
        j.name.clone()
    } else {
        format!("{}/{}", j.namespace, j.name)
    };
    let verdict = if j.allowed() { "allowed" } else { "DENIED" };
    writeln!(out, "{}: {} {target}: {verdict}", j.source, j.kind)?;
    for r in [&j.mutation, &j.validation] {
        if let Some(causes) = r
            .status
            .as_ref()
            .and_then(|s| s.details.as_ref())
            .map(|d| &d.causes)
        {
            for c in causes {
                writeln!(out, "  denied: {}: {}", c.field, c.message)?;
            }
        }
        for w in &r.warnings {
            writeln!(out, "  warning: {w}")?;
        }
    }
    if let Some(p) = j.mutation.decoded_patch() {
        writeln!(out, "  patch (mutating webhook): {}", json!(p))?;
    }
    Ok(())
}
