//! BootOnce compat mode end to end through the server: the VM rewrite, then
//! the rewritten VM as the owner of a VMI CREATE.

// A panic here is a failed test; Cargo.toml denies unwrap/expect in product
// code, and clippy.toml's test exemption misses integration-test helpers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{json, Value};
use support::{review, TestServer};

fn apply(obj: &Value, response: &Value) -> Value {
    let mut out = obj.clone();
    if let Some(ops) = support::decoded_patch(response).unwrap() {
        let patch: json_patch::Patch = serde_json::from_value(ops).unwrap();
        json_patch::patch(&mut out, &patch).unwrap();
    }
    out
}

fn example_vm() -> Value {
    let path = support::examples().join("bootonce-vm.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A server in compat mode, gate on, with the VirtualMachines in `objects`.
async fn compat_server(objects: &std::path::Path) -> TestServer {
    let objects = objects.to_str().unwrap();
    let flags = [
        "--bootonce",
        "compat",
        "--feature-gates",
        "RebootPolicy",
        "--objects",
        objects,
    ];
    TestServer::start(&flags).await
}

#[tokio::test]
async fn bootonce_vm_is_stored_as_once_terminate_annotation_and_its_vmis_are_stamped() {
    let empty = tempfile::tempdir().unwrap();
    let server = compat_server(empty.path()).await;

    // 1. The user's manifest, as a CREATE.
    let vm = example_vm();
    let (status, m) = server
        .post("/mutate", &review("VirtualMachine", "CREATE", &vm, None))
        .await;
    assert_eq!(status, 200);
    assert_eq!(m["response"]["allowed"], true, "{m}");
    let stored = apply(&vm, &m["response"]);
    assert_eq!(stored["spec"]["runStrategy"], "Once");
    assert_eq!(
        stored["metadata"]["annotations"]["runstrategy.kubevirt.io"],
        "BootOnce"
    );
    assert_eq!(
        stored["spec"]["template"]["metadata"]["annotations"]["runstrategy.kubevirt.io"],
        "BootOnce"
    );
    assert_eq!(
        stored["spec"]["template"]["spec"]["domain"]["rebootPolicy"],
        "Terminate"
    );
    assert_eq!(
        stored["spec"]["template"]["spec"]["domain"]["devices"],
        vm["spec"]["template"]["spec"]["domain"]["devices"]
    );
    let (_, v) = server
        .post(
            "/validate",
            &review("VirtualMachine", "CREATE", &stored, None),
        )
        .await;
    assert_eq!(v["response"]["allowed"], true, "{v}");

    // 2. Re-applying the original manifest gives the same stored object.
    let mut reapplied = stored.clone();
    reapplied["spec"]["runStrategy"] = json!("BootOnce");
    let (_, m2) = server
        .post(
            "/mutate",
            &review("VirtualMachine", "UPDATE", &reapplied, Some(&stored)),
        )
        .await;
    assert_eq!(apply(&reapplied, &m2["response"]), stored);
    server.stop().await;

    // 3. The stored VM as the owner of a VMI CREATE (a second server reads it from --objects).
    let objects = tempfile::tempdir().unwrap();
    std::fs::write(objects.path().join("vm.json"), stored.to_string()).unwrap();
    let server = compat_server(objects.path()).await;
    let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "installer", "namespace": "default",
            "annotations": stored["spec"]["template"]["metadata"]["annotations"],
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "installer",
                "uid": stored["metadata"]["uid"], "controller": true}]},
        "spec": stored["spec"]["template"]["spec"]});
    let mut bare = vmi.clone();
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    bare["spec"]["domain"]
        .as_object_mut()
        .unwrap()
        .remove("rebootPolicy");
    for (name, obj) in [("inherited from the template", &vmi), ("bare", &bare)] {
        let (_, m) = server
            .post(
                "/mutate",
                &review("VirtualMachineInstance", "CREATE", obj, None),
            )
            .await;
        let stamped = apply(obj, &m["response"]);
        assert_eq!(
            stamped["metadata"]["annotations"]["runstrategy.kubevirt.io"], "BootOnce",
            "{name}"
        );
        assert_eq!(
            stamped["spec"]["domain"]["rebootPolicy"], "Terminate",
            "{name}"
        );
        let (_, v) = server
            .post(
                "/validate",
                &review("VirtualMachineInstance", "CREATE", &stamped, None),
            )
            .await;
        assert_eq!(v["response"]["allowed"], true, "{name}: {v}");
    }
    server.stop().await;
}

#[test]
fn check_shows_the_compat_rewrite() {
    let vm = support::examples().join("bootonce-vm.yaml");
    let out = support::bin_command()
        .args(["check", "--bootonce", "compat"])
        .arg(&vm)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(r#"{"op":"add","path":"/spec/runStrategy","value":"Once"}"#),
        "{text}"
    );
    assert!(
        text.contains(r#""path":"/spec/template/spec/domain/rebootPolicy","value":"Terminate""#),
        "{text}"
    );
    // Native mode shows no rewrite.
    let out = support::bin_command()
        .arg("check")
        .arg(&vm)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("patch"));
}

/// A server in `mode` (native or compat), gate on, VMs from `objects`.
async fn server_in(mode: &str, objects: &std::path::Path) -> TestServer {
    let objects = objects.to_str().unwrap();
    let flags = [
        "--bootonce",
        mode,
        "--feature-gates",
        "RecreateVMIOnReboot",
        "--objects",
        objects,
    ];
    TestServer::start(&flags).await
}

/// Whether the server, with `vm` as the only VirtualMachine it knows,
/// stamps the VMI virt-controller creates for it.
async fn stamps_its_vmi(mode: &str, vm: &Value) -> bool {
    let objects = tempfile::tempdir().unwrap();
    std::fs::write(objects.path().join("vm.json"), vm.to_string()).unwrap();
    let server = server_in(mode, objects.path()).await;
    let vmi = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": "installer", "namespace": "default",
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "name": "installer", "uid": vm["metadata"]["uid"], "controller": true}]},
        "spec": {"domain": {"devices": {}}}});
    let mut create = review("VirtualMachineInstance", "CREATE", &vmi, None);
    create["request"]["userInfo"]["username"] = support::CONTROLLER.into();
    let (status, m) = server.post("/mutate", &create).await;
    server.stop().await;
    assert_eq!(
        (status, &m["response"]["allowed"]),
        (200, &json!(true)),
        "{m}"
    );
    let stamped = apply(&vmi, &m["response"]);
    stamped["metadata"]["annotations"]["runstrategy.kubevirt.io"] == "BootOnce"
}

/// The user's UPDATE of `old` to `new` through `mode`'s webhooks, as the API
/// server runs them: mutation, then validation of the patched object; the
/// object stored.
async fn update(mode: &str, old: &Value, new: &Value) -> Value {
    let empty = tempfile::tempdir().unwrap();
    let server = server_in(mode, empty.path()).await;
    let (_, m) = server
        .post(
            "/mutate",
            &review("VirtualMachine", "UPDATE", new, Some(old)),
        )
        .await;
    assert_eq!(m["response"]["allowed"], true, "{mode}: {m}");
    let stored = apply(new, &m["response"]);
    let (_, v) = server
        .post(
            "/validate",
            &review("VirtualMachine", "UPDATE", &stored, Some(old)),
        )
        .await;
    server.stop().await;
    assert_eq!(v["response"]["allowed"], true, "{mode}: {v}");
    stored
}

/// README, "Moving between compat and native mode": a VM stored in compat
/// form (Once + the annotation) is BootOnce only in compat mode; after the
/// switch to native, its VMIs are not stamped until it is changed to
/// `runStrategy: BootOnce` (the documented patch, or re-applying the
/// manifest, which keeps the annotations), which a plain user may do. Back
/// to compat, natively stored BootOnce VMs stay BootOnce and any update
/// stores them in compat form again.
#[tokio::test]
async fn moving_between_compat_and_native_mode() {
    let mut vm = example_vm();
    vm["metadata"]["uid"] = json!("6b1c0c9e-8f43-4c39-9d1a-6a0e3c6a1b01");
    let empty = tempfile::tempdir().unwrap();
    let server = server_in("compat", empty.path()).await;
    let (_, m) = server
        .post("/mutate", &review("VirtualMachine", "CREATE", &vm, None))
        .await;
    server.stop().await;
    let compat = apply(&vm, &m["response"]);
    assert_eq!(compat["spec"]["runStrategy"], "Once");
    assert!(stamps_its_vmi("compat", &compat).await);

    // Switched to native: the compat form is a plain Once VM.
    assert!(!stamps_its_vmi("native", &compat).await);
    // The documented patch: runStrategy BootOnce, both annotations removed.
    let mut patched = compat.clone();
    patched["spec"]["runStrategy"] = json!("BootOnce");
    for meta in [
        "/metadata/annotations",
        "/spec/template/metadata/annotations",
    ] {
        patched
            .pointer_mut(meta)
            .and_then(Value::as_object_mut)
            .unwrap()
            .remove("runstrategy.kubevirt.io");
    }
    let native = update("native", &compat, &patched).await;
    assert_eq!(native, patched, "native mode stores it as sent");
    assert!(stamps_its_vmi("native", &native).await);
    // Re-applying the manifest instead: runStrategy BootOnce, the
    // annotations the compat rewrite added kept; BootOnce as well.
    let mut reapplied = compat.clone();
    reapplied["spec"]["runStrategy"] = json!("BootOnce");
    let kept = update("native", &compat, &reapplied).await;
    assert!(stamps_its_vmi("native", &kept).await);

    // Back to compat: the natively stored VM is still BootOnce, and any
    // update (here a label) stores it in compat form again.
    assert!(stamps_its_vmi("compat", &native).await);
    let mut labelled = native.clone();
    labelled["metadata"]["labels"] = json!({"migrated": "compat"});
    let again = update("compat", &native, &labelled).await;
    assert_eq!(again["spec"]["runStrategy"], "Once");
    assert_eq!(
        again["metadata"]["annotations"]["runstrategy.kubevirt.io"],
        "BootOnce"
    );
    assert_eq!(
        again["spec"]["template"]["metadata"]["annotations"]["runstrategy.kubevirt.io"],
        "BootOnce"
    );
    assert!(stamps_its_vmi("compat", &again).await);
}
