//! The validating webhook's rules (admission contract, "Validation").

use serde_json::Value;

use super::kinds::{annotation, field, get, Kind};
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
    update: bool,
    obj: &'a Value,
    old: Option<&'a Value>,
    verdict: Verdict,
}

impl Judge<'_> {
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

    /// The old object's value at `path`, on UPDATE.
    fn old_at(&self, path: &[&str]) -> Option<&Value> {
        self.old.and_then(|o| get(o, path))
    }

    /// Ratcheting: an UPDATE keeping the old value at `path` unchanged.
    fn unchanged(&self, path: &[&str], new: Option<&Value>) -> bool {
        self.update && self.old.is_some() && self.old_at(path) == new
    }

    /// The gate rule for a field that needs it; ratchets and trusts as the contract says.
    fn require_gate(&mut self, path: &[&str], value: &Value, what: &str) {
        let kept = self.unchanged(path, Some(value));
        self.require_gate_kept(path, value, what, kept, "remove the field");
    }

    /// The gate rule with the ratcheting decided by the caller (`kept`), and
    /// `undo` saying how to do without the gate.
    fn require_gate_kept(
        &mut self,
        path: &[&str],
        value: &Value,
        what: &str,
        kept: bool,
        undo: &str,
    ) {
        if self.ctx.gate {
            return;
        }
        let f = field(path, &[]);
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
        update,
        obj,
        old: if update {
            req.old_object.as_ref()
        } else {
            None
        },
        verdict: Verdict::default(),
    };
    let layout = kind.layout();
    let rp_path: Vec<&str> = layout
        .vmi_spec
        .iter()
        .copied()
        .chain(["domain", "rebootPolicy"])
        .collect();
    let rp = get(obj, &rp_path);

    reboot_policy(&mut j, &rp_path, rp);
    if kind == Kind::Vmi {
        vmi_rules(&mut j, req, &rp_path, rp, owner);
    } else {
        run_strategy(&mut j, &rp_path, rp);
        template_annotations(&mut j, rp);
    }
    j.verdict
}

/// Rules 1 and 2: the value, and the gate.
fn reboot_policy(j: &mut Judge<'_>, path: &[&str], rp: Option<&Value>) {
    let Some(value) = rp else { return };
    if !matches!(value.as_str(), Some("Reboot" | "Terminate")) {
        j.deny(
            CauseReason::FieldValueNotSupported,
            field(path, &[]),
            format!("Unsupported value: {value}: {SUPPORTED}"),
        );
    }
    j.require_gate(path, value, "rebootPolicy");
}

/// Rule 3 (BootOnce) and the runStrategy warnings of rule 6, for VMs and pools.
fn run_strategy(j: &mut Judge<'_>, rp_path: &[&str], rp: Option<&Value>) {
    let layout = j.kind.layout();
    let Some(vm_spec) = layout.vm_spec else {
        return;
    };
    let rs_path: Vec<&str> = vm_spec.iter().copied().chain(["runStrategy"]).collect();
    let rs_value = get(j.obj, &rs_path);
    let rs = rs_value.and_then(Value::as_str);
    let bootonce = is_bootonce(j.obj, j.kind, j.ctx.policy.bootonce);

    if let (Some(v), Some(BOOTONCE)) = (rs_value, rs) {
        j.require_gate(&rs_path, v, "runStrategy BootOnce");
    }
    // Compat mode stores BootOnce as Once + annotation: the same feature,
    // the same gate, kept while the old object was compat BootOnce too.
    if let (Some(v), Some("Once"), true) = (rs_value, rs, bootonce) {
        let kept = j.update
            && j.old
                .is_some_and(|o| is_bootonce(o, j.kind, j.ctx.policy.bootonce));
        let vm_meta = layout.vm_meta.unwrap_or_default();
        j.require_gate_kept(
            &rs_path,
            v,
            &format!(
                "runStrategy BootOnce (stored as runStrategy Once with the annotation {BOOTONCE_ANNOTATION}: BootOnce in {})",
                field(vm_meta, &["annotations"])
            ),
            kept,
            &format!("remove the annotation from {}", field(vm_meta, &["annotations"])),
        );
    }
    if let Some(s) = rs.filter(|s| *s != BOOTONCE && s.eq_ignore_ascii_case(BOOTONCE)) {
        j.deny(
            CauseReason::FieldValueNotSupported,
            field(&rs_path, &[]),
            format!("Unsupported value: \"{s}\": runStrategy values are case-sensitive; did you mean \"BootOnce\"?"),
        );
    }
    if bootonce {
        let running_path: Vec<&str> = vm_spec.iter().copied().chain(["running"]).collect();
        if let Some(running) = get(j.obj, &running_path).filter(|v| !v.is_null()) {
            j.deny(
                CauseReason::FieldValueInvalid,
                field(&running_path, &[]),
                format!(
                    "Invalid value: {running}: running cannot be set together with runStrategy BootOnce; remove {}",
                    field(&running_path, &[])
                ),
            );
        }
        if rp.and_then(Value::as_str) == Some("Reboot") {
            j.deny(
                CauseReason::FieldValueInvalid,
                field(rp_path, &[]),
                "Invalid value: \"Reboot\": runStrategy BootOnce ends the VM at the first guest reboot; use rebootPolicy \"Terminate\" or leave it unset".into(),
            );
        }
    }

    if rp.and_then(Value::as_str) == Some("Terminate") {
        if let Some((_, why)) = TERMINATE_SURPRISES.iter().find(|(s, _)| Some(*s) == rs) {
            let rs = rs.unwrap_or_default();
            j.warn(format!(
                "{}: rebootPolicy Terminate with runStrategy {rs}: {why}",
                field(rp_path, &[])
            ));
        }
    }

    if j.kind == Kind::Vm && j.update {
        if let Some(old) = j.old {
            let running = |o: &Value| {
                o.pointer("/status/created").and_then(Value::as_bool) == Some(true)
                    || o.pointer("/status/ready").and_then(Value::as_bool) == Some(true)
                    || o.pointer("/status/printableStatus").and_then(Value::as_str)
                        == Some("Running")
            };
            let rp_changed = get(old, rp_path) != rp;
            let bootonce_changed = is_bootonce(old, j.kind, j.ctx.policy.bootonce) != bootonce;
            if (running(old) || running(j.obj)) && (rp_changed || bootonce_changed) {
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
    }
}

/// Whether a VM or pool object counts as BootOnce in `mode`.
fn is_bootonce(obj: &Value, kind: Kind, mode: BootOnceMode) -> bool {
    let layout = kind.layout();
    let (Some(vm_spec), Some(vm_meta)) = (layout.vm_spec, layout.vm_meta) else {
        return false;
    };
    match get(obj, vm_spec)
        .and_then(|s| s.get("runStrategy"))
        .and_then(Value::as_str)
    {
        Some(BOOTONCE) => true,
        Some("Once") => {
            mode == BootOnceMode::Compat
                && annotation(obj, vm_meta).and_then(Value::as_str) == Some(BOOTONCE)
        }
        _ => false,
    }
}

/// Rule 4 for VMs, VMIRS and pools: the reserved annotation on object or template metadata.
fn template_annotations(j: &mut Judge<'_>, rp: Option<&Value>) {
    let layout = j.kind.layout();
    // In compat mode the mutating webhook itself writes the annotation on
    // `Once` VMs; it only describes Once + Terminate, so it is harmless there.
    let compat_ok = j.ctx.policy.bootonce == BootOnceMode::Compat
        && layout.vm_spec.is_some_and(|s| {
            get(j.obj, s)
                .and_then(|s| s.get("runStrategy"))
                .and_then(Value::as_str)
                == Some("Once")
        })
        && rp.and_then(Value::as_str) != Some("Reboot");
    for meta in layout.metas {
        let Some(value) = annotation(j.obj, meta) else {
            continue;
        };
        // Only the VM-level and VMI template metadata: a pool's own metadata
        // is never written by the webhook.
        let compat_ok =
            compat_ok && (layout.vm_meta == Some(*meta) || layout.vmi_template_meta == Some(*meta));
        let f = field(meta, &["annotations"]);
        check_annotation_value(j, &f, value);
        let key_path: Vec<&str> = meta
            .iter()
            .copied()
            .chain(["annotations", BOOTONCE_ANNOTATION])
            .collect();
        let set_here = !j.unchanged(&key_path, Some(value));
        if !j.trusted && set_here && !compat_ok {
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

/// Rules 4 and 5 for VMIs.
fn vmi_rules(
    j: &mut Judge<'_>,
    req: &AdmissionRequest,
    rp_path: &[&str],
    rp: Option<&Value>,
    owner: &Owner,
) {
    let value = annotation(j.obj, &["metadata"]);
    let f = field(&["metadata", "annotations"], &[]);
    if let Some(value) = value {
        check_annotation_value(j, &f, value);
        if rp.and_then(Value::as_str) == Some("Reboot") {
            j.deny(
                CauseReason::FieldValueInvalid,
                field(rp_path, &[]),
                format!("Invalid value: \"Reboot\": a VMI of a BootOnce VM ({BOOTONCE_ANNOTATION}: BootOnce) must terminate on guest reboot; use rebootPolicy \"Terminate\" or leave it unset"),
            );
        }
    }
    if j.trusted {
        return;
    }
    match req.operation {
        Operation::Create if value.is_some() => match owner {
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
        },
        Operation::Update => {
            let old_value = j.old.and_then(|o| annotation(o, &["metadata"]));
            if old_value != value {
                let what = match (old_value, value) {
                    (None, _) => "added",
                    (_, None) => "removed",
                    _ => "changed",
                };
                j.deny(
                    CauseReason::FieldValueForbidden,
                    f,
                    format!("Forbidden: the annotation {BOOTONCE_ANNOTATION} cannot be {what} on an existing VMI; it follows the VirtualMachine's runStrategy"),
                );
            }
            let old_rp = j.old.and_then(|o| get(o, rp_path));
            if j.old.is_some() && old_rp != rp {
                let shown = rp.map_or_else(|| "null".to_owned(), Value::to_string);
                j.deny(
                    CauseReason::FieldValueInvalid,
                    field(rp_path, &[]),
                    format!("Invalid value: {shown}: field is immutable; rebootPolicy of a VMI cannot change while it exists, edit the VirtualMachine and restart it instead"),
                );
            }
        }
        _ => {}
    }
}
