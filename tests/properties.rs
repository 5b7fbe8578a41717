//! Properties of the decisions over generated VMIs, owners, gates, users and
//! modes: the mutation's patch is exactly what the owner case calls for,
//! applies cleanly, reinvocation adds nothing, applying it twice changes
//! nothing more, and the patched VMI passes validation; the rebootPolicy
//! rules give exactly the causes and warnings (whole texts) the contract
//! names, for strings, null, numbers and objects, gate on and off, trusted
//! and untrusted requesters.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kubevirt_reboot_webhook::admission::review::{AdmissionRequest, Gvk, Operation, UserInfo};
use kubevirt_reboot_webhook::admission::{
    decide, BootOnceMode, CauseReason, Context, Endpoint, Mode, Owner, Policy, RunStrategy,
    Trusted, VmInfo, BOOTONCE_ANNOTATION,
};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn any_annotations() -> impl Strategy<Value = Option<Map<String, Value>>> {
    let key = prop_oneof![
        Just(BOOTONCE_ANNOTATION.to_owned()),
        "[a-z0-9./~-]{1,20}",
        Just("a/b~c".to_owned()),
    ];
    let value = prop_oneof![
        Just("BootOnce".to_owned()),
        Just("Once".to_owned()),
        "[ -~]{0,10}"
    ];
    proptest::option::of(proptest::collection::btree_map(key, value, 0..5))
        .prop_map(|m| m.map(|m| m.into_iter().map(|(k, v)| (k, Value::String(v))).collect()))
}

/// Any value a user may put in `rebootPolicy`: the two valid ones, a wrong
/// case, other strings, null, numbers, booleans, objects and arrays.
fn any_reboot_policy() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("Reboot")),
        Just(json!("Terminate")),
        Just(json!("terminate")),
        "[ -~]{0,8}".prop_map(Value::from),
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        Just(json!(1.5)),
        any::<bool>().prop_map(Value::from),
        "[a-z]{1,5}".prop_map(|k| json!({ k: "Terminate" })),
        Just(json!(["Reboot"])),
    ]
}

fn any_vmi() -> impl Strategy<Value = Value> {
    (
        any_annotations(),
        proptest::option::of(any_reboot_policy()),
        any::<bool>(),
        proptest::collection::btree_map("[a-z]{1,8}", "[a-z0-9]{0,8}", 0..4),
    )
        .prop_map(|(annotations, rp, has_domain_extras, labels)| {
            let mut vmi = json!({
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "metadata": {"name": "v", "namespace": "ns", "labels": labels,
                    "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                        "name": "vm", "uid": "u", "controller": true}]},
                "spec": {"domain": {}}
            });
            if let Some(a) = annotations {
                vmi["metadata"]["annotations"] = Value::Object(a);
            }
            if let Some(rp) = rp {
                vmi["spec"]["domain"]["rebootPolicy"] = json!(rp);
            }
            if has_domain_extras {
                vmi["spec"]["domain"]["devices"] = json!({"disks": [{"name": "d"}]});
            }
            vmi
        })
}

fn any_owner() -> impl Strategy<Value = Owner> {
    prop_oneof![
        Just(Owner::None),
        Just(Owner::NotFound),
        Just(Owner::Unavailable("connection refused".into())),
        (
            prop_oneof![
                Just(RunStrategy::BootOnce),
                Just(RunStrategy::Once),
                Just(RunStrategy::Other)
            ],
            any::<bool>()
        )
            .prop_map(|(run_strategy, annotated)| Owner::Found(VmInfo {
                uid: Some("u".into()),
                run_strategy,
                annotated
            })),
    ]
}

const CONTROLLER: &str = "system:serviceaccount:kubevirt:kubevirt-controller";

/// A requester: (username, groups, trusted?). Trusted: KubeVirt's service
/// accounts, and the user and group given as `--trusted-user` /
/// `--trusted-group` in [`policy`].
fn any_user() -> impl Strategy<Value = (String, Vec<String>, bool)> {
    prop_oneof![
        Just((
            "alice".to_owned(),
            vec!["system:authenticated".to_owned()],
            false
        )),
        Just((
            CONTROLLER.to_owned(),
            vec!["system:serviceaccounts".to_owned()],
            true
        )),
        // The same service account name in another namespace is nobody.
        Just((
            "system:serviceaccount:default:kubevirt-controller".to_owned(),
            vec![],
            false
        )),
        Just(("ops-bot".to_owned(), vec![], true)),
        Just(("bob".to_owned(), vec!["kubevirt-admins".to_owned()], true)),
    ]
}

fn policy(mode: Mode, bootonce: BootOnceMode) -> Policy {
    Policy {
        trusted: Trusted::new("kubevirt", &["ops-bot".into()], &["kubevirt-admins".into()]),
        mode,
        bootonce,
    }
}

fn request(obj: Value, user: &str) -> AdmissionRequest {
    request_by(obj, user, vec![])
}

fn request_by(obj: Value, user: &str, groups: Vec<String>) -> AdmissionRequest {
    AdmissionRequest {
        uid: "p".into(),
        kind: Gvk {
            group: "kubevirt.io".into(),
            version: "v1".into(),
            kind: "VirtualMachineInstance".into(),
        },
        sub_resource: None,
        name: "v".into(),
        namespace: Some("ns".into()),
        operation: Operation::Create,
        user_info: UserInfo {
            username: Some(user.into()),
            groups,
        },
        object: Some(obj),
        old_object: None,
        dry_run: false,
    }
}

/// What the mutation must do for `owner`, written from the contract: the
/// expected object and the number of patch operations (the fewest).
fn expected_mutation(vmi: &Value, owner: &Owner, bootonce: BootOnceMode) -> Option<(Value, usize)> {
    let mut want = vmi.clone();
    let annotation = vmi["metadata"]
        .get("annotations")
        .and_then(|a| a.get(BOOTONCE_ANNOTATION));
    match owner {
        Owner::Unavailable(_) => None,
        Owner::None | Owner::NotFound => Some((want, 0)),
        Owner::Found(vm) if vm.is_bootonce(bootonce) => {
            let mut ops = 0;
            if annotation != Some(&json!("BootOnce")) {
                ops += 1;
                let meta = want["metadata"].as_object_mut().unwrap();
                let map = meta.entry("annotations").or_insert_with(|| json!({}));
                map[BOOTONCE_ANNOTATION] = json!("BootOnce");
            }
            // Present means not filled; null is absent (the API server
            // prunes it).
            if vmi["spec"]["domain"]
                .get("rebootPolicy")
                .is_none_or(Value::is_null)
            {
                ops += 1;
                want["spec"]["domain"]["rebootPolicy"] = json!("Terminate");
            }
            Some((want, ops))
        }
        Owner::Found(_) => {
            if annotation.is_none() {
                return Some((want, 0));
            }
            want["metadata"]["annotations"]
                .as_object_mut()
                .unwrap()
                .remove(BOOTONCE_ANNOTATION);
            Some((want, 1))
        }
    }
}

const GATE_NAMES: &str = "RecreateVMIOnReboot (upstream KubeVirt: RebootPolicy)";

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutation_is_exact_clean_idempotent_and_valid(
        vmi in any_vmi(),
        owner in any_owner(),
        compat in any::<bool>(),
        gate in any::<bool>(),
        (user, groups, _) in any_user(),
        warn in any::<bool>(),
    ) {
        let bootonce = if compat { BootOnceMode::Compat } else { BootOnceMode::Native };
        let mode = if warn { Mode::Warn } else { Mode::Enforce };
        let policy = policy(mode, bootonce);
        let ctx = Context { policy: &policy, gate };
        let m = decide(Endpoint::Mutate, &request_by(vmi.clone(), &user, groups.clone()), ctx, &owner);

        // The owner case alone decides the patch: not the gate, the
        // requester or the mode.
        let Some((want, ops)) = expected_mutation(&vmi, &owner, bootonce) else {
            // Unreadable owner: a "retry" denial, in warn mode too, and no patch.
            prop_assert!(!m.allowed(), "unreadable owner must deny: {:?}", m);
            prop_assert!(m.patch.is_empty());
            prop_assert_eq!(m.causes.len(), 1);
            prop_assert_eq!(m.causes[0].field.as_str(), "metadata.ownerReferences");
            prop_assert_eq!(
                m.causes[0].message.as_str(),
                "the owner VirtualMachine could not be read (connection refused), so it is unknown whether this VMI must carry runstrategy.kubevirt.io: BootOnce; retry the request"
            );
            return Ok(());
        };
        prop_assert!(m.allowed());
        prop_assert!(m.warnings.is_empty(), "{:?}", m.warnings);
        prop_assert_eq!(m.patch.len(), ops, "patch {:?}", m.patch);
        let mut once = vmi.clone();
        json_patch::patch(&mut once, &m.patch).map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;
        prop_assert_eq!(&once, &want);

        // Reinvocation on the patched object: nothing more.
        let controller = CONTROLLER;
        let again = decide(Endpoint::Mutate, &request(once.clone(), controller), ctx, &owner);
        prop_assert!(again.patch.is_empty(), "reinvocation patched {:?}", again.patch);

        // Applying the same add-only patch twice gives the same object.
        if m.patch.iter().all(|op| matches!(op, json_patch::PatchOperation::Add(_))) {
            let mut twice = once.clone();
            json_patch::patch(&mut twice, &m.patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&twice, &once);
        }

        // With the gate on, in enforce mode, the patched VMI validates for
        // the controller that creates it, unless its rebootPolicy is invalid
        // or it combines the annotation with Reboot (denials by design).
        let enforce = policy_enforce(bootonce);
        let on = Context { policy: &enforce, gate: true };
        let annotation = once["metadata"].get("annotations").and_then(|a| a.get(BOOTONCE_ANNOTATION)).cloned();
        // Null is absent (the API server prunes it).
        let rp = once["spec"]["domain"].get("rebootPolicy").filter(|v| !v.is_null());
        let rp_valid = rp.is_none_or(|v| v == "Reboot" || v == "Terminate");
        let reboot = rp == Some(&json!("Reboot"));
        let v = decide(Endpoint::Validate, &request(once.clone(), controller), on, &owner);
        let expected_denial = !rp_valid || (annotation.is_some() && (reboot || annotation != Some(json!("BootOnce"))));
        prop_assert_eq!(v.allowed(), !expected_denial, "causes: {:?}", v.causes);

        // And for an ordinary user, when the webhook itself decided the annotation.
        if matches!(&owner, Owner::Found(_)) && !reboot && rp_valid {
            let v = decide(Endpoint::Validate, &request(once, "alice"), on, &owner);
            prop_assert!(v.allowed(), "causes: {:?}", v.causes);
        }
    }

    /// Validation rules 1 and 2 on a VMI CREATE (no annotation, so no other
    /// rule applies): exactly these causes and warnings, whole texts.
    #[test]
    fn reboot_policy_rules_give_exact_causes_and_warnings(
        rp in any_reboot_policy(),
        gate in any::<bool>(),
        (user, groups, trusted) in any_user(),
        warn in any::<bool>(),
    ) {
        let mode = if warn { Mode::Warn } else { Mode::Enforce };
        let policy = policy(mode, BootOnceMode::Native);
        let ctx = Context { policy: &policy, gate };
        let vmi = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "v", "namespace": "ns"},
            "spec": {"domain": {"rebootPolicy": rp.clone()}}
        });
        let v = decide(Endpoint::Validate, &request_by(vmi, &user, groups), ctx, &Owner::None);
        let field = "spec.domain.rebootPolicy";
        let mut causes: Vec<(CauseReason, String)> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        // Null is absent (the API server prunes it): no rule applies.
        let present = !rp.is_null();
        if present && !(rp == "Reboot" || rp == "Terminate") {
            causes.push((
                CauseReason::FieldValueNotSupported,
                format!("Unsupported value: {rp}: supported values: \"Reboot\", \"Terminate\""),
            ));
        }
        if present && !gate && trusted {
            warnings.push(format!(
                "{field}: rebootPolicy was admitted for a trusted KubeVirt requester although the feature gate {GATE_NAMES} is disabled"
            ));
        }
        if present && !gate && !trusted {
            causes.push((
                CauseReason::FieldValueInvalid,
                format!(
                    "Invalid value: {rp}: rebootPolicy requires the feature gate RecreateVMIOnReboot; enable \"RecreateVMIOnReboot\" (or its upstream name \"RebootPolicy\") in the KubeVirt resource's spec.configuration.developerConfiguration.featureGates, or remove the field"
                ),
            ));
        }
        if warn {
            warnings.extend(causes.drain(..).map(|(_, m)| format!("would be denied (warn mode): {field}: {m}")));
        }
        let got: Vec<(CauseReason, String)> = v.causes.iter().map(|c| {
            assert_eq!(c.field, field);
            (c.reason, c.message.clone())
        }).collect();
        prop_assert_eq!(got, causes);
        prop_assert_eq!(&v.warnings, &warnings);
        prop_assert!(v.patch.is_empty());
    }

    #[test]
    fn decode_never_panics_on_mangled_reviews(cut in 0usize..2000, byte in any::<u8>(), pos in 0usize..2000) {
        let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gate-on/08-vmi-create-bootonce-owner.mutate.json")).unwrap();
        let mut body = text[..cut.min(text.len())].to_vec();
        if !body.is_empty() {
            let p = pos % body.len();
            body[p] = byte;
        }
        if let Ok(review) = kubevirt_reboot_webhook::admission::review::decode(&body) {
            let policy = Policy::default();
            let ctx = Context { policy: &policy, gate: true };
            for e in [Endpoint::Validate, Endpoint::Mutate] {
                let v = decide(e, &review.request, ctx, &Owner::Unavailable("x".into()));
                let _ = kubevirt_reboot_webhook::admission::review::encode(&review.api_version,
                    &kubevirt_reboot_webhook::admission::review::response(&review.request.uid, &v));
            }
        }
    }
}

fn policy_enforce(bootonce: BootOnceMode) -> Policy {
    policy(Mode::Enforce, bootonce)
}
