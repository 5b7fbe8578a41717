//! The validating webhook's rules (admission contract, "Validation").
//!
//! Each rule is one function; "rule N" is row N of the README's Behaviour
//! table. Rules read the [`Facts`] of the object and, on UPDATE, of the old
//! object; ratcheting compares the two.

use serde_json::Value;

use super::facts::{BootOnceForm, Fact, Facts};
use super::kinds::Kind;
use super::{
    gate_names, AdmissionRequest, BootOnceMode, Cause, CauseReason, Context, Operation, Owner,
    Verdict, BOOTONCE, BOOTONCE_ANNOTATION,
};

const SUPPORTED: &str = "supported values: \"Reboot\", \"Terminate\"";

/// runStrategies whose combination with `Terminate` surprises users.
const TERMINATE_SURPRISES: [(&str, &str); 3] = [
    (
        "RerunOnFailure",
        "a guest reboot ends the VMI as Succeeded and RerunOnFailure does not restart it",
    ),
    (
        "Manual",
        "a guest reboot stops the VM until someone starts it again",
    ),
    (
        "Halted",
        "the VM is halted; when started, a guest reboot will stop it again",
    ),
];

struct Judge<'a> {
    kind: Kind,
    ctx: Context<'a>,
    trusted: bool,
    facts: Facts<'a>,
    /// The old object's facts, on UPDATE.
    old: Option<Facts<'a>>,
    verdict: Verdict,
}

impl<'a> Judge<'a> {
    fn deny(&mut self, reason: CauseReason, field: String, message: String) {
        self.verdict.causes.push(Cause {
            reason,
            field,
            message,
        });
    }

    fn warn(&mut self, message: String) {
        self.verdict.warnings.push(message);
    }

    /// Ratcheting: an UPDATE keeping the old value (picked from the old
    /// object's facts by `old`) unchanged.
    fn unchanged(
        &self,
        new: Option<&Value>,
        old: impl FnOnce(&Facts<'a>) -> Option<&'a Value>,
    ) -> bool {
        self.old.as_ref().is_some_and(|o| old(o) == new)
    }

    /// The gate rule (2) with the ratcheting decided by the caller (`kept`),
    /// and `undo` saying how to do without the gate.
    fn require_gate(&mut self, f: String, value: &Value, what: &str, kept: bool, undo: &str) {
        if self.ctx.gate {
            return;
        }
        if kept {
            self.warn(format!(
                "{f}: {what} is kept because it is unchanged, but the feature gate {} is disabled, so KubeVirt ignores it",
                gate_names()
            ));
        } else if self.trusted {
            self.warn(format!(
                "{f}: {what} was admitted for a trusted KubeVirt requester although the feature gate {} is disabled",
                gate_names()
            ));
        } else {
            self.deny(
                CauseReason::FieldValueInvalid,
                f,
                format!(
                    "Invalid value: {}: {what} requires the feature gate {GATE_NAME}; enable \"{GATE_NAME}\" (or its upstream name \"{UPSTREAM}\") in the KubeVirt resource's spec.configuration.developerConfiguration.featureGates, or {undo}",
                    value,
                    GATE_NAME = super::GATE,
                    UPSTREAM = super::GATE_UPSTREAM,
                ),
            );
        }
    }

    fn bootonce(&self) -> Option<BootOnceForm> {
        self.facts.bootonce(self.ctx.policy.bootonce)
    }
}

pub(super) fn validate(
    kind: Kind,
    req: &AdmissionRequest,
    obj: &Value,
    ctx: Context<'_>,
    owner: &Owner,
) -> Verdict {
    let update = req.operation == Operation::Update;
    let mut j = Judge {
        kind,
        ctx,
        trusted: ctx.policy.trusted.contains(&req.user_info),
        facts: Facts::of(kind, obj),
        old: req
            .old_object
            .as_ref()
            .filter(|_| update)
            .map(|old| Facts::of(kind, old)),
        verdict: Verdict::default(),
    };
    // The order of the calls is the order of causes and warnings in answers.
    reboot_policy_value(&mut j);
    reboot_policy_gate(&mut j);
    if kind == Kind::Vmi {
        vmi_annotation(&mut j);
        if !j.trusted {
            match req.operation {
                Operation::Create => vmi_annotation_owner(&mut j, owner),
                Operation::Update => vmi_immutable(&mut j),
                _ => {}
            }
        }
    } else {
        bootonce_gate(&mut j);
        bootonce_spelling(&mut j);
        bootonce_conflicts(&mut j);
        terminate_surprises(&mut j);
        restart_needed(&mut j);
        reserved_annotations(&mut j);
    }
    j.verdict
}

/// Rule 1: a present rebootPolicy is `Reboot` or `Terminate`.
fn reboot_policy_value(j: &mut Judge<'_>) {
    let rp = j.facts.reboot_policy;
    let Some(value) = rp.value else { return };
    if !matches!(value.as_str(), Some("Reboot" | "Terminate")) {
        j.deny(
            CauseReason::FieldValueNotSupported,
            rp.field(),
            format!("Unsupported value: {value}: {SUPPORTED}"),
        );
    }
}

/// Rule 2 for rebootPolicy: it needs the gate.
fn reboot_policy_gate(j: &mut Judge<'_>) {
    let rp = j.facts.reboot_policy;
    let Some(value) = rp.value else { return };
    let kept = j.unchanged(rp.value, |o| o.reboot_policy.value);
    j.require_gate(rp.field(), value, "rebootPolicy", kept, "remove the field");
}

/// Rule 2 for BootOnce (VMs and pools): it needs the gate, in either form.
fn bootonce_gate(j: &mut Judge<'_>) {
    let Some(
        rs @ Fact {
            value: Some(value), ..
        },
    ) = j.facts.run_strategy
    else {
        return;
    };
    match j.bootonce() {
        Some(BootOnceForm::Native) => {
            let kept = j.unchanged(rs.value, |o| o.run_strategy.and_then(|f| f.value));
            j.require_gate(
                rs.field(),
                value,
                "runStrategy BootOnce",
                kept,
                "remove the field",
            );
        }
        // Compat mode stores BootOnce as Once + annotation: the same feature,
        // the same gate, kept while the old object was compat BootOnce too.
        Some(BootOnceForm::Compat) => {
            let mode = j.ctx.policy.bootonce;
            let kept = j.old.as_ref().is_some_and(|o| o.bootonce(mode).is_some());
            let annotations = j.facts.vm_annotation.map(|a| a.field()).unwrap_or_default();
            j.require_gate(
                rs.field(),
                value,
                &format!(
                    "runStrategy BootOnce (stored as runStrategy Once with the annotation {BOOTONCE_ANNOTATION}: BootOnce in {annotations})"
                ),
                kept,
                &format!("remove the annotation from {annotations}"),
            );
        }
        None => {}
    }
}

/// Rule 4: BootOnce spelled in another case.
fn bootonce_spelling(j: &mut Judge<'_>) {
    let Some(rs) = j.facts.run_strategy else {
        return;
    };
    if let Some(s) = rs
        .as_str()
        .filter(|s| *s != BOOTONCE && s.eq_ignore_ascii_case(BOOTONCE))
    {
        j.deny(
            CauseReason::FieldValueNotSupported,
            rs.field(),
            format!("Unsupported value: \"{s}\": runStrategy values are case-sensitive; did you mean \"BootOnce\"?"),
        );
    }
}

/// Rule 3: BootOnce with `running`, or with template rebootPolicy `Reboot`.
fn bootonce_conflicts(j: &mut Judge<'_>) {
    if j.bootonce().is_none() {
        return;
    }
    let running = j.facts.running;
    if let Some((f, value)) = running.and_then(|r| Some((r.field(), r.value?))) {
        j.deny(
            CauseReason::FieldValueInvalid,
            f.clone(),
            format!(
                "Invalid value: {value}: running cannot be set together with runStrategy BootOnce; remove {f}"
            ),
        );
    }
    if j.facts.reboot_policy.as_str() == Some("Reboot") {
        j.deny(
            CauseReason::FieldValueInvalid,
            j.facts.reboot_policy.field(),
            "Invalid value: \"Reboot\": runStrategy BootOnce ends the VM at the first guest reboot; use rebootPolicy \"Terminate\" or leave it unset".into(),
        );
    }
}

/// Rule 8 (warning): `Terminate` with a runStrategy that does not restart the VM.
fn terminate_surprises(j: &mut Judge<'_>) {
    if j.facts.reboot_policy.as_str() != Some("Terminate") {
        return;
    }
    let rs = j.facts.run_strategy_str();
    if let Some((rs, why)) = TERMINATE_SURPRISES.iter().find(|(s, _)| Some(*s) == rs) {
        j.warn(format!(
            "{}: rebootPolicy Terminate with runStrategy {rs}: {why}",
            j.facts.reboot_policy.field()
        ));
    }
}

/// Rule 9 (warning): a running VM's rebootPolicy or BootOnce changes at the next start.
fn restart_needed(j: &mut Judge<'_>) {
    let Some(old) = j.old.as_ref().filter(|_| j.kind == Kind::Vm) else {
        return;
    };
    let mode = j.ctx.policy.bootonce;
    let rp_changed = old.reboot_policy.value != j.facts.reboot_policy.value;
    let bootonce_changed = old.bootonce(mode).is_some() != j.facts.bootonce(mode).is_some();
    if (old.reports_running || j.facts.reports_running) && (rp_changed || bootonce_changed) {
        let what = if rp_changed {
            "rebootPolicy"
        } else {
            "the switch to or from runStrategy BootOnce"
        };
        j.warn(format!(
            "the VM has a running VMI: {what} takes effect at the next start; restart the VM to apply it"
        ));
    }
}

/// Rules 5 and 6 for VMs, VMIRS and pools: the reserved annotation on object
/// or template metadata.
fn reserved_annotations(j: &mut Judge<'_>) {
    // In compat mode the mutating webhook itself writes the annotation on
    // `Once` VMs; it only describes Once + Terminate, so it is harmless there.
    let compat_ok = j.ctx.policy.bootonce == BootOnceMode::Compat
        && j.facts.run_strategy_str() == Some("Once")
        && j.facts.reboot_policy.as_str() != Some("Reboot");
    for (i, a) in j.facts.annotations.clone().into_iter().enumerate() {
        let Some(value) = a.value else {
            continue;
        };
        let f = a.field();
        check_annotation_value(j, &f, value);
        let set_here = !j.unchanged(a.value, |o| o.annotations.get(i).and_then(|a| a.value));
        // Only the VM-level and VMI template metadata: a pool's own metadata
        // is never written by the webhook.
        if !j.trusted && set_here && !(compat_ok && a.compat_written) {
            let hint = match (j.kind, j.ctx.policy.bootonce) {
                (Kind::Vmirs, _) => "remove it; BootOnce is a runStrategy of VirtualMachines and VirtualMachinePools, which VirtualMachineInstanceReplicaSets do not have",
                (Kind::Pool, BootOnceMode::Native) => "set spec.virtualMachineTemplate.spec.runStrategy: BootOnce on the VirtualMachinePool instead",
                (Kind::Pool, BootOnceMode::Compat) => "set spec.virtualMachineTemplate.spec.runStrategy: BootOnce on the VirtualMachinePool instead; the webhook writes this annotation itself",
                (_, BootOnceMode::Native) => "set spec.runStrategy: BootOnce on the VirtualMachine instead",
                (_, BootOnceMode::Compat) => "set spec.runStrategy: BootOnce on the VirtualMachine instead; the webhook writes this annotation itself",
            };
            j.deny(
                CauseReason::FieldValueForbidden,
                f,
                format!("Forbidden: the annotation {BOOTONCE_ANNOTATION} is reserved for KubeVirt; {hint}"),
            );
        }
    }
}

/// Rule 6: the reserved annotation's only value is `BootOnce`.
fn check_annotation_value(j: &mut Judge<'_>, field: &str, value: &Value) {
    if value.as_str() != Some(BOOTONCE) {
        j.deny(
            CauseReason::FieldValueNotSupported,
            field.to_owned(),
            format!(
                "Unsupported value: {BOOTONCE_ANNOTATION}={value}: supported values: \"BootOnce\""
            ),
        );
    }
}

/// Where the causes about a VMI's own reserved annotation sit.
const VMI_ANNOTATIONS: &str = "metadata.annotations";

/// Rules 6 and 3 for VMIs: the annotation's value; a VMI carrying it is a
/// BootOnce VM's and must not have rebootPolicy `Reboot`.
fn vmi_annotation(j: &mut Judge<'_>) {
    let Some(value) = j.facts.own_annotation() else {
        return;
    };
    check_annotation_value(j, VMI_ANNOTATIONS, value);
    if j.facts.reboot_policy.as_str() == Some("Reboot") {
        j.deny(
            CauseReason::FieldValueInvalid,
            j.facts.reboot_policy.field(),
            format!("Invalid value: \"Reboot\": a VMI of a BootOnce VM ({BOOTONCE_ANNOTATION}: BootOnce) must terminate on guest reboot; use rebootPolicy \"Terminate\" or leave it unset"),
        );
    }
}

/// Rule 5 for a VMI CREATE by an untrusted requester: the annotation only on
/// VMIs whose controller owner VM is BootOnce.
fn vmi_annotation_owner(j: &mut Judge<'_>, owner: &Owner) {
    if j.facts.own_annotation().is_none() {
        return;
    }
    let f = VMI_ANNOTATIONS.to_owned();
    match owner {
        Owner::Found(vm) if vm.is_bootonce(j.ctx.policy.bootonce) => {}
        Owner::Unavailable(why) => j.deny(
            CauseReason::InternalError,
            f,
            format!("the owner VirtualMachine could not be read to verify the annotation {BOOTONCE_ANNOTATION} ({why}); retry the request"),
        ),
        _ => {
            let hint = match owner {
                // A VMI without a VirtualMachine has no runStrategy to set.
                Owner::None => "remove it; to boot once, run the VMI from a VirtualMachine with spec.runStrategy: BootOnce",
                _ => "set spec.runStrategy: BootOnce on the VirtualMachine instead",
            };
            j.deny(
                CauseReason::FieldValueForbidden,
                f,
                format!("Forbidden: the annotation {BOOTONCE_ANNOTATION} is reserved for VMIs whose controller owner is a VirtualMachine with runStrategy BootOnce; {hint}"),
            )
        }
    }
}

/// Rule 7 for a VMI UPDATE by an untrusted requester: the annotation and
/// rebootPolicy cannot change.
fn vmi_immutable(j: &mut Judge<'_>) {
    let value = j.facts.own_annotation();
    let old_value = j.old.as_ref().and_then(Facts::own_annotation);
    if old_value != value {
        let what = match (old_value, value) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        };
        j.deny(
            CauseReason::FieldValueForbidden,
            VMI_ANNOTATIONS.to_owned(),
            format!("Forbidden: the annotation {BOOTONCE_ANNOTATION} cannot be {what} on an existing VMI; it follows the VirtualMachine's runStrategy"),
        );
    }
    let rp = j.facts.reboot_policy;
    if j.old
        .as_ref()
        .is_some_and(|o| o.reboot_policy.value != rp.value)
    {
        let shown = rp.value.map_or_else(|| "null".to_owned(), Value::to_string);
        j.deny(
            CauseReason::FieldValueInvalid,
            rp.field(),
            format!("Invalid value: {shown}: field is immutable; rebootPolicy of a VMI cannot change while it exists, edit the VirtualMachine and restart it instead"),
        );
    }
}
