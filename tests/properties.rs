//! Properties of the mutation over generated VMIs and owners: the patch
//! applies cleanly, reinvocation adds nothing, applying it twice changes
//! nothing more, and the patched VMI passes validation.

use kubevirt_reboot_webhook::admission::review::{AdmissionRequest, Gvk, Operation, UserInfo};
use kubevirt_reboot_webhook::admission::{
    decide, BootOnceMode, Context, Endpoint, Mode, Owner, Policy, RunStrategy, Trusted, VmInfo,
    BOOTONCE_ANNOTATION,
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

fn any_vmi() -> impl Strategy<Value = Value> {
    (
        any_annotations(),
        proptest::option::of(prop_oneof![Just("Reboot"), Just("Terminate")]),
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
        Just(Owner::Gone),
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

fn request(obj: Value, user: &str) -> AdmissionRequest {
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
            groups: vec![],
        },
        object: Some(obj),
        old_object: None,
        dry_run: false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn mutation_is_clean_idempotent_and_valid(vmi in any_vmi(), owner in any_owner(), compat in any::<bool>()) {
        let policy = Policy {
            trusted: Trusted::new("kubevirt", &[], &[]),
            mode: Mode::Enforce,
            bootonce: if compat { BootOnceMode::Compat } else { BootOnceMode::Native },
        };
        let ctx = Context { policy: &policy, gate: true };
        let controller = "system:serviceaccount:kubevirt:kubevirt-controller";
        let m = decide(Endpoint::Mutate, &request(vmi.clone(), controller), ctx, &owner);
        prop_assert!(m.allowed());

        let mut once = vmi.clone();
        json_patch::patch(&mut once, &m.patch).map_err(|e| TestCaseError::fail(format!("patch does not apply: {e}")))?;

        // Reinvocation on the patched object: nothing more.
        let again = decide(Endpoint::Mutate, &request(once.clone(), controller), ctx, &owner);
        prop_assert!(again.patch.is_empty(), "reinvocation patched {:?}", again.patch);

        // Applying the same add-only patch twice gives the same object.
        if m.patch.iter().all(|op| matches!(op, json_patch::PatchOperation::Add(_))) {
            let mut twice = once.clone();
            json_patch::patch(&mut twice, &m.patch).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&twice, &once);
        }

        let bootonce_owner = matches!(&owner, Owner::Found(vm) if vm.is_bootonce(policy.bootonce));
        let annotation = once["metadata"].get("annotations").and_then(|a| a.get(BOOTONCE_ANNOTATION)).cloned();
        let reboot = once["spec"]["domain"].get("rebootPolicy") == Some(&json!("Reboot"));
        if bootonce_owner {
            prop_assert_eq!(annotation.clone(), Some(json!("BootOnce")));
            prop_assert!(once["spec"]["domain"].get("rebootPolicy").is_some());
        }
        if matches!(&owner, Owner::Found(_)) && !bootonce_owner {
            prop_assert_eq!(annotation.clone(), None);
        }
        // Everything outside the two fields is untouched.
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(a) = v["metadata"].get_mut("annotations").and_then(Value::as_object_mut) {
                a.remove(BOOTONCE_ANNOTATION);
                if a.is_empty() { v["metadata"].as_object_mut().unwrap().remove("annotations"); }
            }
            v["spec"]["domain"].as_object_mut().unwrap().remove("rebootPolicy");
            v
        };
        prop_assert_eq!(strip(&once), strip(&vmi));

        // The patched VMI validates for the controller that creates it, unless
        // it combines the annotation with an explicit Reboot, which is a denial by design.
        let v = decide(Endpoint::Validate, &request(once.clone(), controller), ctx, &owner);
        let expected_denial = annotation.is_some() && (reboot || annotation != Some(json!("BootOnce")));
        prop_assert_eq!(v.allowed(), !expected_denial, "causes: {:?}", v.causes);

        // And for an ordinary user, when the webhook itself decided the annotation.
        if matches!(&owner, Owner::Found(_)) && !reboot {
            let v = decide(Endpoint::Validate, &request(once, "alice"), ctx, &owner);
            prop_assert!(v.allowed(), "causes: {:?}", v.causes);
        }
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
