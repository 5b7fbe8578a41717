//! One admission review, end to end but without HTTP: resolve the owner,
//! decide, count, log. The server and `check` both call [`Webhook::review`].

use std::sync::Arc;
use std::time::Instant;

use crate::admission::review::{self, AdmissionResponse, Review};
use crate::admission::{self, Context, Endpoint, Owner, Policy};
use crate::feature_gate::GateSource;
use crate::metrics::{DenialLabels, EndpointLabels, ErrorClass, Metrics, RequestLabels};
use crate::owners::{self, VmSource};

/// The sources and settings every review needs.
pub struct Webhook {
    pub policy: Policy,
    pub gate: Arc<dyn GateSource>,
    pub vms: Arc<dyn VmSource>,
    pub metrics: Arc<Metrics>,
}

impl Webhook {
    /// Judges one decoded review for `endpoint`.
    pub async fn review(&self, endpoint: Endpoint, review: &Review) -> AdmissionResponse {
        let started = Instant::now();
        let req = &review.request;
        let owner = match admission::owner_to_resolve(endpoint, req, &self.policy) {
            Some(r) => owners::resolve(self.vms.as_ref(), &r).await,
            None => Owner::None,
        };
        if matches!(owner, Owner::Unavailable(_)) {
            self.metrics.error(ErrorClass::owner_unavailable);
        }
        let ctx = Context {
            policy: &self.policy,
            gate: self.gate.enabled(),
        };
        let verdict = admission::decide(endpoint, req, ctx, &owner);
        let response = review::response(&req.uid, &verdict);

        let kind = req.kind.kind.as_str();
        let kind_label = if req.kind().is_some() { kind } else { "other" };
        let denied = verdict.causes.iter().map(|c| (c, "deny"));
        for (cause, action) in denied.chain(verdict.waived.iter().map(|c| (c, "warn"))) {
            self.metrics
                .denial_causes
                .get_or_create(&DenialLabels {
                    endpoint: endpoint.as_str(),
                    kind: kind_label.to_owned(),
                    reason: cause.reason.as_str(),
                    field: cause.field.clone(),
                    action,
                })
                .inc();
        }
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.as_str(),
                kind: kind_label.to_owned(),
                operation: req.operation.as_str(),
                allowed: response.allowed,
                mutated: response.patch.is_some(),
                warned: !response.warnings.is_empty(),
            })
            .inc();
        self.metrics
            .latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.as_str(),
            })
            .observe(started.elapsed().as_secs_f64());

        let user = req.user_info.username.as_deref().unwrap_or("");
        if response.allowed {
            tracing::debug!(
                uid = %req.uid, endpoint = endpoint.as_str(), kind, operation = req.operation.as_str(),
                object = %req.object_ref(), user, dry_run = req.dry_run,
                patched = response.patch.is_some(), warnings = response.warnings.len(),
                "allowed"
            );
        } else {
            tracing::info!(
                uid = %req.uid, endpoint = endpoint.as_str(), kind, operation = req.operation.as_str(),
                object = %req.object_ref(), user, dry_run = req.dry_run,
                reason = %verdict.message(),
                "denied"
            );
        }
        response
    }
}
