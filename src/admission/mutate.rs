//! The mutating webhook: stamp VMIs of BootOnce VMs; in compat mode, rewrite
//! BootOnce VMs into the `Once` + `Terminate` + annotation form stock KubeVirt
//! accepts.

use serde_json::Value;

use super::facts::{BootOnceForm, Facts};
use super::kinds::Kind;
use super::patch::PatchBuilder;
use super::{
    AdmissionRequest, BootOnceMode, Cause, CauseReason, Context, Mutation, Operation, Owner,
    Verdict, BOOTONCE, BOOTONCE_ANNOTATION,
};

pub(super) fn mutate(
    kind: Kind,
    req: &AdmissionRequest,
    obj: &Value,
    ctx: Context<'_>,
    owner: &Owner,
) -> Verdict {
    match kind {
        Kind::Vmi if req.operation == Operation::Create => stamp_vmi(obj, ctx, owner),
        Kind::Vm | Kind::Pool if ctx.policy.bootonce == BootOnceMode::Compat => {
            compat_rewrite(kind, req, obj, ctx)
        }
        _ => Verdict::default(),
    }
}

/// Mutation (README, Behaviour): the VMI follows its owner VM.
fn stamp_vmi(vmi: &Value, ctx: Context<'_>, owner: &Owner) -> Verdict {
    let mut p = PatchBuilder::default();
    let mut verdict = Verdict::default();
    let mut action = "stamped";
    match owner {
        Owner::Found(vm) if vm.is_bootonce(ctx.policy.bootonce) => {
            p.set(vmi, &["metadata", "annotations"], BOOTONCE_ANNOTATION, BOOTONCE.into());
            p.set_default(vmi, &["spec", "domain"], "rebootPolicy", "Terminate".into());
        }
        Owner::Found(_) => {
            action = "unstamped";
            p.remove(vmi, &["metadata", "annotations"], BOOTONCE_ANNOTATION)
        }
        Owner::None | Owner::NotFound => {}
        Owner::Unavailable(why) => verdict.causes.push(Cause {
            reason: CauseReason::InternalError,
            field: "metadata.ownerReferences".into(),
            message: format!(
                "the owner VirtualMachine could not be read ({why}), so it is unknown whether this VMI must carry {BOOTONCE_ANNOTATION}: BootOnce; retry the request"
            ),
        }),
    }
    verdict.patch = p.ops;
    verdict.mutation = Some(Mutation {
        action,
        changes: p.changes,
    });
    verdict
}

/// Compat mode (issue: BootOnce on stock KubeVirt): `runStrategy: BootOnce`
/// becomes `Once` + reserved annotation (VM and VMI template) + template
/// `rebootPolicy: Terminate`; leaving BootOnce drops the annotations.
fn compat_rewrite(kind: Kind, req: &AdmissionRequest, obj: &Value, ctx: Context<'_>) -> Verdict {
    let layout = kind.layout();
    let (Some(vm_spec), Some(vm_meta), Some(tmpl_meta)) =
        (layout.vm_spec, layout.vm_meta, layout.vmi_template_meta)
    else {
        return Verdict::default();
    };
    let facts = Facts::of(kind, obj);
    let rs = facts.run_strategy_str();
    // The old object is a VM this webhook stored as compat BootOnce.
    let was_bootonce = req.operation == Operation::Update
        && req.old_object.as_ref().is_some_and(|old| {
            Facts::of(kind, old).bootonce(ctx.policy.bootonce) == Some(BootOnceForm::Compat)
        });
    // BootOnce with template `Reboot` is denied; rewriting it first would add
    // annotation causes about annotations the user never wrote.
    let reboot = facts.reboot_policy.as_str() == Some("Reboot");
    let mut p = PatchBuilder::default();
    match rs {
        // Without the gate, leave BootOnce for validation to deny with the
        // plain gate message. A VM already stored as compat BootOnce is
        // rewritten anyway, so that re-applying its manifest ratchets like
        // any unchanged field.
        Some(BOOTONCE) if (ctx.gate || was_bootonce) && !reboot => {
            p.set(obj, vm_spec, "runStrategy", "Once".into());
            let annotations = |m: &[&'static str]| [m, &["annotations"]].concat();
            p.set(
                obj,
                &annotations(vm_meta),
                BOOTONCE_ANNOTATION,
                BOOTONCE.into(),
            );
            p.set(
                obj,
                &annotations(tmpl_meta),
                BOOTONCE_ANNOTATION,
                BOOTONCE.into(),
            );
            p.set_default(obj, layout.domain, "rebootPolicy", "Terminate".into());
        }
        Some(BOOTONCE | "Once") => {}
        // Only undo what this webhook did: the old object was a compat BootOnce VM.
        _ if was_bootonce => {
            for meta in [vm_meta, tmpl_meta] {
                p.remove(obj, &[meta, &["annotations"]].concat(), BOOTONCE_ANNOTATION);
            }
        }
        _ => {}
    }
    Verdict {
        patch: p.ops,
        mutation: Some(Mutation {
            action: "compat-rewrite",
            changes: p.changes,
        }),
        ..Verdict::default()
    }
}
