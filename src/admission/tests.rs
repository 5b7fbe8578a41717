//! Table-driven tests of the decisions: one row per case, each asserting the
//! exact outcome (field paths, reasons, message parts, patched object).

use serde_json::{json, Value};

use super::review::{AdmissionRequest, Gvk, Operation, UserInfo};
use super::*;

const USER: &str = "alice";
const CONTROLLER: &str = "system:serviceaccount:kubevirt:kubevirt-controller";

fn policy(mode: Mode, bootonce: BootOnceMode) -> Policy {
    Policy {
        trusted: Trusted::new("kubevirt", &["ops-bot".into()], &["kubevirt-admins".into()]),
        mode,
        bootonce,
    }
}

fn gvk(kind: Kind) -> Gvk {
    let (group, version) = match kind {
        Kind::Pool => ("pool.kubevirt.io", "v1alpha1"),
        _ => ("kubevirt.io", "v1"),
    };
    Gvk {
        group: group.into(),
        version: version.into(),
        kind: kind.as_str().into(),
    }
}

fn request(
    kind: Kind,
    op: Operation,
    user: &str,
    obj: Value,
    old: Option<Value>,
) -> AdmissionRequest {
    AdmissionRequest {
        uid: "uid-1".into(),
        kind: gvk(kind),
        sub_resource: None,
        name: "x".into(),
        namespace: Some("ns".into()),
        operation: op,
        user_info: UserInfo {
            username: Some(user.into()),
            groups: vec!["system:authenticated".into()],
        },
        object: Some(obj),
        old_object: old,
        dry_run: false,
    }
}

/// A CREATE request (no old object).
fn create(kind: Kind, user: &str, obj: Value) -> AdmissionRequest {
    request(kind, Operation::Create, user, obj, None)
}

fn vm(run_strategy: Option<&str>, reboot_policy: Option<Value>) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"domain": {"devices": {}}}}}
    });
    if let Some(rs) = run_strategy {
        v["spec"]["runStrategy"] = json!(rs);
    }
    if let Some(rp) = reboot_policy {
        v["spec"]["template"]["spec"]["domain"]["rebootPolicy"] = rp;
    }
    v
}

fn vmi(reboot_policy: Option<&str>, annotation: Option<&str>, owner: bool) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"domain": {"devices": {}}}
    });
    if let Some(rp) = reboot_policy {
        v["spec"]["domain"]["rebootPolicy"] = json!(rp);
    }
    if let Some(a) = annotation {
        v["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: a });
    }
    if owner {
        v["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "x",
            "uid": "vm-uid", "controller": true, "blockOwnerDeletion": true
        }]);
    }
    v
}

fn vmirs(reboot_policy: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceReplicaSet",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"replicas": 2, "template": {"spec": {"domain": {}}}}
    });
    if let Some(rp) = reboot_policy {
        v["spec"]["template"]["spec"]["domain"]["rebootPolicy"] = json!(rp);
    }
    v
}

fn pool(run_strategy: Option<&str>, reboot_policy: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "pool.kubevirt.io/v1alpha1", "kind": "VirtualMachinePool",
        "metadata": {"name": "x", "namespace": "ns"},
        "spec": {"replicas": 2, "virtualMachineTemplate": {"metadata": {}, "spec": {
            "template": {"metadata": {}, "spec": {"domain": {}}}}}}
    });
    if let Some(rs) = run_strategy {
        v["spec"]["virtualMachineTemplate"]["spec"]["runStrategy"] = json!(rs);
    }
    if let Some(rp) = reboot_policy {
        v["spec"]["virtualMachineTemplate"]["spec"]["template"]["spec"]["domain"]["rebootPolicy"] =
            json!(rp);
    }
    v
}

fn owner(rs: RunStrategy, annotated: bool) -> Owner {
    Owner::Found(VmInfo {
        uid: Some("vm-uid".into()),
        run_strategy: rs,
        annotated,
    })
}

/// `decide` for the validating webhook with policy `p` and gate `gate`.
fn validate(p: &Policy, req: &AdmissionRequest, gate: bool, owner: &Owner) -> Verdict {
    let v = decide(Endpoint::Validate, req, Context { policy: p, gate }, owner);
    skip_means_untouched(Endpoint::Validate, req, p, owner, &v);
    v
}

/// `decide` for the mutating webhook with policy `p` and gate `gate`.
fn mutate(p: &Policy, req: &AdmissionRequest, gate: bool, owner: &Owner) -> Verdict {
    let v = decide(Endpoint::Mutate, req, Context { policy: p, gate }, owner);
    skip_means_untouched(Endpoint::Mutate, req, p, owner, &v);
    v
}

#[path = "../../tests/support/match_conditions.rs"]
mod match_conditions;

thread_local! {
    static WEBHOOKS: [match_conditions::Webhook; 2] = [
        match_conditions::base_webhook("/validate"),
        match_conditions::base_webhook("/mutate"),
    ];
}

/// Every row also checks the manifests' matchConditions: when they tell the
/// API server to skip the request, the verdict must be "allowed, no patch, no
/// warning" (tests/match_conditions.rs checks fixtures and generated
/// requests). Rows that hand `decide` an owner the server would not have
/// looked up are not requests the server can see, so they are left out.
fn skip_means_untouched(
    endpoint: Endpoint,
    req: &AdmissionRequest,
    p: &Policy,
    owner: &Owner,
    v: &Verdict,
) {
    if owner_to_resolve(endpoint, req, p).is_none() && *owner != Owner::None {
        return;
    }
    let json = serde_json::to_value(req).expect("requests serialise");
    let webhook = match endpoint {
        Endpoint::Validate => 0,
        Endpoint::Mutate => 1,
    };
    let outcome = WEBHOOKS
        .with(|w| w[webhook].evaluate(&json))
        .unwrap_or_else(|e| panic!("matchConditions fail on {json}: {e}"));
    if let match_conditions::Outcome::Skip(condition) = outcome {
        assert!(
            v.causes.is_empty() && v.patch.is_empty() && v.warnings.is_empty(),
            "matchCondition {condition} skips /{} for {json}, but the webhook answers {v:?}",
            endpoint.as_str()
        );
    }
}

/// What a row expects: causes as (field, reason, message part), warnings whole.
struct Expect {
    causes: &'static [(&'static str, CauseReason, &'static str)],
    warnings: &'static [&'static str],
}

const ALLOW: Expect = Expect {
    causes: &[],
    warnings: &[],
};

fn check_row(name: &str, v: &Verdict, want: &Expect) {
    let got: Vec<(&str, CauseReason)> = v
        .causes
        .iter()
        .map(|c| (c.field.as_str(), c.reason))
        .collect();
    let exp: Vec<(&str, CauseReason)> = want.causes.iter().map(|(f, r, _)| (*f, *r)).collect();
    assert_eq!(got, exp, "{name}: causes {:#?}", v.causes);
    for (c, (_, _, part)) in v.causes.iter().zip(want.causes) {
        assert!(
            c.message.contains(part),
            "{name}: message {:?} lacks {part:?}",
            c.message
        );
    }
    assert_eq!(
        v.warnings.len(),
        want.warnings.len(),
        "{name}: warnings {:#?}",
        v.warnings
    );
    for (w, whole) in v.warnings.iter().zip(want.warnings) {
        assert_eq!(w, whole, "{name}: warning");
    }
}

const TMPL_RP: &str = "spec.template.spec.domain.rebootPolicy";
const POOL_RP: &str = "spec.virtualMachineTemplate.spec.template.spec.domain.rebootPolicy";
use CauseReason::*;

#[test]
fn validation_rules_on_create() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    #[rustfmt::skip]
    let rows: Vec<(&str, Kind, Value, bool, &str, Expect)> = vec![
        ("VM Terminate, gate on", Kind::Vm, vm(Some("Always"), Some(json!("Terminate"))), true, USER, ALLOW),
        ("VM Reboot, gate on", Kind::Vm, vm(Some("Always"), Some(json!("Reboot"))), true, USER, ALLOW),
        ("VM without the field, gate off", Kind::Vm, vm(Some("Always"), None), false, USER, ALLOW),
        ("VM Terminate, gate off", Kind::Vm, vm(Some("Always"), Some(json!("Terminate"))), false, USER,
            Expect { causes: &[(TMPL_RP, FieldValueInvalid, "requires the feature gate RecreateVMIOnReboot")], warnings: &[] }),
        ("VM lowercase value", Kind::Vm, vm(None, Some(json!("terminate"))), true, USER,
            Expect { causes: &[(TMPL_RP, FieldValueNotSupported, r#"Unsupported value: "terminate": supported values: "Reboot", "Terminate""#)], warnings: &[] }),
        ("VM number value", Kind::Vm, vm(None, Some(json!(5))), true, USER,
            Expect { causes: &[(TMPL_RP, FieldValueNotSupported, "Unsupported value: 5")], warnings: &[] }),
        ("VM object value", Kind::Vm, vm(None, Some(json!({"a": 1}))), true, USER,
            Expect { causes: &[(TMPL_RP, FieldValueNotSupported, "Unsupported value: {")], warnings: &[] }),
        ("bad value and gate off: both causes", Kind::Vm, vm(None, Some(json!("Off"))), false, USER,
            Expect { causes: &[(TMPL_RP, FieldValueNotSupported, "\"Off\""), (TMPL_RP, FieldValueInvalid, "RebootPolicy")], warnings: &[] }),
        ("VMI Terminate gate off", Kind::Vmi, vmi(Some("Terminate"), None, false), false, USER,
            Expect { causes: &[("spec.domain.rebootPolicy", FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("VMI Terminate gate off, kubevirt-controller", Kind::Vmi, vmi(Some("Terminate"), None, false), false, CONTROLLER,
            Expect { causes: &[], warnings: &[
                "spec.domain.rebootPolicy: rebootPolicy was admitted for a trusted KubeVirt requester although the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled",
            ] }),
        ("VMIRS Terminate gate off", Kind::Vmirs, vmirs(Some("Terminate")), false, USER,
            Expect { causes: &[(TMPL_RP, FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("VMIRS bad value", Kind::Vmirs, vmirs(Some("Restart")), true, USER,
            Expect { causes: &[(TMPL_RP, FieldValueNotSupported, "\"Restart\"")], warnings: &[] }),
        ("pool Terminate gate off", Kind::Pool, pool(None, Some("Terminate")), false, USER,
            Expect { causes: &[(POOL_RP, FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("BootOnce gate on", Kind::Vm, vm(Some("BootOnce"), None), true, USER, ALLOW),
        ("BootOnce gate off", Kind::Vm, vm(Some("BootOnce"), None), false, USER,
            Expect { causes: &[("spec.runStrategy", FieldValueInvalid, "runStrategy BootOnce requires the feature gate RecreateVMIOnReboot")], warnings: &[] }),
        ("BootOnce with Reboot", Kind::Vm, vm(Some("BootOnce"), Some(json!("Reboot"))), true, USER,
            Expect { causes: &[(TMPL_RP, FieldValueInvalid, "use rebootPolicy \"Terminate\"")], warnings: &[] }),
        ("BootOnce with Terminate", Kind::Vm, vm(Some("BootOnce"), Some(json!("Terminate"))), true, USER, ALLOW),
        ("bootonce lowercase", Kind::Vm, vm(Some("bootonce"), None), true, USER,
            Expect { causes: &[("spec.runStrategy", FieldValueNotSupported, "did you mean \"BootOnce\"")], warnings: &[] }),
        ("BOOTONCE uppercase", Kind::Vm, vm(Some("BOOTONCE"), None), true, USER,
            Expect { causes: &[("spec.runStrategy", FieldValueNotSupported, "did you mean")], warnings: &[] }),
        ("other runStrategy not judged", Kind::Vm, vm(Some("Rerun"), None), true, USER, ALLOW),
        ("pool BootOnce gate off", Kind::Pool, pool(Some("BootOnce"), None), false, USER,
            Expect { causes: &[("spec.virtualMachineTemplate.spec.runStrategy", FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("pool BootOnce with Reboot", Kind::Pool, pool(Some("BootOnce"), Some("Reboot")), true, USER,
            Expect { causes: &[(POOL_RP, FieldValueInvalid, "BootOnce")], warnings: &[] }),
        ("pool bootOnce case", Kind::Pool, pool(Some("bootOnce"), None), true, USER,
            Expect { causes: &[("spec.virtualMachineTemplate.spec.runStrategy", FieldValueNotSupported, "did you mean")], warnings: &[] }),
        ("Terminate + RerunOnFailure warns", Kind::Vm, vm(Some("RerunOnFailure"), Some(json!("Terminate"))), true, USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy Terminate with runStrategy RerunOnFailure: a guest reboot ends the VMI as Succeeded and RerunOnFailure does not restart it",
            ] }),
        ("Terminate + Manual warns", Kind::Vm, vm(Some("Manual"), Some(json!("Terminate"))), true, USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy Terminate with runStrategy Manual: a guest reboot stops the VM until someone starts it again",
            ] }),
        ("Terminate + Halted warns", Kind::Vm, vm(Some("Halted"), Some(json!("Terminate"))), true, USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy Terminate with runStrategy Halted: the VM is halted; when started, a guest reboot will stop it again",
            ] }),
        ("pool Terminate + Manual warns", Kind::Pool, pool(Some("Manual"), Some("Terminate")), true, USER,
            Expect { causes: &[], warnings: &[
                "spec.virtualMachineTemplate.spec.template.spec.domain.rebootPolicy: rebootPolicy Terminate with runStrategy Manual: a guest reboot stops the VM until someone starts it again",
            ] }),
        ("Terminate + Always: no warning", Kind::Vm, vm(Some("Always"), Some(json!("Terminate"))), true, USER, ALLOW),
    ];
    for (name, kind, obj, gate, user, want) in rows {
        let req = create(kind, user, obj);
        let v = validate(&p, &req, gate, &Owner::None);
        check_row(name, &v, &want);
    }
}

/// One rule for null, whatever the field: the API server prunes nulls from
/// KubeVirt objects before the webhook sees them, so a null value is judged
/// as absent (what `check` sees of a manifest is what the cluster admits).
#[test]
fn null_is_absent_for_every_field() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let mut running_null = vm(Some("BootOnce"), None);
    running_null["spec"]["running"] = Value::Null;
    let mut pool_running_null = pool(Some("BootOnce"), None);
    pool_running_null["spec"]["virtualMachineTemplate"]["spec"]["running"] = Value::Null;
    #[rustfmt::skip]
    let rows: Vec<(&str, Kind, Value, bool)> = vec![
        ("VM rebootPolicy null, gate on", Kind::Vm, vm(Some("Always"), Some(Value::Null)), true),
        ("VM rebootPolicy null, gate off", Kind::Vm, vm(Some("Always"), Some(Value::Null)), false),
        ("VMI rebootPolicy null, gate off", Kind::Vmi, with_null_reboot_policy(vmi(None, None, false)), false),
        ("VM runStrategy null, gate off", Kind::Vm, vm(None, None), false),
        ("BootOnce VM with running null", Kind::Vm, running_null, true),
        ("BootOnce pool with running null", Kind::Pool, pool_running_null, true),
    ];
    for (name, kind, mut obj, gate) in rows {
        if name.contains("runStrategy null") {
            obj["spec"]["runStrategy"] = Value::Null;
        }
        let v = validate(&p, &create(kind, USER, obj), gate, &Owner::None);
        check_row(name, &v, &ALLOW);
    }
}

#[test]
fn running_with_bootonce() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let mut obj = vm(Some("BootOnce"), None);
    obj["spec"]["running"] = json!(false);
    let req = create(Kind::Vm, USER, obj);
    let v = validate(&p, &req, true, &Owner::None);
    check_row(
        "running",
        &v,
        &Expect {
            causes: &[(
                "spec.running",
                FieldValueInvalid,
                "running cannot be set together with runStrategy BootOnce",
            )],
            warnings: &[],
        },
    );

    let mut obj = pool(Some("BootOnce"), None);
    obj["spec"]["virtualMachineTemplate"]["spec"]["running"] = json!(true);
    let req = create(Kind::Pool, USER, obj);
    let v = validate(&p, &req, true, &Owner::None);
    check_row(
        "pool running",
        &v,
        &Expect {
            causes: &[(
                "spec.virtualMachineTemplate.spec.running",
                FieldValueInvalid,
                "running",
            )],
            warnings: &[],
        },
    );
}

#[test]
fn reserved_annotation_on_templates() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let annotate = |mut v: Value, meta: &str| {
        let ptr = format!("{meta}/annotations");
        let target = meta
            .split('/')
            .filter(|s| !s.is_empty())
            .fold(&mut v, |v, k| &mut v[k]);
        target["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
        let _ = ptr;
        v
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, Kind, Value, &str, Expect)> = vec![
        ("VM metadata by user", Kind::Vm, annotate(vm(Some("BootOnce"), None), "/metadata"), USER,
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "reserved for KubeVirt")], warnings: &[] }),
        ("VM template by user", Kind::Vm, annotate(vm(Some("BootOnce"), None), "/spec/template/metadata"), USER,
            Expect { causes: &[("spec.template.metadata.annotations", FieldValueForbidden, "runStrategy: BootOnce")], warnings: &[] }),
        ("VM template by controller", Kind::Vm, annotate(vm(Some("BootOnce"), None), "/spec/template/metadata"), CONTROLLER, ALLOW),
        ("VM template by trusted user flag", Kind::Vm, annotate(vm(Some("BootOnce"), None), "/spec/template/metadata"), "ops-bot", ALLOW),
        ("VMIRS template by user", Kind::Vmirs, annotate(vmirs(None), "/spec/template/metadata"), USER,
            Expect { causes: &[("spec.template.metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
        ("pool VM template by user", Kind::Pool, annotate(pool(Some("BootOnce"), None), "/spec/virtualMachineTemplate/metadata"), USER,
            Expect { causes: &[("spec.virtualMachineTemplate.metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
        ("pool VMI template by user", Kind::Pool, annotate(pool(Some("BootOnce"), None), "/spec/virtualMachineTemplate/spec/template/metadata"), USER,
            Expect { causes: &[("spec.virtualMachineTemplate.spec.template.metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
        ("Once + annotation in native mode by user", Kind::Vm, annotate(vm(Some("Once"), None), "/metadata"), USER,
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
    ];
    for (name, kind, obj, user, want) in rows {
        let req = create(kind, user, obj);
        let v = validate(&p, &req, true, &Owner::None);
        check_row(name, &v, &want);
    }
    // A wrong value is wrong for everyone, trusted or not.
    let mut obj = vm(Some("BootOnce"), None);
    obj["spec"]["template"]["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "Always" });
    let req = create(Kind::Vm, CONTROLLER, obj);
    let v = validate(&p, &req, true, &Owner::None);
    check_row(
        "bad value",
        &v,
        &Expect {
            causes: &[(
                "spec.template.metadata.annotations",
                FieldValueNotSupported,
                "supported values: \"BootOnce\"",
            )],
            warnings: &[],
        },
    );
}

#[test]
fn reserved_annotation_on_vmi_create() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    #[rustfmt::skip]
    let rows: Vec<(&str, Value, &str, Owner, Expect)> = vec![
        ("owner BootOnce", vmi(None, Some("BootOnce"), true), USER, owner(RunStrategy::BootOnce, false), ALLOW),
        ("owner Always", vmi(None, Some("BootOnce"), true), USER, owner(RunStrategy::Other, false),
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "controller owner is a VirtualMachine with runStrategy BootOnce")], warnings: &[] }),
        ("no owner", vmi(None, Some("BootOnce"), false), USER, Owner::None,
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "reserved for VMIs whose controller owner is a VirtualMachine with runStrategy BootOnce; remove it")], warnings: &[] }),
        ("owner gone", vmi(None, Some("BootOnce"), true), USER, Owner::NotFound,
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
        ("owner unreadable", vmi(None, Some("BootOnce"), true), USER, Owner::Unavailable("API down".into()),
            Expect { causes: &[("metadata.annotations", InternalError, "retry")], warnings: &[] }),
        ("trusted, no owner", vmi(None, Some("BootOnce"), false), CONTROLLER, Owner::None, ALLOW),
        ("trusted group", vmi(None, Some("BootOnce"), false), "bob", Owner::None, ALLOW),
        ("wrong value even trusted", vmi(None, Some("Once"), true), CONTROLLER, Owner::None,
            Expect { causes: &[("metadata.annotations", FieldValueNotSupported, "runstrategy.kubevirt.io=\"Once\"")], warnings: &[] }),
        ("annotation with Reboot", vmi(Some("Reboot"), Some("BootOnce"), true), CONTROLLER, Owner::None,
            Expect { causes: &[("spec.domain.rebootPolicy", FieldValueInvalid, "must terminate on guest reboot")], warnings: &[] }),
        ("compat owner in native mode", vmi(None, Some("BootOnce"), true), USER, owner(RunStrategy::Once, true),
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
    ];
    for (name, obj, user, own, want) in rows {
        let mut req = create(Kind::Vmi, user, obj);
        if user == "bob" {
            req.user_info.groups.push("kubevirt-admins".into());
        }
        let v = validate(&p, &req, true, &own);
        check_row(name, &v, &want);
    }
}

/// The owner reference carries the VMI's kubevirt.io/vm-generation, which
/// the owner cache must reach; without it, the cache answers as before; a
/// value that is not a number can never be reached (the API answers).
#[test]
fn owner_reference_carries_the_vms_generation() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    for (annotation, want) in [
        (None, None),
        (Some(json!("7")), Some(7)),
        (Some(json!("0")), Some(0)),
        (Some(json!("seven")), Some(i64::MAX)),
        (Some(json!("")), Some(i64::MAX)),
        (Some(json!(7)), Some(i64::MAX)),
        (Some(json!("99999999999999999999")), Some(i64::MAX)),
    ] {
        let mut obj = vmi(None, None, true);
        if let Some(a) = &annotation {
            obj["metadata"]["annotations"] = json!({ "kubevirt.io/vm-generation": a });
        }
        let req = create(Kind::Vmi, CONTROLLER, obj);
        let got = owner_to_resolve(Endpoint::Mutate, &req, &p).map(|o| o.vm_generation);
        assert_eq!(got, Some(want), "{annotation:?}");
    }
}

#[test]
fn owner_is_resolved_only_when_needed() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let want = Some(OwnerRef {
        namespace: "ns".into(),
        name: "x".into(),
        uid: Some("vm-uid".into()),
        vm_generation: None,
    });
    let req = create(Kind::Vmi, USER, vmi(None, None, true));
    assert_eq!(owner_to_resolve(Endpoint::Mutate, &req, &p), want);
    assert_eq!(
        owner_to_resolve(Endpoint::Validate, &req, &p),
        None,
        "no annotation: nothing to verify"
    );
    let req = create(Kind::Vmi, USER, vmi(None, Some("BootOnce"), true));
    assert_eq!(owner_to_resolve(Endpoint::Validate, &req, &p), want);
    let req = create(Kind::Vmi, CONTROLLER, vmi(None, Some("BootOnce"), true));
    assert_eq!(
        owner_to_resolve(Endpoint::Validate, &req, &p),
        None,
        "trusted requester"
    );
    let mut obj = vmi(None, None, true);
    obj["metadata"]["ownerReferences"][0]["kind"] = json!("VirtualMachineInstanceReplicaSet");
    let req = create(Kind::Vmi, USER, obj);
    assert_eq!(
        owner_to_resolve(Endpoint::Mutate, &req, &p),
        None,
        "not a VM owner"
    );
    let mut obj = vmi(None, None, true);
    obj["metadata"]["ownerReferences"][0]["controller"] = json!(false);
    let req = create(Kind::Vmi, USER, obj);
    assert_eq!(
        owner_to_resolve(Endpoint::Mutate, &req, &p),
        None,
        "not the controller"
    );
}

#[test]
fn ratcheting_and_updates() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let running = |mut v: Value| {
        v["status"] = json!({"created": true, "printableStatus": "Running"});
        v
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, Kind, Value, Value, bool, &str, Expect)> = vec![
        ("unchanged rebootPolicy, gate off", Kind::Vm,
            vm(Some("Always"), Some(json!("Terminate"))), vm(Some("Always"), Some(json!("Terminate"))), false, USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it",
            ] }),
        ("changed rebootPolicy, gate off", Kind::Vm,
            vm(Some("Always"), Some(json!("Reboot"))), vm(Some("Always"), Some(json!("Terminate"))), false, USER,
            Expect { causes: &[(TMPL_RP, FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("added rebootPolicy, gate off", Kind::Vm,
            vm(Some("Always"), Some(json!("Terminate"))), vm(Some("Always"), None), false, USER,
            Expect { causes: &[(TMPL_RP, FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("unchanged BootOnce, gate off", Kind::Vm,
            vm(Some("BootOnce"), None), vm(Some("BootOnce"), None), false, USER,
            Expect { causes: &[], warnings: &[
                "spec.runStrategy: runStrategy BootOnce is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it",
            ] }),
        ("switch to BootOnce, gate off", Kind::Vm,
            vm(Some("BootOnce"), None), vm(Some("Always"), None), false, USER,
            Expect { causes: &[("spec.runStrategy", FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("rebootPolicy change on running VM warns", Kind::Vm,
            running(vm(Some("Always"), Some(json!("Terminate")))), running(vm(Some("Always"), None)), true, USER,
            Expect { causes: &[], warnings: &[
                "the VM has a running VMI: rebootPolicy takes effect at the next start; restart the VM to apply it",
            ] }),
        ("switch to BootOnce on running VM warns", Kind::Vm,
            running(vm(Some("BootOnce"), None)), running(vm(Some("Always"), None)), true, USER,
            Expect { causes: &[], warnings: &[
                "the VM has a running VMI: the switch to or from runStrategy BootOnce takes effect at the next start; restart the VM to apply it",
            ] }),
        ("switch from BootOnce on stopped VM: no warning", Kind::Vm,
            vm(Some("Always"), None), vm(Some("BootOnce"), None), true, USER, ALLOW),
        ("VMI rebootPolicy change by user", Kind::Vmi,
            vmi(Some("Terminate"), None, false), vmi(Some("Reboot"), None, false), true, USER,
            Expect { causes: &[("spec.domain.rebootPolicy", FieldValueInvalid, "field is immutable")], warnings: &[] }),
        ("VMI rebootPolicy removed by user", Kind::Vmi,
            vmi(None, None, false), vmi(Some("Terminate"), None, false), true, USER,
            Expect { causes: &[("spec.domain.rebootPolicy", FieldValueInvalid, "immutable")], warnings: &[] }),
        ("VMI rebootPolicy change by controller", Kind::Vmi,
            vmi(Some("Terminate"), None, false), vmi(Some("Reboot"), None, false), true, CONTROLLER, ALLOW),
        ("VMI annotation added by user", Kind::Vmi,
            vmi(None, Some("BootOnce"), true), vmi(None, None, true), true, USER,
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "cannot be added")], warnings: &[] }),
        ("VMI annotation removed by user", Kind::Vmi,
            vmi(Some("Terminate"), None, true), vmi(Some("Terminate"), Some("BootOnce"), true), true, USER,
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "cannot be removed")], warnings: &[] }),
        ("VMI annotation kept, label edit by user", Kind::Vmi,
            vmi(Some("Terminate"), Some("BootOnce"), true), vmi(Some("Terminate"), Some("BootOnce"), true), true, USER, ALLOW),
        ("VMI annotation removed by handler", Kind::Vmi,
            vmi(Some("Terminate"), None, true), vmi(Some("Terminate"), Some("BootOnce"), true), true,
            "system:serviceaccount:kubevirt:kubevirt-handler", ALLOW),
        ("VMI annotation removed by SA of another namespace", Kind::Vmi,
            vmi(Some("Terminate"), None, true), vmi(Some("Terminate"), Some("BootOnce"), true), true,
            "system:serviceaccount:default:kubevirt-handler",
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "removed")], warnings: &[] }),
        ("VM template annotation kept on update", Kind::Vm,
            {let mut v = vm(Some("BootOnce"), None); v["spec"]["template"]["metadata"]["annotations"] = json!({BOOTONCE_ANNOTATION: "BootOnce"}); v},
            {let mut v = vm(Some("BootOnce"), None); v["spec"]["template"]["metadata"]["annotations"] = json!({BOOTONCE_ANNOTATION: "BootOnce"}); v},
            true, USER, ALLOW),
    ];
    for (name, kind, new, old, gate, user, want) in rows {
        let req = request(kind, Operation::Update, user, new, Some(old));
        let v = validate(&p, &req, gate, &Owner::None);
        check_row(name, &v, &want);
    }
}

#[test]
fn untouched_requests() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let bad = vm(Some("bootonce"), Some(json!("nope")));
    let mut sub = request(Kind::Vm, Operation::Update, USER, bad.clone(), None);
    sub.sub_resource = Some("status".into());
    let mut other = create(Kind::Vm, USER, bad.clone());
    other.kind = Gvk {
        group: "apps".into(),
        version: "v1".into(),
        kind: "Deployment".into(),
    };
    let mut vmirs_alpha = create(Kind::Vmirs, USER, bad.clone());
    vmirs_alpha.kind.group = "example.com".into();
    let del = request(Kind::Vm, Operation::Delete, USER, bad, None);
    for (name, req) in [
        ("subresource", sub),
        ("other kind", other),
        ("other group", vmirs_alpha),
        ("delete", del),
    ] {
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            let v = decide(
                endpoint,
                &req,
                Context {
                    policy: &p,
                    gate: false,
                },
                &owner(RunStrategy::BootOnce, false),
            );
            assert_eq!(v, Verdict::default(), "{name}");
        }
    }
}

#[test]
fn warn_mode_turns_denials_into_warnings() {
    let p = policy(Mode::Warn, BootOnceMode::Native);
    let req = create(
        Kind::Vm,
        USER,
        vm(Some("bootonce"), Some(json!("Terminate"))),
    );
    let v = validate(&p, &req, false, &Owner::None);
    assert!(v.allowed());
    assert!(v.causes.is_empty());
    assert_eq!(
        v.warnings,
        [
            "would be denied (warn mode): spec.template.spec.domain.rebootPolicy: Invalid value: \"Terminate\": rebootPolicy requires the feature gate RecreateVMIOnReboot; enable \"RecreateVMIOnReboot\" (or its upstream name \"RebootPolicy\") in the KubeVirt resource's spec.configuration.developerConfiguration.featureGates, or remove the field",
            "would be denied (warn mode): spec.runStrategy: Unsupported value: \"bootonce\": runStrategy values are case-sensitive; did you mean \"BootOnce\"?",
        ]
    );
}

fn mutated(obj: &Value, v: &Verdict) -> Value {
    let mut out = obj.clone();
    json_patch::patch(&mut out, &v.patch).expect("patch applies");
    out
}

/// name, VMI, owner, expected annotations, expected rebootPolicy, patch length
type MutationRow = (
    &'static str,
    Value,
    Owner,
    Option<Value>,
    Option<Value>,
    usize,
);

fn with_null_reboot_policy(mut vmi: Value) -> Value {
    vmi["spec"]["domain"]["rebootPolicy"] = Value::Null;
    vmi
}

#[test]
fn mutation_of_vmi_create() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    #[rustfmt::skip]
    let rows: Vec<MutationRow> = vec![
        // name, VMI, owner, expected annotations, expected rebootPolicy, ops
        ("BootOnce owner, bare VMI", vmi(None, None, true), owner(RunStrategy::BootOnce, false),
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), Some(json!("Terminate")), 2),
        ("BootOnce owner keeps explicit Terminate", vmi(Some("Terminate"), None, true), owner(RunStrategy::BootOnce, false),
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), Some(json!("Terminate")), 1),
        ("BootOnce owner keeps Reboot (validation denies it)", vmi(Some("Reboot"), None, true), owner(RunStrategy::BootOnce, false),
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), Some(json!("Reboot")), 1),
        ("already stamped: nothing more", vmi(Some("Terminate"), Some("BootOnce"), true), owner(RunStrategy::BootOnce, false),
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), Some(json!("Terminate")), 0),
        ("wrong value is replaced", vmi(None, Some("Once"), true), owner(RunStrategy::BootOnce, false),
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), Some(json!("Terminate")), 2),
        ("not BootOnce: forged annotation removed", vmi(None, Some("BootOnce"), true), owner(RunStrategy::Other, false),
            Some(json!({})), None, 1),
        ("not BootOnce, clean: nothing", vmi(None, None, true), owner(RunStrategy::Other, false), None, None, 0),
        ("owner gone: nothing", vmi(None, Some("BootOnce"), true), Owner::NotFound,
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), None, 0),
        ("no owner: nothing", vmi(None, None, false), Owner::None, None, None, 0),
        ("compat owner ignored in native mode", vmi(None, None, true), owner(RunStrategy::Once, true), None, None, 0),
        ("rebootPolicy null is absent, so filled", with_null_reboot_policy(vmi(None, None, true)), owner(RunStrategy::BootOnce, false),
            Some(json!({BOOTONCE_ANNOTATION: "BootOnce"})), Some(json!("Terminate")), 2),
    ];
    for (name, obj, own, want_ann, want_rp, ops) in rows {
        let req = create(Kind::Vmi, CONTROLLER, obj.clone());
        let v = mutate(&p, &req, true, &own);
        assert!(v.allowed(), "{name}");
        assert_eq!(v.patch.len(), ops, "{name}: {:?}", v.patch);
        let after = mutated(&obj, &v);
        assert_eq!(
            after["metadata"].get("annotations"),
            want_ann.as_ref(),
            "{name}"
        );
        assert_eq!(
            after["spec"]["domain"].get("rebootPolicy"),
            want_rp.as_ref(),
            "{name}"
        );
        // Everything else is untouched.
        assert_eq!(after["spec"]["domain"]["devices"], json!({}), "{name}");
        assert_eq!(
            after["metadata"]["ownerReferences"], obj["metadata"]["ownerReferences"],
            "{name}"
        );
        // Reinvocation on the patched object changes nothing more.
        let again = create(Kind::Vmi, CONTROLLER, after.clone());
        let v2 = mutate(&p, &again, true, &own);
        assert!(
            v2.patch.is_empty(),
            "{name}: reinvocation patched {:?}",
            v2.patch
        );
        // The stamped VMI passes validation (by the controller that creates it, and by a user when owner is BootOnce).
        let check = create(Kind::Vmi, USER, after);
        if matches!(own, Owner::Found(ref vm) if vm.is_bootonce(BootOnceMode::Native))
            && name != "BootOnce owner keeps Reboot (validation denies it)"
        {
            assert!(validate(&p, &check, true, &own).allowed(), "{name}");
        }
    }
}

#[test]
fn patch_shape_is_minimal_and_escaped() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let req = create(Kind::Vmi, CONTROLLER, vmi(None, None, true));
    let v = mutate(&p, &req, true, &owner(RunStrategy::BootOnce, false));
    assert_eq!(
        serde_json::to_value(&v.patch).unwrap(),
        json!([
            {"op": "add", "path": "/metadata/annotations", "value": {BOOTONCE_ANNOTATION: "BootOnce"}},
            {"op": "add", "path": "/spec/domain/rebootPolicy", "value": "Terminate"}
        ])
    );
    let mut obj = vmi(Some("Terminate"), None, true);
    obj["metadata"]["annotations"] = json!({"a/b": "c"});
    let req = create(Kind::Vmi, CONTROLLER, obj);
    let v = mutate(&p, &req, true, &owner(RunStrategy::BootOnce, false));
    assert_eq!(
        serde_json::to_value(&v.patch).unwrap(),
        json!([{"op": "add", "path": "/metadata/annotations/runstrategy.kubevirt.io", "value": "BootOnce"}])
    );
    let mut obj = vmi(None, Some("BootOnce"), true);
    obj["metadata"]["annotations"]["x~y/z"] = json!("1");
    let req = create(Kind::Vmi, CONTROLLER, obj);
    let v = mutate(&p, &req, true, &owner(RunStrategy::Other, false));
    assert_eq!(
        serde_json::to_value(&v.patch).unwrap(),
        json!([{"op": "remove", "path": "/metadata/annotations/runstrategy.kubevirt.io"}])
    );
    // JSON Pointer escaping of a key with '~' and '/'.
    let mut b = super::patch::PatchBuilder::default();
    b.set(&json!({"m": {}}), &["m"], "x~y/z", json!(1));
    assert_eq!(
        serde_json::to_value(&b.ops).unwrap(),
        json!([{"op": "add", "path": "/m/x~0y~1z", "value": 1}])
    );
    // Missing parents are added in one operation.
    let mut b = super::patch::PatchBuilder::default();
    b.set(
        &json!({}),
        &["spec", "domain"],
        "rebootPolicy",
        json!("Terminate"),
    );
    assert_eq!(
        serde_json::to_value(&b.ops).unwrap(),
        json!([{"op": "add", "path": "/spec", "value": {"domain": {"rebootPolicy": "Terminate"}}}])
    );
}

#[test]
fn unreadable_owner_denies_mutation_with_retry_in_both_modes() {
    let unreadable = Owner::Unavailable("connection refused".into());
    let req = create(Kind::Vmi, CONTROLLER, vmi(None, None, true));
    // Warn mode softens policy, not the mechanism: allowing would let a
    // BootOnce VM boot without its annotation.
    for mode in [Mode::Enforce, Mode::Warn] {
        let p = policy(mode, BootOnceMode::Native);
        let v = mutate(&p, &req, true, &unreadable);
        assert!(!v.allowed(), "{mode:?}: {v:?}");
        assert_eq!(v.causes[0].reason, CauseReason::InternalError);
        assert_eq!(v.causes[0].field, "metadata.ownerReferences");
        assert!(v.causes[0].message.contains("connection refused"));
        assert!(v.causes[0].message.contains("retry"));
        assert!(
            v.patch.is_empty() && v.warnings.is_empty(),
            "{mode:?}: {v:?}"
        );
    }
    // Validation's "owner unreadable" is softened like any policy denial in
    // warn mode: a forgery it could have judged would pass there too.
    let p = policy(Mode::Warn, BootOnceMode::Native);
    let forged = create(Kind::Vmi, USER, vmi(None, Some("BootOnce"), false));
    for (owner, says) in [(Owner::None, "reserved"), (unreadable, "retry")] {
        let v = validate(&p, &forged, true, &owner);
        assert!(v.allowed() && v.warnings.len() == 1, "{v:?}");
        assert!(v.warnings[0].contains(says), "{v:?}");
    }
}

#[test]
fn late_verdicts_retry_and_follow_the_mode() {
    let t = std::time::Duration::from_secs(3);
    for mode in [Mode::Enforce, Mode::Warn] {
        let v = late_verdict(t, mode, Endpoint::Mutate);
        assert!(!v.allowed() && v.message().contains("retry"), "{v:?}");
    }
    let v = late_verdict(t, Mode::Enforce, Endpoint::Validate);
    assert!(!v.allowed() && v.message().contains("(3s)"), "{v:?}");
    let v = late_verdict(t, Mode::Warn, Endpoint::Validate);
    assert!(v.allowed(), "{v:?}");
    assert!(
        v.warnings[0]
            .starts_with("would be denied (warn mode): the reboot webhook could not decide"),
        "{v:?}"
    );
}

#[test]
fn denial_message_joins_causes() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let req = create(Kind::Vm, USER, vm(Some("bootonce"), Some(json!("x"))));
    let v = validate(&p, &req, true, &Owner::None);
    assert_eq!(v.causes.len(), 2);
    let msg = v.message();
    for c in &v.causes {
        assert!(msg.contains(&format!("{}: {}", c.field, c.message)));
    }
    let resp = review::response("u", &v);
    let s = serde_json::to_value(&resp).unwrap();
    assert_eq!(s["allowed"], json!(false));
    assert_eq!(s["status"]["code"], json!(422));
    assert_eq!(s["status"]["reason"], json!("Invalid"));
    assert_eq!(
        s["status"]["details"]["causes"].as_array().unwrap().len(),
        2
    );
    assert_eq!(s["status"]["details"]["causes"][0]["field"], json!(TMPL_RP));
}

// ---- BootOnce compat mode (stock KubeVirt) ----

fn compat() -> Policy {
    policy(Mode::Enforce, BootOnceMode::Compat)
}

/// The VM as compat mode stores a BootOnce VM.
fn stored_compat_vm() -> Value {
    let mut v = vm(Some("Once"), Some(json!("Terminate")));
    v["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    v["spec"]["template"]["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    v
}

fn mutate_then_validate(
    p: &Policy,
    req: &AdmissionRequest,
    gate: bool,
) -> (Value, Verdict, Verdict) {
    let m = mutate(p, req, gate, &Owner::None);
    let after = mutated(req.object.as_ref().unwrap(), &m);
    let mut req2 = req.clone();
    req2.object = Some(after.clone());
    let v = validate(p, &req2, gate, &Owner::None);
    (after, m, v)
}

#[test]
fn compat_rewrites_bootonce_vms() {
    let p = compat();
    let stored = stored_compat_vm();
    let mut with_labels_ann = vm(Some("BootOnce"), None);
    with_labels_ann["metadata"]["annotations"] = json!({"team": "infra"});
    let mut expected_labels_ann = stored.clone();
    expected_labels_ann["metadata"]["annotations"]["team"] = json!("infra");
    let mut ssa_reapply = stored.clone();
    ssa_reapply["spec"]["runStrategy"] = json!("BootOnce");
    ssa_reapply["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    ssa_reapply["spec"]["template"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    ssa_reapply["spec"]["template"]["spec"]["domain"]
        .as_object_mut()
        .unwrap()
        .remove("rebootPolicy");
    let mut csa_reapply = stored.clone();
    csa_reapply["spec"]["runStrategy"] = json!("BootOnce");
    let mut no_template_meta = vm(Some("BootOnce"), None);
    no_template_meta["spec"]["template"]
        .as_object_mut()
        .unwrap()
        .remove("metadata");
    let mut expected_no_template_meta = stored.clone();
    expected_no_template_meta["spec"]["template"]["metadata"] =
        json!({"annotations": { BOOTONCE_ANNOTATION: "BootOnce" }});
    let mut to_always = stored.clone();
    to_always["spec"]["runStrategy"] = json!("Always");
    let mut expected_always = stored.clone();
    expected_always["spec"]["runStrategy"] = json!("Always");
    expected_always["metadata"]["annotations"] = json!({});
    expected_always["spec"]["template"]["metadata"]["annotations"] = json!({});

    #[rustfmt::skip]
    let rows: Vec<(&str, Operation, Value, Option<Value>, Value)> = vec![
        ("create BootOnce", Operation::Create, vm(Some("BootOnce"), None), None, stored.clone()),
        ("create keeps other annotations", Operation::Create, with_labels_ann, None, expected_labels_ann),
        ("create without template metadata", Operation::Create, no_template_meta, None, expected_no_template_meta),
        ("client-side re-apply of the original manifest", Operation::Update, csa_reapply, Some(stored.clone()), stored.clone()),
        ("server-side re-apply of the original manifest", Operation::Update, ssa_reapply, Some(stored.clone()), stored.clone()),
        ("unrelated edit of a stored compat VM", Operation::Update, stored.clone(), Some(stored.clone()), stored.clone()),
        ("update from BootOnce to Always drops both annotations", Operation::Update, to_always, Some(stored.clone()), expected_always),
        ("plain Once stays plain Once", Operation::Create, vm(Some("Once"), None), None, vm(Some("Once"), None)),
        ("Always untouched", Operation::Create, vm(Some("Always"), None), None, vm(Some("Always"), None)),
    ];
    for (name, op, obj, old, want) in rows {
        let req = request(Kind::Vm, op, USER, obj, old);
        let (after, m, v) = mutate_then_validate(&p, &req, true);
        assert_eq!(after, want, "{name}: patch {:?}", m.patch);
        assert!(
            v.allowed(),
            "{name}: the rewritten VM validates: {:?}",
            v.causes
        );
        // Reinvocation and re-application are stable: nothing more to patch.
        let mut again = req.clone();
        again.object = Some(after.clone());
        let m2 = mutate(&p, &again, true, &Owner::None);
        assert!(
            m2.patch.is_empty(),
            "{name}: reinvocation patched {:?}",
            m2.patch
        );
    }
    // Re-applying never grows the patch: the same ops as on the first create, or fewer.
    let req = create(Kind::Vm, USER, vm(Some("BootOnce"), None));
    let first = mutate(&p, &req, true, &Owner::None);
    assert_eq!(
        first.patch.len(),
        4,
        "runStrategy, two annotation maps, rebootPolicy"
    );
}

#[test]
fn compat_leaves_bootonce_alone_without_the_gate() {
    let p = compat();
    let req = create(Kind::Vm, USER, vm(Some("BootOnce"), None));
    let (after, m, v) = mutate_then_validate(&p, &req, false);
    assert!(m.patch.is_empty());
    assert_eq!(after["spec"]["runStrategy"], "BootOnce");
    check_row(
        "gate off",
        &v,
        &Expect {
            causes: &[("spec.runStrategy", FieldValueInvalid, "feature gate")],
            warnings: &[],
        },
    );
}

/// The compat rewrite re-applies or undoes only its own stored form, `Once`
/// with the annotation: a VM stored as native `BootOnce` (a trusted
/// requester while the gate was off) is not one it wrote.
#[test]
fn compat_rewrite_follows_only_its_own_stored_form() {
    let p = compat();
    let native = vm(Some("BootOnce"), None);
    let req = request(
        Kind::Vm,
        Operation::Update,
        USER,
        native.clone(),
        Some(native.clone()),
    );
    let m = mutate(&p, &req, false, &Owner::None);
    assert!(
        m.patch.is_empty(),
        "gate off, left for validation: {:?}",
        m.patch
    );

    let mut old = native;
    old["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    let mut to_always = vm(Some("Always"), None);
    to_always["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    let req = request(Kind::Vm, Operation::Update, USER, to_always, Some(old));
    let m = mutate(&p, &req, true, &Owner::None);
    assert!(m.patch.is_empty(), "not ours to remove: {:?}", m.patch);
}

#[test]
fn compat_pool_templates() {
    let p = compat();
    let req = create(Kind::Pool, USER, pool(Some("BootOnce"), None));
    let (after, _, v) = mutate_then_validate(&p, &req, true);
    assert!(v.allowed(), "{:?}", v.causes);
    let t = &after["spec"]["virtualMachineTemplate"];
    assert_eq!(t["spec"]["runStrategy"], "Once");
    assert_eq!(
        t["metadata"]["annotations"][BOOTONCE_ANNOTATION],
        "BootOnce"
    );
    assert_eq!(
        t["spec"]["template"]["metadata"]["annotations"][BOOTONCE_ANNOTATION],
        "BootOnce"
    );
    assert_eq!(
        t["spec"]["template"]["spec"]["domain"]["rebootPolicy"],
        "Terminate"
    );
    assert_eq!(
        after["metadata"].get("annotations"),
        None,
        "the pool's own metadata is not annotated"
    );
    // A VM the pool controller creates from that template passes as is.
    let mut vm_from_pool = t.clone();
    vm_from_pool["apiVersion"] = json!("kubevirt.io/v1");
    vm_from_pool["kind"] = json!("VirtualMachine");
    let req = create(Kind::Vm, CONTROLLER, vm_from_pool.clone());
    let (after_vm, m, v) = mutate_then_validate(&p, &req, true);
    assert!(m.patch.is_empty() && v.allowed() && after_vm == vm_from_pool);
}

#[test]
fn compat_annotation_rules() {
    let p = compat();
    let ann = |mut v: Value| {
        v["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
        v
    };
    #[rustfmt::skip]
    let rows: Vec<(&str, Value, Expect)> = vec![
        ("Once + annotation by a user: describes Once + Terminate", ann(vm(Some("Once"), None)), ALLOW),
        ("Always + annotation by a user", ann(vm(Some("Always"), None)),
            Expect { causes: &[("metadata.annotations", FieldValueForbidden, "webhook writes this annotation itself")], warnings: &[] }),
        ("Once + annotation + Reboot", ann(vm(Some("Once"), Some(json!("Reboot")))),
            Expect { causes: &[(TMPL_RP, FieldValueInvalid, "BootOnce ends the VM"), ("metadata.annotations", FieldValueForbidden, "reserved")], warnings: &[] }),
    ];
    for (name, obj, want) in rows {
        // Validation alone, as if the mutating webhook were bypassed.
        let req = create(Kind::Vm, USER, obj);
        let v = validate(&p, &req, true, &Owner::None);
        check_row(name, &v, &want);
    }
    // VMIs of compat BootOnce VMs are stamped; users may create them with the annotation.
    let own = owner(RunStrategy::Once, true);
    let req = create(Kind::Vmi, CONTROLLER, vmi(None, None, true));
    let m = mutate(&p, &req, true, &own);
    let after = mutated(&vmi(None, None, true), &m);
    assert_eq!(
        after["metadata"]["annotations"][BOOTONCE_ANNOTATION],
        "BootOnce"
    );
    assert_eq!(after["spec"]["domain"]["rebootPolicy"], "Terminate");
    let req = create(Kind::Vmi, USER, after);
    assert!(validate(&p, &req, true, &own).allowed());
    // A plain Once VM (no annotation) is not BootOnce: its VMIs are cleaned.
    let m = mutate(
        &p,
        &create(Kind::Vmi, CONTROLLER, vmi(None, Some("BootOnce"), true)),
        true,
        &owner(RunStrategy::Once, false),
    );
    assert_eq!(
        serde_json::to_value(&m.patch).unwrap(),
        json!([{"op": "remove", "path": "/metadata/annotations/runstrategy.kubevirt.io"}])
    );
}

// ---- review findings ----

#[test]
fn compat_bootonce_with_reboot_reports_only_the_reboot_cause() {
    // The user wrote BootOnce + Reboot and no annotation: the denial must be
    // about rebootPolicy alone, not about annotations the webhook itself wrote.
    let p = compat();
    let req = create(Kind::Vm, USER, vm(Some("BootOnce"), Some(json!("Reboot"))));
    let (_, _, v) = mutate_then_validate(&p, &req, true);
    check_row(
        "VM BootOnce + Reboot",
        &v,
        &Expect {
            causes: &[(TMPL_RP, FieldValueInvalid, "use rebootPolicy \"Terminate\"")],
            warnings: &[],
        },
    );
    let req = create(Kind::Pool, USER, pool(Some("BootOnce"), Some("Reboot")));
    let (_, _, v) = mutate_then_validate(&p, &req, true);
    check_row(
        "pool BootOnce + Reboot",
        &v,
        &Expect {
            causes: &[(POOL_RP, FieldValueInvalid, "use rebootPolicy \"Terminate\"")],
            warnings: &[],
        },
    );
}

/// name, operation, object, old object, user, expectation
type UpdateRow = (
    &'static str,
    Operation,
    Value,
    Option<Value>,
    &'static str,
    Expect,
);

#[test]
fn compat_bootonce_needs_the_gate_with_ratcheting() {
    let p = compat();
    let stored = stored_compat_vm();
    let mut hand_written = vm(Some("Once"), None);
    hand_written["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    let mut csa_reapply = stored.clone();
    csa_reapply["spec"]["runStrategy"] = json!("BootOnce");
    let mut ssa_reapply = vm(Some("BootOnce"), None);
    ssa_reapply["metadata"] = stored["metadata"].clone();
    ssa_reapply["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    #[rustfmt::skip]
    let rows: Vec<UpdateRow> = vec![
        ("hand-written Once + annotation, gate off", Operation::Create, hand_written.clone(), None, USER,
            Expect { causes: &[("spec.runStrategy", FieldValueInvalid, "requires the feature gate RecreateVMIOnReboot")], warnings: &[] }),
        ("annotation added to a plain Once VM, gate off", Operation::Update, hand_written.clone(), Some(vm(Some("Once"), None)), USER,
            Expect { causes: &[("spec.runStrategy", FieldValueInvalid, "feature gate")], warnings: &[] }),
        ("hand-written, trusted, gate off", Operation::Create, hand_written, None, CONTROLLER,
            Expect { causes: &[], warnings: &[
                "spec.runStrategy: runStrategy BootOnce (stored as runStrategy Once with the annotation runstrategy.kubevirt.io: BootOnce in metadata.annotations) was admitted for a trusted KubeVirt requester although the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled",
            ] }),
        ("unrelated edit of a stored compat VM, gate off", Operation::Update, stored.clone(), Some(stored.clone()), USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it", 
                "spec.runStrategy: runStrategy BootOnce (stored as runStrategy Once with the annotation runstrategy.kubevirt.io: BootOnce in metadata.annotations) is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it",
            ] }),
        ("client-side re-apply of BootOnce, gate off", Operation::Update, csa_reapply, Some(stored.clone()), USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it", 
                "spec.runStrategy: runStrategy BootOnce (stored as runStrategy Once with the annotation runstrategy.kubevirt.io: BootOnce in metadata.annotations) is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it",
            ] }),
        ("server-side re-apply of BootOnce, gate off", Operation::Update, ssa_reapply, Some(stored.clone()), USER,
            Expect { causes: &[], warnings: &[
                "spec.template.spec.domain.rebootPolicy: rebootPolicy is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it", 
                "spec.runStrategy: runStrategy BootOnce (stored as runStrategy Once with the annotation runstrategy.kubevirt.io: BootOnce in metadata.annotations) is kept because it is unchanged, but the feature gate RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy) is disabled, so KubeVirt ignores it",
            ] }),
        ("new BootOnce VM, gate off", Operation::Create, vm(Some("BootOnce"), None), None, USER,
            Expect { causes: &[("spec.runStrategy", FieldValueInvalid, "feature gate")], warnings: &[] }),
    ];
    for (name, op, obj, old, user, want) in rows {
        let req = request(Kind::Vm, op, user, obj, old);
        let (after, _, v) = mutate_then_validate(&p, &req, false);
        check_row(name, &v, &want);
        if name.contains("re-apply") {
            assert_eq!(after, stored, "{name}: the same stored object");
        }
    }
}

#[test]
fn compat_does_not_open_the_pools_own_metadata() {
    let p = compat();
    let mut obj = pool(Some("Once"), None);
    obj["metadata"]["annotations"] = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    let req = create(Kind::Pool, USER, obj);
    let v = validate(&p, &req, true, &Owner::None);
    check_row(
        "pool metadata",
        &v,
        &Expect {
            causes: &[("metadata.annotations", FieldValueForbidden, "reserved")],
            warnings: &[],
        },
    );
}

#[test]
fn hints_name_the_right_field_for_each_kind() {
    let p = policy(Mode::Enforce, BootOnceMode::Native);
    let mut obj = pool(Some("BootOnce"), None);
    obj["spec"]["virtualMachineTemplate"]["spec"]["running"] = json!(true);
    let v = validate(&p, &create(Kind::Pool, USER, obj), true, &Owner::None);
    assert!(
        v.causes[0]
            .message
            .ends_with("remove spec.virtualMachineTemplate.spec.running"),
        "{:?}",
        v.causes
    );

    let ann = json!({ BOOTONCE_ANNOTATION: "BootOnce" });
    let mut obj = pool(Some("Always"), None);
    obj["spec"]["virtualMachineTemplate"]["metadata"]["annotations"] = ann.clone();
    let v = validate(&p, &create(Kind::Pool, USER, obj), true, &Owner::None);
    assert!(
        v.causes[0]
            .message
            .contains("set spec.virtualMachineTemplate.spec.runStrategy: BootOnce"),
        "{:?}",
        v.causes
    );

    let mut obj = vmirs(None);
    obj["spec"]["template"]["metadata"] = json!({ "annotations": ann });
    let v = validate(&p, &create(Kind::Vmirs, USER, obj), true, &Owner::None);
    let m = &v.causes[0].message;
    assert!(
        m.contains("remove it") && !m.contains("on the VirtualMachine instead"),
        "{m}"
    );
}

#[test]
fn objects_that_are_not_json_objects_are_bad_requests() {
    let review = |object: Value, old: Value| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u", "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachineInstance"},
            "operation": "UPDATE", "object": object, "oldObject": old}})
        .to_string()
    };
    let vmi = vmi(None, None, true);
    for (object, old, want) in [
        (
            json!("vmi"),
            vmi.clone(),
            "request.object must be a JSON object, got a string",
        ),
        (
            json!([1]),
            vmi.clone(),
            "request.object must be a JSON object, got an array",
        ),
        (
            json!(5),
            vmi.clone(),
            "request.object must be a JSON object, got a number",
        ),
        (
            vmi.clone(),
            json!(true),
            "request.oldObject must be a JSON object, got a boolean",
        ),
    ] {
        let err = review::decode(review(object, old).as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    assert!(review::decode(review(vmi.clone(), Value::Null).as_bytes()).is_ok());
    assert!(review::decode(review(vmi.clone(), vmi).as_bytes()).is_ok());
}

// ---- audit annotations ----

#[test]
fn audit_annotations_say_why_and_what() {
    use std::collections::BTreeMap;
    let enforce = policy(Mode::Enforce, BootOnceMode::Native);
    let warn = policy(Mode::Warn, BootOnceMode::Native);
    let compat = compat();
    let bootonce_owner = owner(RunStrategy::BootOnce, false);
    let plain_owner = owner(RunStrategy::Other, false);
    let gate_off_vm = create(Kind::Vm, USER, vm(Some("BootOnce"), None));
    let annotated_vmi = create(Kind::Vmi, USER, vmi(Some("Reboot"), Some("BootOnce"), true));
    const BOOTONCE_GATE: &str = "spec.runStrategy: FieldValueInvalid";
    type Row<'a> = (&'a str, Verdict, &'a [(&'a str, &'a str)]);
    let rows: Vec<Row> = vec![
        ("denial lists every cause as field: reason",
            validate(&enforce, &create(Kind::Vm, USER, vm(Some("bootonce"), Some(json!("x")))), true, &Owner::None),
            &[("denied", "spec.template.spec.domain.rebootPolicy: FieldValueNotSupported; spec.runStrategy: FieldValueNotSupported")]),
        ("gate off", validate(&enforce, &gate_off_vm, false, &Owner::None), &[("denied", BOOTONCE_GATE)]),
        ("warn mode keeps the would-be denial", validate(&warn, &gate_off_vm, false, &Owner::None), &[("would-deny", BOOTONCE_GATE)]),
        ("allowed without change: nothing", validate(&enforce, &gate_off_vm, true, &Owner::None), &[]),
        ("stamp with the defaulted rebootPolicy",
            mutate(&enforce, &create(Kind::Vmi, CONTROLLER, vmi(None, None, true)), true, &bootonce_owner),
            &[("stamped", "metadata.annotations[runstrategy.kubevirt.io]=BootOnce, spec.domain.rebootPolicy=Terminate")]),
        ("stamp keeps an explicit rebootPolicy",
            mutate(&enforce, &create(Kind::Vmi, CONTROLLER, vmi(Some("Terminate"), None, true)), true, &bootonce_owner),
            &[("stamped", "metadata.annotations[runstrategy.kubevirt.io]=BootOnce")]),
        ("already stamped (reinvocation): nothing",
            mutate(&enforce, &create(Kind::Vmi, CONTROLLER, vmi(Some("Terminate"), Some("BootOnce"), true)), true, &bootonce_owner),
            &[]),
        ("forged annotation removed", mutate(&enforce, &annotated_vmi, true, &plain_owner),
            &[("unstamped", "metadata.annotations[runstrategy.kubevirt.io] removed")]),
        ("unreadable owner", mutate(&warn, &annotated_vmi, true, &Owner::Unavailable("timeout".into())),
            &[("denied", "metadata.ownerReferences: InternalError")]),
        ("compat rewrite",
            mutate(&compat, &create(Kind::Vm, USER, vm(Some("BootOnce"), None)), true, &Owner::None),
            &[("compat-rewrite", "spec.runStrategy=Once, metadata.annotations[runstrategy.kubevirt.io]=BootOnce, spec.template.metadata.annotations[runstrategy.kubevirt.io]=BootOnce, spec.template.spec.domain.rebootPolicy=Terminate")]),
        ("compat: leaving BootOnce removes the annotations",
            mutate(&compat, &request(Kind::Vm, Operation::Update, USER, {
                let mut v = stored_compat_vm();
                v["spec"]["runStrategy"] = json!("Always");
                v
            }, Some(stored_compat_vm())), true, &Owner::None),
            &[("compat-rewrite", "metadata.annotations[runstrategy.kubevirt.io] removed, spec.template.metadata.annotations[runstrategy.kubevirt.io] removed")]),
    ];
    for (name, verdict, want) in rows {
        let want: BTreeMap<String, String> = want
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let response = review::response("u", &verdict);
        assert_eq!(response.audit_annotations, want, "{name}: {verdict:#?}");
        // The API server requires qualified names (<= 63 characters) as keys.
        for key in want.keys() {
            assert!(
                key.len() <= 63 && key.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{name}: {key}"
            );
        }
    }
}
